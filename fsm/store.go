package fsm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// The state store is one pebble database (DESIGN.md, "The store"). Each table of the state is a
// one-byte key prefix; the values are the rows of rows.go (files, tokens, requests) or JSON (API
// keys, the config). Index tables map a composite key to nothing or to an id.
type table byte

const (
	tableMeta          table = 'm' // metaKey* → value
	tableFiles         table = 'f' // file id → File (binary row)
	tableFilesByCreate table = 'c' // encodeTime(CreatedAt) ‖ id → ∅
	tableFilesByExpiry table = 'e' // encodeTime(ExpiresAt) ‖ id → ∅ (expiring only)
	tableTokens        table = 't' // token id → Token (binary row)
	tableTokenBySecret table = 's' // sha256(secret), 32 bytes → token id
	tableTokensByFile  table = 'b' // file id ‖ 0x00 ‖ token id → ∅
	tableTokensByExp   table = 'x' // encodeTime(ExpiresAt) ‖ id → ∅ (expiring only)
	tableAPIKeys       table = 'a' // key id → APIKey (JSON)
	tableAPIKeyByHash  table = 'h' // sha256, 32 bytes → key id
	tableRequests      table = 'r' // request id → requestRow (binary row)
	tableRequestsByT   table = 'q' // encodeTime(Time) ‖ id → ∅
)

// Keys of the meta table.
var (
	metaApplied    = []byte("appliedIndex") // uint64, big endian
	metaClock      = []byte("clock")        // JSON time
	metaConfig     = []byte("config")       // JSON ClusterConfig; absent before initCluster
	metaFileCount  = []byte("fileCount")    // uint64, big endian
	metaTokenCount = []byte("tokenCount")   // uint64, big endian
	metaFormat     = []byte("format")       // uint64 storeFormat
)

// storeFormat is the layout version of the store. Format 1 was the bbolt file state.db (one
// bucket per table, the same keys and values); New migrates it into format 2, pebble with one key
// prefix per table. A store of an unknown format is refused on open.
const storeFormat = 2

// key is t's key for k.
func (t table) key(k []byte) []byte {
	b := make([]byte, 0, 1+len(k))
	return append(append(b, byte(t)), k...)
}

// bounds are the iterator bounds of t's keys from start on.
func (t table) bounds(start []byte) *pebble.IterOptions {
	return &pebble.IterOptions{LowerBound: t.key(start), UpperBound: []byte{byte(t) + 1}}
}

// metaRow holds the singletons of the meta table as one batch sees them.
type metaRow struct {
	AppliedIndex uint64
	// Clock is the highest command time applied so far. De-duplication ages entries against it
	// rather than against each command's own time, so that a proposer with a slow clock cannot
	// resurrect or hide entries, and so that pruning is pure garbage collection: an entry is
	// treated as absent the moment it falls out of the window, pruned yet or not.
	Clock  time.Time
	Config *ClusterConfig
	// Files and Tokens count the rows, so Counts needs no scan.
	Files, Tokens uint64

	configChanged bool
	// keysChanged marks a batch that created or revoked an API key: its commit empties the
	// generation's key cache (stateDB.keys).
	keysChanged bool
}

// requestRow records the outcome of an applied request for de-duplication.
type requestRow struct {
	ID    string    `json:"id"`
	Code  string    `json:"code"`  // ErrorCode of the result
	Index uint64    `json:"index"` // log index of the first application
	Time  time.Time `json:"time"`  // Clock when it was applied
}

// encodeTime gives bytes that sort like the times, over the whole time.Time range (UnixNano
// would overflow outside 1678-2262, and command times come from outside).
func encodeTime(t time.Time) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 12), uint64(t.Unix())^(1<<63))
	return binary.BigEndian.AppendUint32(b, uint32(t.Nanosecond()))
}

const encodedTimeLen = 12

func timeKey(t time.Time, id string) []byte { return append(encodeTime(t), id...) }

func fileTokenKey(fileID, tokenID string) []byte {
	k := make([]byte, 0, len(fileID)+1+len(tokenID))
	return append(append(append(k, fileID...), 0), tokenID...)
}

func secretKey(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

// hashKey is the raw form of a hex SHA-256 (validated by the caller).
func hashKey(hexHash string) []byte {
	b, err := hex.DecodeString(hexHash)
	if err != nil {
		return []byte(hexHash) // unreachable for validated rows; still a distinct key
	}
	return b
}

func u64(v []byte) uint64 {
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// store is the state as one reader sees it: a pebble snapshot (reads), or an indexed batch over
// the database (apply and restore), whose reads see the batch's own writes first.
type store struct {
	r pebble.Reader
	w *pebble.Batch // nil for a read-only view
}

// batchStore is the writable store of an indexed batch.
func batchStore(b *pebble.Batch) store { return store{r: b, w: b} }

// writeStore writes to a plain batch, which cannot be read: only the writes of store may be used.
func writeStore(b *pebble.Batch) store { return store{w: b} }

// get returns a copy of the value under t's key k, or nil when there is none.
func (s store) get(t table, k []byte) ([]byte, error) {
	v, closer, err := s.r.Get(t.key(k))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := bytes.Clone(v)
	if out == nil {
		out = []byte{} // present but empty: an index key
	}
	return out, closer.Close()
}

// has reports whether t holds k; a read error counts as present, so that no insert overwrites a
// row it could not see (the error is in the log of the failing read's caller).
func (s store) has(t table, k []byte) bool {
	v, err := s.get(t, k)
	return err != nil || v != nil
}

func (s store) set(t table, k, v []byte) error { return s.w.Set(t.key(k), v, nil) }

func (s store) del(t table, k []byte) error { return s.w.Delete(t.key(k), nil) }

// each calls fn with t's keys (without the prefix) and values from start on, in key order, until
// fn returns false or an error. Both slices are valid only during the call.
func (s store) each(t table, start []byte, fn func(k, v []byte) (bool, error)) error {
	it, err := s.r.NewIter(t.bounds(start))
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return errors.Join(err, it.Close())
		}
		more, err := fn(it.Key()[1:], v)
		if err != nil || !more {
			return errors.Join(err, it.Close())
		}
	}
	return it.Close()
}

// row decodes the JSON row under key in t into a new T.
func row[T any](s store, t table, key string) (*T, bool, error) {
	v, err := s.get(t, []byte(key))
	if v == nil || err != nil {
		return nil, false, err
	}
	out := new(T)
	if err := json.Unmarshal(v, out); err != nil {
		return nil, false, fmt.Errorf("decode %c row %q: %w", t, key, err)
	}
	return out, true, nil
}

func putRow(s store, t table, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.set(t, []byte(key), b)
}

func (s store) meta() (metaRow, error) {
	var m metaRow
	var errs []error
	get := func(k []byte) []byte {
		v, err := s.get(tableMeta, k)
		errs = append(errs, err)
		return v
	}
	m.AppliedIndex, m.Files, m.Tokens = u64(get(metaApplied)), u64(get(metaFileCount)), u64(get(metaTokenCount))
	if v := get(metaClock); v != nil {
		if err := json.Unmarshal(v, &m.Clock); err != nil {
			return m, fmt.Errorf("decode clock: %w", err)
		}
	}
	if v := get(metaConfig); v != nil {
		m.Config = new(ClusterConfig)
		if err := json.Unmarshal(v, m.Config); err != nil {
			return m, fmt.Errorf("decode config: %w", err)
		}
	}
	return m, errors.Join(errs...)
}

// putMeta writes the batch's singletons: the applied index goes into the same batch as the state
// it describes.
func (s store) putMeta(m *metaRow) error {
	clock, err := json.Marshal(m.Clock)
	if err != nil {
		return err
	}
	if err := errors.Join(s.set(tableMeta, metaApplied, binary.BigEndian.AppendUint64(nil, m.AppliedIndex)),
		s.set(tableMeta, metaClock, clock),
		s.set(tableMeta, metaFileCount, binary.BigEndian.AppendUint64(nil, m.Files)),
		s.set(tableMeta, metaTokenCount, binary.BigEndian.AppendUint64(nil, m.Tokens))); err != nil {
		return err
	}
	if m.configChanged && m.Config != nil {
		m.configChanged = false
		return putRow(s, tableMeta, string(metaConfig), m.Config)
	}
	return nil
}

func (s store) file(id string) (*File, bool, error) {
	return binaryRow(s, tableFiles, id, decodeFile)
}

func (s store) token(id string) (*Token, bool, error) {
	return binaryRow(s, tableTokens, id, decodeToken)
}

func binaryRow[T any](s store, t table, key string, decode func([]byte) (*T, error)) (*T, bool, error) {
	v, err := s.get(t, []byte(key))
	if v == nil || err != nil {
		return nil, false, err
	}
	out, err := decode(v)
	if err != nil {
		return nil, false, fmt.Errorf("decode %c row %q: %w", t, key, err)
	}
	return out, true, nil
}

// putFileRow stores f's row only (the indexed fields must not have changed).
func (s store) putFileRow(f *File) error { return s.set(tableFiles, []byte(f.ID), encodeFile(f)) }

func (s store) apiKey(id string) (*APIKey, bool, error) { return row[APIKey](s, tableAPIKeys, id) }

// tokenBySecret finds a token by its secret's hash; the caller compares the secrets.
func (s store) tokenBySecret(secret string) (*Token, bool, error) {
	id, err := s.get(tableTokenBySecret, secretKey(secret))
	if id == nil || err != nil {
		return nil, false, err
	}
	return s.token(string(id))
}

func (s store) apiKeyByHash(hexHash string) (*APIKey, bool, error) {
	id, err := s.get(tableAPIKeyByHash, hashKey(hexHash))
	if id == nil || err != nil {
		return nil, false, err
	}
	return s.apiKey(string(id))
}

// tokenTaken reports whether t's id or secret is already in use.
func (s store) tokenTaken(t Token) bool {
	return s.has(tableTokens, []byte(t.ID)) || s.has(tableTokenBySecret, secretKey(t.Secret))
}

// putFile stores a new file and indexes it.
func (s store) putFile(f *File) error {
	err := errors.Join(s.putFileRow(f), s.set(tableFilesByCreate, timeKey(f.CreatedAt, f.ID), nil))
	if !f.ExpiresAt.IsZero() {
		err = errors.Join(err, s.set(tableFilesByExpiry, timeKey(f.ExpiresAt, f.ID), nil))
	}
	return err
}

func (s store) deleteFileRow(f *File) error {
	err := errors.Join(s.del(tableFilesByCreate, timeKey(f.CreatedAt, f.ID)), s.del(tableFiles, []byte(f.ID)))
	if !f.ExpiresAt.IsZero() {
		err = errors.Join(err, s.del(tableFilesByExpiry, timeKey(f.ExpiresAt, f.ID)))
	}
	return err
}

func (s store) putToken(t *Token) error {
	err := errors.Join(s.set(tableTokens, []byte(t.ID), encodeToken(t)),
		s.set(tableTokenBySecret, secretKey(t.Secret), []byte(t.ID)),
		s.set(tableTokensByFile, fileTokenKey(t.FileID, t.ID), nil))
	if !t.ExpiresAt.IsZero() {
		err = errors.Join(err, s.set(tableTokensByExp, timeKey(t.ExpiresAt, t.ID), nil))
	}
	return err
}

func (s store) deleteTokenRow(t *Token) error {
	err := errors.Join(s.del(tableTokens, []byte(t.ID)), s.del(tableTokenBySecret, secretKey(t.Secret)),
		s.del(tableTokensByFile, fileTokenKey(t.FileID, t.ID)))
	if !t.ExpiresAt.IsZero() {
		err = errors.Join(err, s.del(tableTokensByExp, timeKey(t.ExpiresAt, t.ID)))
	}
	return err
}

// fileTokens returns the tokens of a file in token id order.
func (s store) fileTokens(fileID string) ([]Token, error) {
	prefix := append([]byte(fileID), 0)
	var ids []string
	if err := s.each(tableTokensByFile, prefix, func(k, _ []byte) (bool, error) {
		if !bytes.HasPrefix(k, prefix) {
			return false, nil
		}
		ids = append(ids, string(k[len(prefix):]))
		return true, nil
	}); err != nil {
		return nil, err
	}
	var out []Token
	for _, id := range ids {
		t, ok, err := s.token(id)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, *t)
		}
	}
	return out, nil
}

func (s store) putAPIKey(k *APIKey) error {
	if err := putRow(s, tableAPIKeys, k.ID, k); err != nil {
		return err
	}
	return s.set(tableAPIKeyByHash, hashKey(k.Hash), []byte(k.ID))
}

func (s store) deleteAPIKey(k *APIKey) error {
	return errors.Join(s.del(tableAPIKeys, []byte(k.ID)), s.del(tableAPIKeyByHash, hashKey(k.Hash)))
}

func (s store) apiKeyTaken(k APIKey) bool {
	return s.has(tableAPIKeys, []byte(k.ID)) || s.has(tableAPIKeyByHash, hashKey(k.Hash))
}

func (s store) request(id string) (*requestRow, bool, error) {
	return binaryRow(s, tableRequests, id, decodeRequest)
}

// replaceRequest records r in place of old, the row of the same id that the caller read (nil
// when there is none).
func (s store) replaceRequest(old, r *requestRow) error {
	if old != nil {
		if err := s.del(tableRequestsByT, timeKey(old.Time, old.ID)); err != nil {
			return err
		}
	}
	return errors.Join(s.set(tableRequests, []byte(r.ID), encodeRequest(r)), s.set(tableRequestsByT, timeKey(r.Time, r.ID), nil))
}

// pruneRequests deletes up to limit de-duplication rows older than cutoff, oldest first, from
// the key from on (nil: the first), and returns the last key it deleted (from when none). They are
// already ignored by lookups, so when (and how much) this runs does not change any result.
//
// Passing the previous call's key skips the tombstones of the rows pruned before, which pebble
// keeps until a compaction drops them: every row below it is gone, and none can come back, since a
// new row is timed by the clock, which never goes back.
func (s store) pruneRequests(cutoff time.Time, limit int, from []byte) ([]byte, error) {
	end := encodeTime(cutoff)
	var old [][]byte
	if err := s.each(tableRequestsByT, from, func(k, _ []byte) (bool, error) {
		if len(old) >= limit || bytes.Compare(k[:encodedTimeLen], end) >= 0 {
			return false, nil
		}
		old = append(old, bytes.Clone(k))
		return true, nil
	}); err != nil {
		return from, err
	}
	for _, k := range old {
		if err := errors.Join(s.del(tableRequestsByT, k), s.del(tableRequests, k[encodedTimeLen:])); err != nil {
			return from, err
		}
	}
	if len(old) == 0 {
		return from, nil
	}
	return old[len(old)-1], nil
}
