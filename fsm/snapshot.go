package fsm

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// ErrInvalidSnapshot reports a snapshot stream that Restore refuses: unknown version, unknown
// record, unknown field, inconsistent rows, or a truncated stream.
var ErrInvalidSnapshot = errors.New("fsm: invalid snapshot")

// snapshotReaders maps every snapshot version ever written to its reader; Persist writes
// SnapshotVersion. Version 1 is a header followed by one JSON record per line: the config, then
// API keys, files, tokens (after their files, so Restore can check references in one pass) and
// request ids, each table in id order, and a final end record whose absence marks a truncated
// stream. A new version gets a reader of its own here, and the old readers stay. A reader builds
// the state into db, an empty store.
var snapshotReaders = map[int]func(lines *lineReader, hdr snapshotHeader, db *pebble.DB) (metaRow, error){
	1: readSnapshotV1,
}

type snapshotHeader struct {
	Version      int       `json:"version"`
	AppliedIndex uint64    `json:"appliedIndex"`
	Clock        time.Time `json:"clock"`
}

// Record kinds.
const (
	kindConfig  = "config"
	kindAPIKey  = "apikey"
	kindFile    = "file"
	kindToken   = "token"
	kindRequest = "request"
	kindEnd     = "end"
)

type recordOut struct {
	Kind string `json:"kind"`
	Data any    `json:"data,omitempty"`
}

type recordIn struct {
	Kind string          `json:"kind"`
	Data json.RawMessage `json:"data"`
}

// restoreBatchRows is how many records Restore writes per batch of the new store.
const restoreBatchRows = 20000

// Snapshot takes a pebble snapshot: a consistent view of one applied index that apply does not
// wait for. Write streams it; Release ends it. A failing store has no consistent state to offer
// at raft's applied index, so it refuses (raft retries later and keeps its log).
func (f *FSM) Snapshot() (*Snapshot, error) {
	if err := f.StateErr(); err != nil {
		return nil, fmt.Errorf("no snapshot while the state store is failing: %w", err)
	}
	if f.halted {
		return nil, errors.New("no snapshot: the state store stopped applying after failed commits")
	}
	h := f.db.Load()
	if !h.acquire() {
		return nil, fmt.Errorf("snapshot: %w", errStoreClosed)
	}
	return &Snapshot{h: h, snap: h.db.NewSnapshot()}, nil
}

// Snapshot is a captured view of the state, to be streamed once with Write.
type Snapshot struct {
	h    *stateDB
	snap *pebble.Snapshot
	once sync.Once
}

// Write makes the captured state durable in the store, streams it to w in the newest snapshot
// format, and ends the view: Write is its last use, and raft.RecoverCluster never calls Release
// (an open view keeps the store from closing).
//
// The flush comes first because raft compacts its log up to the snapshot once Persist returns:
// apply writes no WAL, so until the memtables holding those entries are flushed, the log is
// their only durable copy (DESIGN.md, "Applied index and the crash model").
func (s *Snapshot) Write(w io.Writer) error {
	err := s.h.flushDurable()
	if err == nil {
		err = s.write(w)
	}
	s.Release()
	if err != nil {
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return nil
}

// Release ends the view, which lets pebble drop the versions it pinned. It may be called more
// than once (after Write, which ends it too).
func (s *Snapshot) Release() {
	s.once.Do(func() {
		_ = s.snap.Close()
		s.h.release()
	})
}

// write streams the view as version 1 records. API key rows are the records' JSON already and are
// copied as they are; file, token and request rows are decoded and encoded. Request rows that have
// aged out of the de-duplication window are left out: lookups ignore them, and where pruning has
// got to differs between replicas.
func (s *Snapshot) write(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	enc := json.NewEncoder(bw)
	st := store{r: s.snap}
	m, err := st.meta()
	if err != nil {
		return err
	}
	if err := enc.Encode(snapshotHeader{Version: SnapshotVersion, AppliedIndex: m.AppliedIndex, Clock: m.Clock}); err != nil {
		return err
	}
	if m.Config != nil {
		if err := enc.Encode(recordOut{Kind: kindConfig, Data: m.Config}); err != nil {
			return err
		}
	}
	cutoff := m.Clock.Add(-dedupWindow)
	for _, t := range []struct {
		table table
		kind  string
	}{{tableAPIKeys, kindAPIKey}, {tableFiles, kindFile}, {tableTokens, kindToken}, {tableRequests, kindRequest}} {
		prefix := `{"kind":"` + t.kind + `","data":`
		err := st.each(t.table, nil, func(k, v []byte) (bool, error) {
			var row any
			var err error
			switch t.kind {
			case kindFile:
				row, err = decodeFile(v)
			case kindToken:
				row, err = decodeToken(v)
			case kindRequest:
				var r *requestRow
				if r, err = decodeRequest(v); err == nil && r.Time.Before(cutoff) {
					return true, nil
				}
				row = r
			default: // API keys are stored as their JSON
			}
			if err != nil {
				return false, fmt.Errorf("decode %s row %q: %w", t.kind, k, err)
			}
			if row != nil {
				return true, enc.Encode(recordOut{Kind: t.kind, Data: row})
			}
			_, _ = bw.WriteString(prefix)
			_, _ = bw.Write(v)
			_, err = bw.WriteString("}\n")
			return err == nil, err
		})
		if err != nil {
			return err
		}
	}
	if err := enc.Encode(recordOut{Kind: kindEnd}); err != nil {
		return err
	}
	return bw.Flush()
}

// Restore replaces all state with the snapshot's, including the applied index, which raft does
// not tell the FSM. It builds a new store generation beside the current one, makes it current
// (one rename of the STORE file) and swaps it in for readers; on any error the previous state
// stays in place.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	name, m, err := buildGeneration(f.dir, f.opts, func(db *pebble.DB) (metaRow, error) {
		m, err := readSnapshot(rc, db)
		if err != nil {
			return m, fmt.Errorf("%w: %v", ErrInvalidSnapshot, err)
		}
		return m, nil
	})
	if err != nil {
		if !errors.Is(err, ErrInvalidSnapshot) {
			err = fmt.Errorf("restore: %w", err)
		}
		return err
	}
	if err := installGeneration(f.dir, name); err != nil {
		_ = os.RemoveAll(filepath.Join(f.dir, name))
		return fmt.Errorf("restore: install %s: %w", name, err)
	}
	h, err := openDB(filepath.Join(f.dir, name), f.opts)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	old := f.db.Swap(h)
	// The old generation closes once its readers (a snapshot being persisted among them) are
	// done; readers that load the old pointer after this find it closed and retry on the new one.
	f.retired.Go(func() {
		if err := errors.Join(old.close(false), os.RemoveAll(old.path)); err != nil {
			f.logger.Warn("remove the replaced state store", "err", err)
		}
	})
	f.backlog, f.backlogBytes, f.halted, f.pruned = nil, 0, false, nil
	f.setApplied(m.AppliedIndex)
	f.logger.Info("restored snapshot", "index", m.AppliedIndex, "files", m.Files, "tokens", m.Tokens)
	return nil
}

func readSnapshot(r io.Reader, db *pebble.DB) (metaRow, error) {
	lines := &lineReader{r: bufio.NewReaderSize(r, 1<<20)}
	line, err := lines.next()
	if err != nil {
		return metaRow{}, fmt.Errorf("header: %w", err)
	}
	var hdr snapshotHeader
	if err := decodeStrict(line, &hdr); err != nil {
		return metaRow{}, fmt.Errorf("header: %w", err)
	}
	read, ok := snapshotReaders[hdr.Version]
	if !ok {
		return metaRow{}, fmt.Errorf("unsupported version %d", hdr.Version)
	}
	return read(lines, hdr, db)
}

// maxSnapshotLine bounds one line of a snapshot, so that a stream without newlines (a wrong
// file given to a restore, or damage) is refused at a bounded cost in memory instead of being
// read whole. The largest record is a file row, whose layout takes about 100 bytes per segment;
// segments can be as small as 64 bytes (node config), so no small bound is safe. 1 GiB is over
// ten million segments, far beyond what the raft entry that created such a row could carry.
const maxSnapshotLine = 1 << 30

// lineReader reads a stream of one JSON value per line (blank lines are skipped, as a JSON
// stream decoder skips the whitespace between values).
type lineReader struct {
	r       *bufio.Reader
	buf     []byte
	maxLine int // 0: maxSnapshotLine
}

// next returns the next line that is not blank, without its newline, valid until the next call;
// io.EOF once none is left.
func (l *lineReader) next() ([]byte, error) {
	for {
		line, err := l.r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			l.buf = append(l.buf[:0], line...)
			for errors.Is(err, bufio.ErrBufferFull) {
				if limit := cmp.Or(l.maxLine, maxSnapshotLine); len(l.buf) > limit {
					return nil, fmt.Errorf("a line longer than %d bytes: no record is that large", limit)
				}
				line, err = l.r.ReadSlice('\n')
				l.buf = append(l.buf, line...)
			}
			line = l.buf
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		if len(bytes.TrimSpace(line)) > 0 {
			return bytes.TrimSuffix(line, []byte("\n")), nil
		}
		if err != nil {
			return nil, io.EOF
		}
	}
}

// recordPrefixes are the openings of the records as Persist writes them ({"kind":K,"data":...}).
var recordPrefixes = func() map[string][]byte {
	p := map[string][]byte{}
	for _, k := range []string{kindConfig, kindAPIKey, kindFile, kindToken, kindRequest} {
		p[k] = []byte(`{"kind":"` + k + `","data":`)
	}
	return p
}()

var endLine = []byte(`{"kind":"end"}`)

// parseRecord splits a record line into its kind and data. A line in exactly the form Persist
// writes is split without a JSON pass (the data is decoded strictly by its kind's reader, which
// refuses anything but one JSON value, so the line was one JSON object); any other line is
// decoded as a JSON record, strictly.
func parseRecord(line []byte) (recordIn, error) {
	if bytes.Equal(line, endLine) {
		return recordIn{Kind: kindEnd}, nil
	}
	if len(line) > 9 && line[len(line)-1] == '}' {
		kind, _, _ := bytes.Cut(line[len(`{"kind":"`):], []byte(`"`))
		if p, ok := recordPrefixes[string(kind)]; ok && bytes.HasPrefix(line, p) {
			return recordIn{Kind: string(kind), Data: line[len(p) : len(line)-1]}, nil
		}
	}
	var rec recordIn
	err := decodeStrict(line, &rec)
	return rec, err
}

// readSnapshotV1 reads the records of a version 1 stream after its header into db, a fresh
// store, in plain batches of restoreBatchRows records, without reading anything back while it
// loads (DESIGN.md, "Snapshots"). The format gives the records of each kind in id order, and the
// kinds in the order config, API keys, files, tokens, requests; so a duplicate id is an id that
// does not sort after the previous one of its kind, found without a lookup. What order cannot
// show (two tokens with one secret, two API keys with one hash, a token of a missing file) is
// checked once the records are loaded, by sequential scans of the new store (verifyRestored).
func readSnapshotV1(lines *lineReader, hdr snapshotHeader, db *pebble.DB) (metaRow, error) {
	l := &restoreLoad{m: metaRow{AppliedIndex: hdr.AppliedIndex, Clock: hdr.Clock}, kind: -1}
	b := db.NewBatch()
	defer func() { _ = b.Close() }()
	for n := 1; ; n++ {
		line, err := lines.next()
		if errors.Is(err, io.EOF) {
			return l.m, errors.New("truncated: no end record")
		}
		if err != nil {
			return l.m, fmt.Errorf("record %d: %w", n, err)
		}
		rec, err := parseRecord(line)
		if err != nil {
			return l.m, fmt.Errorf("record %d: %w", n, err)
		}
		if rec.Kind == kindEnd && rec.Data == nil {
			break
		}
		if err := l.record(writeStore(b), rec); err != nil {
			return l.m, fmt.Errorf("record %d (%s): %w", n, rec.Kind, err)
		}
		if n%restoreBatchRows == 0 {
			if err := b.Commit(pebble.NoSync); err != nil {
				return l.m, err
			}
			_ = b.Close()
			b = db.NewBatch()
		}
	}
	if _, err := lines.next(); !errors.Is(err, io.EOF) {
		return l.m, errors.New("trailing data after end record")
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return l.m, err
	}
	if err := verifyRestored(db, l); err != nil {
		return l.m, err
	}
	l.m.configChanged = true
	b2 := db.NewBatch()
	defer func() { _ = b2.Close() }()
	if err := writeStore(b2).putMeta(&l.m); err != nil {
		return l.m, err
	}
	return l.m, b2.Commit(pebble.NoSync)
}

// restoreOrder is the order of the record kinds in a version 1 stream.
var restoreOrder = map[string]int{kindConfig: 0, kindAPIKey: 1, kindFile: 2, kindToken: 3, kindRequest: 4}

// restoreLoad is what readSnapshotV1 keeps while it loads: the meta row, the kind and id of the
// previous record, and what verifyRestored checks at the end.
type restoreLoad struct {
	m       metaRow
	kind    int
	lastID  string
	apiKeys uint64
	// nulIDs is set when a file or token id holds a 0x00 byte, which the key of tokens-by-file
	// uses as its separator: verifyRestored then checks references row by row.
	nulIDs bool
}

// next checks that a record of kind k with id follows the previous one in the format's order.
func (l *restoreLoad) next(k string, id string) error {
	o := restoreOrder[k]
	switch {
	case o < l.kind:
		return fmt.Errorf("%s record after the %s records", k, kindNames[l.kind])
	case o == l.kind && id <= l.lastID:
		return fmt.Errorf("duplicate or out of order %s id %q (after %q)", k, id, l.lastID)
	}
	l.kind, l.lastID = o, id
	return nil
}

var kindNames = []string{kindConfig, kindAPIKey, kindFile, kindToken, kindRequest}

// record checks one row as strictly as a command would have, so that a damaged or forged
// snapshot cannot plant state that Apply could never have produced, and writes it to s (a plain
// batch: nothing is read back).
func (l *restoreLoad) record(s store, rec recordIn) error {
	m := &l.m
	switch rec.Kind {
	case kindConfig:
		var c ClusterConfig
		if err := decodeStrict(rec.Data, &c); err != nil {
			return err
		}
		if m.Config != nil {
			return errors.New("second config")
		}
		m.Config = &c
		return l.next(rec.Kind, "")
	case kindAPIKey:
		var k APIKey
		if err := decodeStrict(rec.Data, &k); err != nil {
			return err
		}
		if k.ID == "" || !isSHA256Hex(k.Hash) {
			return errors.New("api key needs id and hex SHA-256 hash")
		}
		if err := l.next(rec.Kind, k.ID); err != nil {
			return err
		}
		l.apiKeys++
		return s.putAPIKey(&k)
	case kindFile:
		var f File
		if err := decodeStrict(rec.Data, &f); err != nil {
			return err
		}
		if f.ID == "" {
			return errors.New("file without id")
		}
		if err := f.Layout.validate(f.Size); err != nil {
			return err
		}
		if err := l.next(rec.Kind, f.ID); err != nil {
			return err
		}
		l.nulIDs = l.nulIDs || strings.IndexByte(f.ID, 0) >= 0
		m.Files++
		return s.putFile(&f)
	case kindToken:
		var t Token
		if err := decodeStrict(rec.Data, &t); err != nil {
			return err
		}
		if err := t.validate(); err != nil {
			return err
		}
		if err := l.next(rec.Kind, t.ID); err != nil {
			return err
		}
		l.nulIDs = l.nulIDs || strings.IndexByte(t.ID, 0) >= 0 || strings.IndexByte(t.FileID, 0) >= 0
		m.Tokens++
		return s.putToken(&t)
	case kindRequest:
		var r requestRow
		if err := decodeStrict(rec.Data, &r); err != nil {
			return err
		}
		if r.ID == "" {
			return errors.New("request without id")
		}
		if err := l.next(rec.Kind, r.ID); err != nil {
			return err
		}
		return s.replaceRequest(nil, &r)
	}
	return fmt.Errorf("unknown record kind %q", rec.Kind)
}

// verifyRestored checks, by scans of the loaded store in key order, what the order of the records
// could not: every token secret and API key hash is used once (a second use would have
// overwritten the first one's index key, so the index holds fewer keys than there are rows), and
// every token's file exists (tokens-by-file and files are both in file id order: one merge).
func verifyRestored(db *pebble.DB, l *restoreLoad) error {
	s := store{r: db}
	count := func(t table) (uint64, error) {
		var n uint64
		err := s.each(t, nil, func(_, _ []byte) (bool, error) { n++; return true, nil })
		return n, err
	}
	secrets, err := count(tableTokenBySecret)
	if err != nil {
		return err
	}
	if secrets != l.m.Tokens {
		return fmt.Errorf("%d tokens share a secret with another", l.m.Tokens-secrets)
	}
	hashes, err := count(tableAPIKeyByHash)
	if err != nil {
		return err
	}
	if hashes != l.apiKeys {
		return fmt.Errorf("%d api keys share a hash with another", l.apiKeys-hashes)
	}
	if l.nulIDs {
		return s.each(tableTokens, nil, func(k, v []byte) (bool, error) {
			t, err := decodeToken(v)
			if err != nil {
				return false, err
			}
			if !s.has(tableFiles, []byte(t.FileID)) {
				return false, fmt.Errorf("token %s of unknown file %s", k, t.FileID)
			}
			return true, nil
		})
	}
	files, err := db.NewIter(tableFiles.bounds(nil))
	if err != nil {
		return err
	}
	var last []byte
	err = s.each(tableTokensByFile, nil, func(k, _ []byte) (bool, error) {
		fileID := k[:bytes.IndexByte(k, 0)] // no id holds a 0x00 (nulIDs)
		if last != nil && bytes.Equal(fileID, last) {
			return true, nil
		}
		last = append(last[:0], fileID...)
		key := tableFiles.key(fileID)
		if !files.SeekGE(key) || !bytes.Equal(files.Key(), key) {
			return false, errors.Join(files.Error(), fmt.Errorf("token %s of unknown file %s", k[len(fileID)+1:], fileID))
		}
		return true, nil
	})
	return errors.Join(err, files.Close())
}
