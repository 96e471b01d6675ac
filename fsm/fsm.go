package fsm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// dedupWindow is how long, in command time, a request id keeps its first result. It must cover
// a client's retries after ErrLeadershipLost, which are seconds apart.
const dedupWindow = 15 * time.Minute

// pruneBatch bounds the de-duplication rows one apply batch deletes, so that a burst of aged rows
// is collected over several batches instead of making one batch slow.
const pruneBatch = 1000

// maxBacklogBytes bounds the entries a failed store holds back for its next attempt (below).
const maxBacklogBytes = 64 << 20

// Result is the response of every applied command (raft's ApplyFuture.Response()).
type Result struct {
	// Index is the log index at which the request was first applied; a de-duplicated replay
	// reports the original index. Waiting for it with WaitApplied makes the effect visible.
	Index uint64
	// Err is nil or one of the sentinel errors.
	Err error
}

// Options configures an FSM.
type Options struct {
	// Logger receives the FSM's logs; nil discards them.
	Logger *slog.Logger
	// NoSync skips the flush of Close. Only for a store that is thrown away afterwards (the
	// scratch FSM of raft.RecoverCluster). Apply never syncs anyway (DESIGN.md, "Applied index
	// and the crash model").
	NoSync bool
	// CacheBytes bounds the store's caches together; 0 means DefaultCacheBytes. A 32nd of it, at
	// most 1 MiB, caches API keys (apiKeyCache), the rest is pebble's block cache. Pebble's cache
	// is made that much larger than the memtables' share of it (memTableReserve).
	CacheBytes int64
}

// FSM is cairn's state machine over an on-disk pebble store (DESIGN.md); raft drives it through
// cluster.RaftFSM. ApplyEntries, Snapshot and Restore are called from raft's one FSM goroutine;
// every other method is safe for concurrent use.
type FSM struct {
	logger *slog.Logger
	dir    string
	noSync bool
	opts   storeOptions
	db     atomic.Pointer[stateDB] // replaced wholesale by Restore
	// retired counts old stores that Restore is closing in the background (Close waits for them).
	retired sync.WaitGroup
	// executed counts the entries applied (not skipped as already applied), for tests and metrics.
	executed atomic.Uint64

	mu       sync.Mutex
	applied  uint64
	advanced chan struct{} // closed and replaced whenever applied changes
	writeErr error         // the last failed commit, until a commit succeeds

	// Only raft's FSM goroutine touches these.
	backlog      []Entry // entries whose commit failed, applied again before the next batch
	backlogBytes int
	halted       bool // the backlog overflowed: nothing is applied until a restart or a Restore
	// pruned is the last de-duplication key pruned from this store (nil after open or Restore):
	// the next prune starts there instead of over the tombstones of the earlier ones.
	pruned []byte
}

// New opens (or creates) the store in dir and returns the FSM at the applied index recorded
// there, the last one flushed (DESIGN.md, "Applied index and the crash model"). A bbolt store of
// format 1 (dir/state.db) is migrated first. A store that cannot be opened is an error naming it.
func New(dir string, opts Options) (*FSM, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	so := storeOptions{cacheBytes: opts.CacheBytes, logger: logger.With("component", "pebble")}
	if so.cacheBytes <= 0 {
		so.cacheBytes = DefaultCacheBytes
	}
	so.keyCacheBytes = int(min(maxKeyCacheBytes, so.cacheBytes/keyCacheShare))
	so.cacheBytes -= int64(so.keyCacheBytes)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state store dir: %w", err)
	}
	current, err := currentGeneration(dir)
	if err != nil {
		return nil, fmt.Errorf("state store dir: %w", err)
	}
	if current == "" {
		if current, err = firstGeneration(dir, so, logger); err != nil {
			return nil, err
		}
	} else if fi, err := os.Stat(filepath.Join(dir, current)); err != nil || !fi.IsDir() {
		if err == nil {
			err = errors.New("not a directory")
		}
		// installGeneration names only a generation that is built and synced, so a name without
		// one is a damaged pointer: taking it would remove the real generation as a leftover
		// and open an empty store in its place.
		return nil, fmt.Errorf("state store dir: %s names %s, which is not a generation (%v): the pointer is damaged; stop the node, move %s aside, and the node rebuilds it from the raft snapshot and log on start", StorePointerFile, current, err, dir)
	}
	if err := removeLeftovers(dir, current); err != nil {
		return nil, fmt.Errorf("state store dir: %w", err)
	}
	h, err := openDB(filepath.Join(dir, current), so)
	if err != nil {
		return nil, err
	}
	f := &FSM{logger: logger, dir: dir, noSync: opts.NoSync, opts: so, advanced: make(chan struct{})}
	f.db.Store(h)
	f.applied = h.committed.Load().AppliedIndex
	return f, nil
}

// firstGeneration builds the first pebble generation of dir: the migrated bbolt store when there
// is one, an empty store otherwise, and makes it current.
func firstGeneration(dir string, so storeOptions, logger *slog.Logger) (string, error) {
	legacy := filepath.Join(dir, LegacyStoreFile)
	fill := func(*pebble.DB) (metaRow, error) { return metaRow{}, nil }
	if _, err := os.Stat(legacy); err == nil {
		logger.Info("migrating the state store from bbolt to pebble", "from", legacy)
		fill = func(db *pebble.DB) (metaRow, error) { return migrateLegacy(legacy, db) }
	}
	name, m, err := buildGeneration(dir, so, fill)
	if err != nil {
		return "", err
	}
	if err := installGeneration(dir, name); err != nil {
		return "", fmt.Errorf("state store dir: %w", err)
	}
	if m.AppliedIndex > 0 {
		logger.Info("migrated the state store", "applied_index", m.AppliedIndex, "files", m.Files, "tokens", m.Tokens)
	}
	return name, nil
}

// Close flushes and closes the store. Raft must have shut down: nothing may apply or restore
// afterwards. Reads after Close find nothing.
func (f *FSM) Close() error {
	err := f.db.Load().close(!f.noSync)
	f.retired.Wait()
	return err
}

// Dir is the directory that holds the store.
func (f *FSM) Dir() string { return f.dir }

// StateErr is the store's failure while it is failing (a failed commit, or a flush or compaction
// pebble could not write), nil otherwise. A failing FSM applies nothing (DESIGN.md, "Failed
// writes"), so its node must report not ready.
func (f *FSM) StateErr() error {
	f.mu.Lock()
	err := f.writeErr
	f.mu.Unlock()
	if err != nil {
		return err
	}
	if err := f.db.Load().err(); err != nil {
		return fmt.Errorf("%w: %v", ErrStateUnavailable, err)
	}
	return nil
}

// ExecutedEntries counts the log entries this FSM applied since it was opened, not counting
// those it skipped as already applied before a restart.
func (f *FSM) ExecutedEntries() uint64 { return f.executed.Load() }

// Entry is one committed log entry as the FSM sees it. cluster.RaftFSM translates raft's entries,
// so that neither this package's API nor its readers (core) depend on raft.
type Entry struct {
	Index uint64
	// Command is false for the log's own entries (configuration changes, no-ops): they only move
	// the applied index.
	Command bool
	Data    []byte
}

// ApplyEntries applies logs in one pebble batch, together with the applied index.
// Command entries get a *Result, any other entry nil. Each command checks everything before it
// writes, so a failing command leaves no trace in the shared batch.
//
// Entries at or below the store's applied index were applied before a restart and are skipped
// (nil result; nothing waits for them). When the commit fails (a full disk), every command of
// the batch gets ErrStateUnavailable, the applied index stays, and the entries are kept and
// applied again, before the next batch, by the next ApplyEntries: raft never hands an entry over
// twice, and skipping one would make this replica diverge.
func (f *FSM) ApplyEntries(logs []Entry) []any {
	results := make([]any, len(logs))
	if len(logs) == 0 {
		return results
	}
	if f.halted {
		return failedResults(results, logs)
	}
	batch := logs
	if len(f.backlog) > 0 {
		batch = append(slices.Clip(f.backlog), logs...)
	}
	applied, err := f.applyLogs(batch)
	if err != nil {
		f.failed(err)
		for _, l := range logs {
			f.backlogBytes += len(l.Data)
		}
		f.backlog = batch
		if f.backlogBytes > maxBacklogBytes {
			f.logger.Error("state store keeps failing: stopped applying until the node restarts", "held_back_entries", len(batch))
			f.halted, f.backlog, f.backlogBytes = true, nil, 0
		}
		return failedResults(results, logs)
	}
	f.backlog, f.backlogBytes = nil, 0
	copy(results, applied[len(batch)-len(logs):])
	return results
}

func failedResults(results []any, logs []Entry) []any {
	for i, l := range logs {
		if l.Command {
			results[i] = &Result{Index: l.Index, Err: ErrStateUnavailable}
		}
	}
	return results
}

// applyLogs runs logs in one indexed batch (later commands read what earlier ones wrote) and
// commits it to the memtable, without WAL or sync; only then does the applied index move. An error
// means nothing of the batch was stored. While pebble cannot flush, nothing is added to memtables
// that could not be flushed (it would end in a write stall of this goroutine): the batch fails.
func (f *FSM) applyLogs(logs []Entry) ([]any, error) {
	h := f.db.Load()
	if err := h.flushFailure(); err != nil {
		return nil, fmt.Errorf("state store cannot flush: %w", err)
	}
	b := h.db.NewIndexedBatch()
	defer func() { _ = b.Close() }()
	s := batchStore(b)
	m := *h.committed.Load() // a copy: only a committed batch replaces it
	results := make([]any, len(logs))
	last, executed := m.AppliedIndex, 0
	for i, l := range logs {
		if l.Index <= m.AppliedIndex {
			continue
		}
		if l.Command {
			results[i] = f.applyCommand(s, &m, l)
		}
		last = l.Index
		executed++
	}
	if executed == 0 {
		return results, nil
	}
	m.AppliedIndex = last
	pruned, err := s.pruneRequests(m.Clock.Add(-dedupWindow), pruneBatch, f.pruned)
	if err != nil {
		f.logger.Error("prune request ids", "err", err)
	}
	if err := s.putMeta(&m); err != nil {
		return nil, fmt.Errorf("store applied index %d: %w", last, err)
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return nil, fmt.Errorf("commit entries up to %d: %w", last, err)
	}
	if m.keysChanged {
		m.keysChanged = false
		h.keys.invalidate()
	}
	h.committed.Store(&m)
	f.pruned = pruned
	f.executed.Add(uint64(executed))
	// Only now, after Commit, may waiters read the state at this index: a batch's entries are
	// invisible until it commits, so the index advances per batch.
	f.setApplied(last)
	return results, nil
}

func (f *FSM) failed(err error) {
	f.logger.Error("state store commit failed; entries held back, node not ready", "err", err)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writeErr = fmt.Errorf("%w: %v", ErrStateUnavailable, err)
}

func (f *FSM) applyCommand(s store, m *metaRow, l Entry) *Result {
	cmd, p, err := DecodeCommand(l.Data)
	if err != nil {
		f.logger.Warn("rejected raft entry", "index", l.Index, "err", err)
		return &Result{Index: l.Index, Err: ErrInvalidCommand}
	}
	if cmd.Time.After(m.Clock) {
		m.Clock = cmd.Time
	}
	r, seen, err := s.request(cmd.RequestID)
	if err != nil {
		f.logger.Error("read request id", "index", l.Index, "err", err)
	}
	if seen && !r.Time.Before(m.Clock.Add(-dedupWindow)) {
		return &Result{Index: r.Index, Err: ErrorFromCode(r.Code)}
	}
	err = f.execute(s, m, cmd, p)
	row := &requestRow{ID: cmd.RequestID, Code: ErrorCode(err), Index: l.Index, Time: m.Clock}
	if !seen {
		r = nil
	}
	if ierr := s.replaceRequest(r, row); ierr != nil {
		f.logger.Error("record request id", "index", l.Index, "err", ierr)
	}
	return &Result{Index: l.Index, Err: err}
}

// execute returns nil, a sentinel, or (only for an impossible store failure) another error.
func (f *FSM) execute(s store, m *metaRow, cmd Command, p any) error {
	if _, ok := p.(*Barrier); ok {
		return nil // valid before and after initCluster
	}
	if p, ok := p.(*InitCluster); ok {
		if m.Config != nil {
			return ErrAlreadyInitialized
		}
		if err := s.putAPIKey(&p.RootKey); err != nil {
			return fmt.Errorf("store root key: %w", err)
		}
		m.Config, m.configChanged, m.keysChanged = &p.Config, true, true
		f.logger.Info("cluster initialized", "cluster", p.Config.ClusterID, "geometry", p.Config.Geometry.String())
		return nil
	}
	if m.Config == nil {
		return ErrNotInitialized
	}
	switch p := p.(type) {
	case *CreateFile:
		return createFile(s, m, p)
	case *DeleteFile:
		return deleteFile(s, m, p.FileID)
	case *CreateToken:
		return createToken(s, m, p, cmd.Time)
	case *DeleteToken:
		return deleteToken(s, m, p, cmd.Time)
	case *CreateAPIKey:
		if s.apiKeyTaken(p.Key) {
			return ErrConflict
		}
		m.keysChanged = true
		return s.putAPIKey(&p.Key)
	case *RevokeAPIKey:
		m.keysChanged = true
		return revokeAPIKey(s, p)
	case *UpdateSettings:
		cfg := m.Config.clone()
		cfg.Settings = p.Settings
		cfg.Settings.DisableForceDownloadForMimeTypes = slices.Clone(p.Settings.DisableForceDownloadForMimeTypes)
		m.Config, m.configChanged = &cfg, true
		return nil
	case *RotateSigningKey:
		cfg := m.Config.clone()
		cfg.SigningKey = slices.Clone(p.Key)
		m.Config, m.configChanged = &cfg, true
		return nil
	case *Expire:
		return expire(s, m, p, cmd.Time)
	case *MoveShard:
		return moveShard(s, p)
	case *RemoveNode:
		cfg := m.Config.clone()
		if !slices.Contains(cfg.RemovedNodes, p.NodeID) {
			cfg.RemovedNodes = append(cfg.RemovedNodes, p.NodeID)
			slices.Sort(cfg.RemovedNodes)
		}
		m.Config, m.configChanged = &cfg, true
		return nil
	}
	return fmt.Errorf("%w: no handler for %T", ErrInvalidCommand, p)
}

func createFile(s store, m *metaRow, p *CreateFile) error {
	if s.has(tableFiles, []byte(p.File.ID)) {
		return ErrConflict
	}
	ids := make(map[string]bool, len(p.Tokens))
	secrets := make(map[string]bool, len(p.Tokens))
	for _, t := range p.Tokens {
		if ids[t.ID] || secrets[t.Secret] || s.tokenTaken(t) {
			return ErrConflict
		}
		ids[t.ID], secrets[t.Secret] = true, true
	}
	if err := s.putFile(&p.File); err != nil {
		return fmt.Errorf("store file: %w", err)
	}
	for i := range p.Tokens {
		if err := s.putToken(&p.Tokens[i]); err != nil {
			return fmt.Errorf("store token: %w", err)
		}
	}
	m.Files++
	m.Tokens += uint64(len(p.Tokens))
	return nil
}

func deleteFile(s store, m *metaRow, id string) error {
	file, err := found(s.file(id))
	if err != nil {
		return err
	}
	toks, err := s.fileTokens(id)
	if err != nil {
		return err
	}
	if err := s.deleteFileRow(file); err != nil {
		return fmt.Errorf("delete file: %w", err)
	}
	for i := range toks {
		if err := s.deleteTokenRow(&toks[i]); err != nil {
			return fmt.Errorf("delete tokens: %w", err)
		}
	}
	m.Files--
	m.Tokens -= uint64(len(toks))
	return nil
}

// found turns a row lookup into the row or an error: the read error, or ErrNotFound.
func found[T any](v *T, ok bool, err error) (*T, error) {
	switch {
	case err != nil:
		return nil, err
	case !ok:
		return nil, ErrNotFound
	}
	return v, nil
}

func createToken(s store, m *metaRow, p *CreateToken, now time.Time) error {
	if p.Authority == nil {
		if !s.has(tableFiles, []byte(p.Token.FileID)) {
			return ErrNotFound
		}
	} else if err := checkTokenAuthority(s, p, now); err != nil {
		return err
	}
	if s.tokenTaken(p.Token) {
		return ErrConflict
	}
	if err := s.putToken(&p.Token); err != nil {
		return fmt.Errorf("store token: %w", err)
	}
	m.Tokens++
	return nil
}

// checkTokenAuthority is what the proposer's read index used to decide, decided at the entry's
// place in the log instead: the file is live, and the named API key or full token still entitles
// the creator. A revoked key or a deleted, expired or foreign token is ErrNoAuthority; a file the
// key may not see is ErrNotFound, as a file that does not exist (existence does not leak).
func checkTokenAuthority(s store, p *CreateToken, now time.Time) error {
	file, err := found(s.file(p.Token.FileID))
	if err != nil {
		return err
	}
	if file.Expired(now) {
		return ErrNotFound
	}
	if id := p.Authority.APIKeyID; id != "" {
		if file.CreatorID == id { // its own file: the key's existence is all (no row to decode)
			switch v, err := s.get(tableAPIKeys, []byte(id)); {
			case err != nil: // not has(), which counts a failed read as present
				return err
			case v == nil:
				return ErrNoAuthority
			}
			return nil
		}
		key, ok, err := s.apiKey(id)
		switch {
		case err != nil:
			return err
		case !ok:
			return ErrNoAuthority
		case !slices.Contains(key.Permissions, PermViewFiles):
			return ErrNotFound
		}
		return nil
	}
	tok, ok, err := s.token(p.Authority.TokenID)
	switch {
	case err != nil:
		return err
	case !ok || tok.FileID != file.ID || tok.Access != AccessFull || tok.Expired(now):
		return ErrNoAuthority
	}
	return nil
}

func deleteToken(s store, m *metaRow, p *DeleteToken, now time.Time) error {
	tok, err := found(s.token(p.TokenID))
	if err != nil {
		return err
	}
	if tok.FileID != p.FileID {
		return ErrNotFound
	}
	if tok.Access == AccessFull && !tok.Expired(now) {
		others, err := s.fileTokens(tok.FileID)
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(others, func(t Token) bool {
			return t.ID != tok.ID && t.Access == AccessFull && !t.Expired(now)
		}) {
			return ErrLastFullToken
		}
	}
	if err := s.deleteTokenRow(tok); err != nil {
		return fmt.Errorf("delete token: %w", err)
	}
	m.Tokens--
	return nil
}

func revokeAPIKey(s store, p *RevokeAPIKey) error {
	key, err := found(s.apiKey(p.ID))
	if err != nil {
		return err
	}
	if slices.Contains(key.Permissions, PermManageAPIKeys) {
		others := false
		if err := s.each(tableAPIKeys, nil, func(k, v []byte) (bool, error) {
			if string(k) == key.ID {
				return true, nil
			}
			var other APIKey
			if err := json.Unmarshal(v, &other); err != nil {
				return false, fmt.Errorf("decode api key %q: %w", k, err)
			}
			others = slices.Contains(other.Permissions, PermManageAPIKeys)
			return !others, nil
		}); err != nil {
			return err
		}
		if !others {
			return ErrLastAdminKey
		}
	}
	return s.deleteAPIKey(key)
}

// expire deletes what is expired at now among the listed ids.
func expire(s store, m *metaRow, p *Expire, now time.Time) error {
	for _, id := range p.FileIDs {
		f, ok, err := s.file(id)
		if err != nil {
			return err
		}
		if ok && f.Expired(now) {
			if err := deleteFile(s, m, id); err != nil {
				return err
			}
		}
	}
	for _, id := range p.TokenIDs {
		t, ok, err := s.token(id)
		if err != nil {
			return err
		}
		if ok && t.Expired(now) {
			if err := s.deleteTokenRow(t); err != nil {
				return fmt.Errorf("delete token: %w", err)
			}
			m.Tokens--
		}
	}
	return nil
}

func moveShard(s store, p *MoveShard) error {
	f, err := found(s.file(p.FileID))
	if err != nil {
		return err
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
	f.Layout.Segments[p.Segment].Nodes[p.Index] = p.To
	return s.putFileRow(f) // the indexed fields did not change
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

// setApplied publishes a committed (or restored) index; the store is healthy again.
func (f *FSM) setApplied(index uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = index
	f.writeErr = nil
	close(f.advanced)
	f.advanced = make(chan struct{})
}
