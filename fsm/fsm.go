package fsm

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	memdb "github.com/hashicorp/go-memdb"
	"github.com/hashicorp/raft"
)

// dedupWindow is how long, in command time, a request id keeps its first result. It must cover
// a client's retries after ErrLeadershipLost, which are seconds apart.
const dedupWindow = 15 * time.Minute

// Result is the response of every applied command (raft's ApplyFuture.Response()).
type Result struct {
	// Index is the log index at which the request was first applied; a de-duplicated replay
	// reports the original index. Waiting for it with WaitApplied makes the effect visible.
	Index uint64
	// Err is nil or one of the sentinel errors.
	Err error
}

// FSM is cairn's raft.BatchingFSM over a go-memdb store. Apply, ApplyBatch, Snapshot and Restore
// are called by raft from one goroutine; every other method is safe for concurrent use.
type FSM struct {
	logger *slog.Logger
	db     atomic.Pointer[memdb.MemDB] // replaced wholesale by Restore

	mu       sync.Mutex
	applied  uint64
	advanced chan struct{} // closed and replaced whenever applied changes
}

var _ raft.BatchingFSM = (*FSM)(nil)

// New returns an empty FSM. A nil logger discards logs.
func New(logger *slog.Logger) *FSM {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	f := &FSM{logger: logger, advanced: make(chan struct{})}
	f.db.Store(newDB())
	return f
}

// newDB panics only if the static schema is malformed, which the tests rule out.
func newDB() *memdb.MemDB {
	db, err := memdb.NewMemDB(newSchema())
	if err != nil {
		panic(fmt.Sprintf("fsm: invalid memdb schema: %v", err))
	}
	return db
}

// Apply applies one log entry; it is ApplyBatch of one.
func (f *FSM) Apply(l *raft.Log) any {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies logs in one memdb write transaction. Command entries get a *Result, any other
// entry nil. Each command checks everything before it writes, so a failing command leaves no
// trace in the shared transaction.
func (f *FSM) ApplyBatch(logs []*raft.Log) []any {
	results := make([]any, len(logs))
	if len(logs) == 0 {
		return results
	}
	txn := f.db.Load().Txn(true)
	defer txn.Abort() // no-op after Commit
	m := loadMeta(txn)
	for i, l := range logs {
		if l.Type == raft.LogCommand {
			results[i] = f.applyCommand(txn, &m, l)
		}
	}
	m.AppliedIndex = logs[len(logs)-1].Index
	if err := pruneRequests(txn, m.Clock); err != nil {
		f.logger.Error("prune request ids", "err", err)
	}
	if err := txn.Insert(tableMeta, &m); err != nil {
		f.logger.Error("store applied index", "index", m.AppliedIndex, "err", err)
	}
	txn.Commit()
	// Only now, after Commit, may waiters read the state at this index: a batch's entries are
	// invisible until its transaction commits, so the index advances per batch.
	f.setApplied(m.AppliedIndex)
	return results
}

func (f *FSM) applyCommand(txn *memdb.Txn, m *metaRow, l *raft.Log) *Result {
	cmd, p, err := DecodeCommand(l.Data)
	if err != nil {
		f.logger.Warn("rejected raft entry", "index", l.Index, "err", err)
		return &Result{Index: l.Index, Err: ErrInvalidCommand}
	}
	if cmd.Time.After(m.Clock) {
		m.Clock = cmd.Time
	}
	if r, ok := first[requestRow](txn, tableRequests, "id", cmd.RequestID); ok && !r.Time.Before(m.Clock.Add(-dedupWindow)) {
		return &Result{Index: r.Index, Err: ErrorFromCode(r.Code)}
	}
	err = f.execute(txn, m, cmd, p)
	row := &requestRow{ID: cmd.RequestID, Code: ErrorCode(err), Index: l.Index, Time: m.Clock}
	if ierr := txn.Insert(tableRequests, row); ierr != nil {
		f.logger.Error("record request id", "index", l.Index, "err", ierr)
	}
	return &Result{Index: l.Index, Err: err}
}

// execute returns nil, a sentinel, or (only for an impossible store failure) another error.
func (f *FSM) execute(txn *memdb.Txn, m *metaRow, cmd Command, p any) error {
	if _, ok := p.(*Barrier); ok {
		return nil // valid before and after initCluster
	}
	if p, ok := p.(*InitCluster); ok {
		if m.Config != nil {
			return ErrAlreadyInitialized
		}
		if err := txn.Insert(tableAPIKeys, &p.RootKey); err != nil {
			return fmt.Errorf("store root key: %w", err)
		}
		m.Config = &p.Config
		f.logger.Info("cluster initialized", "cluster", p.Config.ClusterID, "geometry", p.Config.Geometry.String())
		return nil
	}
	if m.Config == nil {
		return ErrNotInitialized
	}
	switch p := p.(type) {
	case *CreateFile:
		return createFile(txn, p)
	case *DeleteFile:
		return deleteFile(txn, p)
	case *CreateToken:
		return createToken(txn, p)
	case *DeleteToken:
		return deleteToken(txn, p, cmd.Time)
	case *CreateAPIKey:
		return insertNewOr(txn, tableAPIKeys, &p.Key, ErrConflict, "id", p.Key.ID, "hash", p.Key.Hash)
	case *RevokeAPIKey:
		return revokeAPIKey(txn, p)
	case *UpdateSettings:
		cfg := m.Config.clone()
		cfg.Settings = p.Settings
		cfg.Settings.DisableForceDownloadForMimeTypes = slices.Clone(p.Settings.DisableForceDownloadForMimeTypes)
		m.Config = &cfg
		return nil
	case *RotateSigningKey:
		cfg := m.Config.clone()
		cfg.SigningKey = slices.Clone(p.Key)
		m.Config = &cfg
		return nil
	case *Expire:
		return expire(txn, p, cmd.Time)
	case *MoveShard:
		return moveShard(txn, p)
	case *RemoveNode:
		cfg := m.Config.clone()
		if !slices.Contains(cfg.RemovedNodes, p.NodeID) {
			cfg.RemovedNodes = append(cfg.RemovedNodes, p.NodeID)
			slices.Sort(cfg.RemovedNodes)
		}
		m.Config = &cfg
		return nil
	}
	return fmt.Errorf("%w: no handler for %T", ErrInvalidCommand, p)
}

func createFile(txn *memdb.Txn, p *CreateFile) error {
	if _, ok := first[File](txn, tableFiles, "id", p.File.ID); ok {
		return ErrConflict
	}
	ids := make(map[string]bool, len(p.Tokens))
	secrets := make(map[string]bool, len(p.Tokens))
	for _, t := range p.Tokens {
		if ids[t.ID] || secrets[t.Secret] || tokenTaken(txn, t) {
			return ErrConflict
		}
		ids[t.ID], secrets[t.Secret] = true, true
	}
	if err := txn.Insert(tableFiles, &p.File); err != nil {
		return fmt.Errorf("store file: %w", err)
	}
	for i := range p.Tokens {
		if err := txn.Insert(tableTokens, &p.Tokens[i]); err != nil {
			return fmt.Errorf("store token: %w", err)
		}
	}
	return nil
}

func deleteFile(txn *memdb.Txn, p *DeleteFile) error {
	file, ok := first[File](txn, tableFiles, "id", p.FileID)
	if !ok {
		return ErrNotFound
	}
	if err := txn.Delete(tableFiles, file); err != nil {
		return fmt.Errorf("delete file: %w", err)
	}
	if _, err := txn.DeleteAll(tableTokens, "file", p.FileID); err != nil {
		return fmt.Errorf("delete tokens: %w", err)
	}
	return nil
}

func createToken(txn *memdb.Txn, p *CreateToken) error {
	if _, ok := first[File](txn, tableFiles, "id", p.Token.FileID); !ok {
		return ErrNotFound
	}
	if tokenTaken(txn, p.Token) {
		return ErrConflict
	}
	if err := txn.Insert(tableTokens, &p.Token); err != nil {
		return fmt.Errorf("store token: %w", err)
	}
	return nil
}

// tokenTaken reports whether t's id or secret is already in use.
func tokenTaken(txn *memdb.Txn, t Token) bool {
	_, idTaken := first[Token](txn, tableTokens, "id", t.ID)
	_, secretTaken := first[Token](txn, tableTokens, "secret", HashSecret(t.Secret))
	return idTaken || secretTaken
}

func deleteToken(txn *memdb.Txn, p *DeleteToken, now time.Time) error {
	tok, ok := first[Token](txn, tableTokens, "id", p.TokenID)
	if !ok || tok.FileID != p.FileID {
		return ErrNotFound
	}
	if tok.Access == AccessFull && !tok.Expired(now) && !otherLiveFullToken(txn, tok, now) {
		return ErrLastFullToken
	}
	if err := txn.Delete(tableTokens, tok); err != nil {
		return fmt.Errorf("delete token: %w", err)
	}
	return nil
}

func otherLiveFullToken(txn *memdb.Txn, tok *Token, now time.Time) bool {
	it, err := txn.Get(tableTokens, "file", tok.FileID)
	if err != nil {
		return false
	}
	for obj := it.Next(); obj != nil; obj = it.Next() {
		t := obj.(*Token)
		if t.ID != tok.ID && t.Access == AccessFull && !t.Expired(now) {
			return true
		}
	}
	return false
}

// pruneRequests deletes the de-duplication entries that have aged out of the window. They are
// already ignored by lookups, so when this runs does not change any result.
func pruneRequests(txn *memdb.Txn, clock time.Time) error {
	cutoff := clock.Add(-dedupWindow)
	it, err := txn.Get(tableRequests, "time")
	if err != nil {
		return err
	}
	var old []*requestRow
	for obj := it.Next(); obj != nil; obj = it.Next() {
		r := obj.(*requestRow)
		if !r.Time.Before(cutoff) {
			break
		}
		old = append(old, r)
	}
	// Deleting while iterating a write transaction is unsafe in go-memdb, hence two passes.
	for _, r := range old {
		if err := txn.Delete(tableRequests, r); err != nil {
			return err
		}
	}
	return nil
}

// first returns the row stored under index=args. Stored rows are shared with every snapshot and
// must never be modified. A lookup error can only come from a wrong table or index name, which
// the tests cover, so it reads as "absent".
func first[T any](txn *memdb.Txn, table, index string, args ...any) (*T, bool) {
	obj, err := txn.First(table, index, args...)
	if err != nil || obj == nil {
		return nil, false
	}
	return obj.(*T), true
}

// loadMeta returns a copy of the meta row, ready to be modified and re-inserted.
func loadMeta(txn *memdb.Txn) metaRow {
	if m, ok := first[metaRow](txn, tableMeta, "id", metaKey); ok {
		return *m
	}
	return metaRow{Key: metaKey}
}

// AppliedIndex is the index of the last log entry applied or restored.
func (f *FSM) AppliedIndex() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied
}

// WaitApplied blocks until AppliedIndex() >= index or ctx ends, returning ctx's error then.
// Waiters share one channel per advance, so many of them cost no polling.
func (f *FSM) WaitApplied(ctx context.Context, index uint64) error {
	for {
		f.mu.Lock()
		applied, advanced := f.applied, f.advanced
		f.mu.Unlock()
		if applied >= index {
			return nil
		}
		select {
		case <-advanced:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (f *FSM) setApplied(index uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = index
	close(f.advanced)
	f.advanced = make(chan struct{})
}

// insertNewOr is insertNew with a sentinel result for a taken unique value.
func insertNewOr(txn *memdb.Txn, table string, row any, taken error, unique ...string) error {
	for i := 0; i+1 < len(unique); i += 2 {
		if obj, err := txn.First(table, unique[i], unique[i+1]); err != nil || obj != nil {
			return taken
		}
	}
	return txn.Insert(table, row)
}

func revokeAPIKey(txn *memdb.Txn, p *RevokeAPIKey) error {
	key, ok := first[APIKey](txn, tableAPIKeys, "id", p.ID)
	if !ok {
		return ErrNotFound
	}
	if slices.Contains(key.Permissions, PermManageAPIKeys) {
		others := false
		it, err := txn.Get(tableAPIKeys, "id")
		if err != nil {
			return err
		}
		for obj := it.Next(); obj != nil && !others; obj = it.Next() {
			k := obj.(*APIKey)
			others = k.ID != key.ID && slices.Contains(k.Permissions, PermManageAPIKeys)
		}
		if !others {
			return ErrLastAdminKey
		}
	}
	return txn.Delete(tableAPIKeys, key)
}

// expire deletes what is expired at now among the listed ids.
func expire(txn *memdb.Txn, p *Expire, now time.Time) error {
	for _, id := range p.FileIDs {
		if f, ok := first[File](txn, tableFiles, "id", id); ok && f.Expired(now) {
			if err := deleteFile(txn, &DeleteFile{FileID: id}); err != nil {
				return err
			}
		}
	}
	for _, id := range p.TokenIDs {
		if t, ok := first[Token](txn, tableTokens, "id", id); ok && t.Expired(now) {
			if err := txn.Delete(tableTokens, t); err != nil {
				return fmt.Errorf("delete token: %w", err)
			}
		}
	}
	return nil
}

func moveShard(txn *memdb.Txn, p *MoveShard) error {
	f, ok := first[File](txn, tableFiles, "id", p.FileID)
	if !ok {
		return ErrNotFound
	}
	if p.Segment >= len(f.Layout.Segments) || p.Index >= f.Layout.Geometry.Total() {
		return ErrNotFound
	}
	switch f.Layout.Segments[p.Segment].Nodes[p.Index] {
	case p.To:
		return nil // an earlier repair already made this move (e.g. the previous leader's)
	case p.From:
	default:
		return ErrConflict
	}
	moved := f.clone()
	moved.Layout.Segments[p.Segment].Nodes[p.Index] = p.To
	return txn.Insert(tableFiles, &moved)
}
