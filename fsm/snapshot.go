package fsm

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	memdb "github.com/hashicorp/go-memdb"
	"github.com/hashicorp/raft"
)

// ErrInvalidSnapshot reports a snapshot stream that Restore refuses: unknown version, unknown
// record, unknown field, inconsistent rows, or a truncated stream.
var ErrInvalidSnapshot = errors.New("fsm: invalid snapshot")

// snapshotReaders maps every snapshot version ever written to its reader; Persist writes
// SnapshotVersion. Version 1 is a header followed by one JSON record per line: the config, then
// API keys, files, tokens (after their files, so Restore can check references in one pass) and
// request ids, each table in id order, and a final end record whose absence marks a truncated
// stream. A new version gets a reader of its own here, and the old readers stay.
var snapshotReaders = map[int]func(dec *json.Decoder, hdr snapshotHeader) (*memdb.MemDB, uint64, error){
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

// Snapshot captures the state in O(1): a memdb read transaction is an immutable view, so all the
// I/O happens in Persist while Apply goes on.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	return &snapshot{txn: f.read()}, nil
}

type snapshot struct {
	txn *memdb.Txn
}

// Persist streams the captured state to sink.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.write(sink); err != nil {
		_ = sink.Cancel() // the write error is the one worth reporting
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

// Release has nothing to free: a memdb read transaction holds no locks.
func (s *snapshot) Release() {}

func (s *snapshot) write(w io.Writer) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	m := loadMeta(s.txn)
	if err := enc.Encode(snapshotHeader{Version: SnapshotVersion, AppliedIndex: m.AppliedIndex, Clock: m.Clock}); err != nil {
		return err
	}
	if m.Config != nil {
		if err := enc.Encode(recordOut{Kind: kindConfig, Data: m.Config}); err != nil {
			return err
		}
	}
	for _, t := range []struct{ table, kind string }{
		{tableAPIKeys, kindAPIKey}, {tableFiles, kindFile}, {tableTokens, kindToken}, {tableRequests, kindRequest},
	} {
		it, err := s.txn.Get(t.table, "id")
		if err != nil {
			return err
		}
		for obj := it.Next(); obj != nil; obj = it.Next() {
			if err := enc.Encode(recordOut{Kind: t.kind, Data: obj}); err != nil {
				return err
			}
		}
	}
	if err := enc.Encode(recordOut{Kind: kindEnd}); err != nil {
		return err
	}
	return bw.Flush()
}

// Restore replaces all state with the snapshot's, including the applied index, which raft does
// not tell the FSM. On error the previous state stays in place.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	db, index, err := readSnapshot(rc)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidSnapshot, err)
	}
	f.db.Store(db)
	f.setApplied(index)
	f.logger.Info("restored snapshot", "index", index)
	return nil
}

func readSnapshot(r io.Reader) (*memdb.MemDB, uint64, error) {
	dec := json.NewDecoder(bufio.NewReader(r))
	dec.DisallowUnknownFields()
	var hdr snapshotHeader
	if err := dec.Decode(&hdr); err != nil {
		return nil, 0, fmt.Errorf("header: %w", err)
	}
	read, ok := snapshotReaders[hdr.Version]
	if !ok {
		return nil, 0, fmt.Errorf("unsupported version %d", hdr.Version)
	}
	return read(dec, hdr)
}

// readSnapshotV1 reads the records of a version 1 stream after its header.
func readSnapshotV1(dec *json.Decoder, hdr snapshotHeader) (*memdb.MemDB, uint64, error) {
	db := newDB()
	txn := db.Txn(true)
	defer txn.Abort()
	m := metaRow{Key: metaKey, AppliedIndex: hdr.AppliedIndex, Clock: hdr.Clock}
	for n := 1; ; n++ {
		var rec recordIn
		if err := dec.Decode(&rec); err != nil {
			if errors.Is(err, io.EOF) {
				return nil, 0, errors.New("truncated: no end record")
			}
			return nil, 0, fmt.Errorf("record %d: %w", n, err)
		}
		if rec.Kind == kindEnd && rec.Data == nil {
			break
		}
		if err := restoreRecord(txn, &m, rec); err != nil {
			return nil, 0, fmt.Errorf("record %d (%s): %w", n, rec.Kind, err)
		}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, 0, errors.New("trailing data after end record")
	}
	if err := txn.Insert(tableMeta, &m); err != nil {
		return nil, 0, err
	}
	txn.Commit()
	return db, hdr.AppliedIndex, nil
}

// restoreRecord checks each row as strictly as a command would have, so that a damaged or forged
// snapshot cannot plant state that Apply could never have produced.
func restoreRecord(txn *memdb.Txn, m *metaRow, rec recordIn) error {
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
		return nil
	case kindAPIKey:
		var k APIKey
		if err := decodeStrict(rec.Data, &k); err != nil {
			return err
		}
		if k.ID == "" || !isSHA256Hex(k.Hash) {
			return errors.New("api key needs id and hex SHA-256 hash")
		}
		return insertNew(txn, tableAPIKeys, &k, "id", k.ID, "hash", k.Hash)
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
		return insertNew(txn, tableFiles, &f, "id", f.ID)
	case kindToken:
		var t Token
		if err := decodeStrict(rec.Data, &t); err != nil {
			return err
		}
		if err := t.validate(); err != nil {
			return err
		}
		if _, ok := first[File](txn, tableFiles, "id", t.FileID); !ok {
			return fmt.Errorf("token %s of unknown file %s", t.ID, t.FileID)
		}
		return insertNew(txn, tableTokens, &t, "id", t.ID, "secret", HashSecret(t.Secret))
	case kindRequest:
		var r requestRow
		if err := decodeStrict(rec.Data, &r); err != nil {
			return err
		}
		if r.ID == "" {
			return errors.New("request without id")
		}
		return insertNew(txn, tableRequests, &r, "id", r.ID)
	}
	return fmt.Errorf("unknown record kind %q", rec.Kind)
}

// insertNew inserts row after checking that none of its unique index values (given as index,
// value pairs) is taken; go-memdb itself would silently replace the holder.
func insertNew(txn *memdb.Txn, table string, row any, unique ...string) error {
	for i := 0; i+1 < len(unique); i += 2 {
		if obj, err := txn.First(table, unique[i], unique[i+1]); err != nil || obj != nil {
			return fmt.Errorf("duplicate %s %q", unique[i], unique[i+1])
		}
	}
	return txn.Insert(table, row)
}
