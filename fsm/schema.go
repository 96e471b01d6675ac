package fsm

import (
	"encoding/binary"
	"fmt"
	"time"

	memdb "github.com/hashicorp/go-memdb"
)

// Table names of the state store.
const (
	tableMeta     = "meta"
	tableAPIKeys  = "apikeys"
	tableFiles    = "files"
	tableTokens   = "tokens"
	tableRequests = "requests"
)

// metaKey is the primary key of the single meta row.
const metaKey = "meta"

// metaRow holds the singletons. AppliedIndex lives in the store, not only in the FSM struct, so
// that a snapshot's read transaction sees the index that matches its state.
type metaRow struct {
	Key          string
	AppliedIndex uint64
	// Clock is the highest command time applied so far. De-duplication ages entries against it
	// rather than against each command's own time, so that a proposer with a slow clock cannot
	// resurrect or hide entries, and so that pruning is pure garbage collection: an entry is
	// treated as absent the moment it falls out of the window, pruned yet or not.
	Clock  time.Time
	Config *ClusterConfig
}

// requestRow records the outcome of an applied request for de-duplication.
type requestRow struct {
	ID    string    `json:"id"`
	Code  string    `json:"code"`  // ErrorCode of the result
	Index uint64    `json:"index"` // log index of the first application
	Time  time.Time `json:"time"`  // Clock when it was applied
}

func newSchema() *memdb.DBSchema {
	id := func(field string) *memdb.IndexSchema {
		return &memdb.IndexSchema{Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: field}}
	}
	return &memdb.DBSchema{Tables: map[string]*memdb.TableSchema{
		tableMeta: {Name: tableMeta, Indexes: map[string]*memdb.IndexSchema{"id": id("Key")}},
		tableAPIKeys: {Name: tableAPIKeys, Indexes: map[string]*memdb.IndexSchema{
			"id":   id("ID"),
			"hash": {Name: "hash", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Hash"}},
		}},
		tableFiles: {Name: tableFiles, Indexes: map[string]*memdb.IndexSchema{"id": id("ID")}},
		tableTokens: {Name: tableTokens, Indexes: map[string]*memdb.IndexSchema{
			"id":     id("ID"),
			"secret": {Name: "secret", Unique: true, Indexer: secretHashIndex{}},
			"file":   {Name: "file", Indexer: &memdb.StringFieldIndex{Field: "FileID"}},
		}},
		tableRequests: {Name: tableRequests, Indexes: map[string]*memdb.IndexSchema{
			"id":   id("ID"),
			"time": {Name: "time", Indexer: timeIndex{}},
		}},
	}}
}

// secretHashIndex indexes tokens by HashSecret(Secret), so that a lookup by secret never walks a
// tree keyed by the secret itself; the final comparison is constant-time.
type secretHashIndex struct{}

func (secretHashIndex) FromObject(obj any) (bool, []byte, error) {
	t, ok := obj.(*Token)
	if !ok {
		return false, nil, fmt.Errorf("secret index: %T is not *Token", obj)
	}
	return true, []byte(HashSecret(t.Secret)), nil
}

// FromArgs takes the hex hash, not the secret.
func (secretHashIndex) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("secret index: want 1 argument, got %d", len(args))
	}
	h, ok := args[0].(string)
	if !ok {
		return nil, fmt.Errorf("secret index: %T is not a string", args[0])
	}
	return []byte(h), nil
}

// timeIndex orders request rows by Time so that pruning visits only expired rows.
type timeIndex struct{}

func (timeIndex) FromObject(obj any) (bool, []byte, error) {
	r, ok := obj.(*requestRow)
	if !ok {
		return false, nil, fmt.Errorf("time index: %T is not *requestRow", obj)
	}
	return true, encodeTime(r.Time), nil
}

func (timeIndex) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("time index: want 1 argument, got %d", len(args))
	}
	t, ok := args[0].(time.Time)
	if !ok {
		return nil, fmt.Errorf("time index: %T is not a time.Time", args[0])
	}
	return encodeTime(t), nil
}

// encodeTime gives bytes that sort like the times, over the whole time.Time range (UnixNano
// would overflow outside 1678-2262, and command times come from outside).
func encodeTime(t time.Time) []byte {
	b := binary.BigEndian.AppendUint64(nil, uint64(t.Unix())^(1<<63))
	return binary.BigEndian.AppendUint32(b, uint32(t.Nanosecond()))
}
