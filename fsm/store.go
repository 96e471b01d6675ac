package fsm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// StoreFile is the name of the state store inside the FSM's directory.
const StoreFile = "state.db"

// Buckets of the state store. Index buckets map a composite key to nothing (or to an id). File,
// token and request rows are in the compact binary form of rows.go; API keys and the config are
// JSON of the types the snapshot stream carries.
var (
	bucketMeta          = []byte("meta")              // metaKey* → value
	bucketFiles         = []byte("files")             // file id → File
	bucketFilesByCreate = []byte("files-by-creation") // encodeTime(CreatedAt) ‖ id → ∅
	bucketFilesByExpiry = []byte("files-by-expiry")   // encodeTime(ExpiresAt) ‖ id → ∅ (expiring only)
	bucketTokens        = []byte("tokens")            // token id → Token
	bucketTokenBySecret = []byte("token-by-secret")   // sha256(secret), 32 bytes → token id
	bucketTokensByFile  = []byte("tokens-by-file")    // file id ‖ 0x00 ‖ token id → ∅
	bucketTokensByExp   = []byte("tokens-by-expiry")  // encodeTime(ExpiresAt) ‖ id → ∅ (expiring only)
	bucketAPIKeys       = []byte("apikeys")           // key id → APIKey
	bucketAPIKeyByHash  = []byte("apikey-by-hash")    // sha256, 32 bytes → key id
	bucketRequests      = []byte("requests")          // request id → requestRow (binary)
	bucketRequestsByT   = []byte("requests-by-time")  // encodeTime(Time) ‖ id → ∅

	allBuckets = [][]byte{bucketMeta, bucketFiles, bucketFilesByCreate, bucketFilesByExpiry, bucketTokens,
		bucketTokenBySecret, bucketTokensByFile, bucketTokensByExp, bucketAPIKeys, bucketAPIKeyByHash,
		bucketRequests, bucketRequestsByT}
)

// Keys of the meta bucket.
var (
	metaApplied    = []byte("appliedIndex") // uint64, big endian
	metaClock      = []byte("clock")        // JSON time
	metaConfig     = []byte("config")       // JSON ClusterConfig; absent before initCluster
	metaFileCount  = []byte("fileCount")    // uint64, big endian
	metaTokenCount = []byte("tokenCount")   // uint64, big endian
	metaFormat     = []byte("format")       // uint64 storeFormat
)

// storeFormat is the layout version of state.db. A store of another format is refused on open
// with a clear error (raft can rebuild it from the snapshot and the log once it is moved aside).
const storeFormat = 1

// defaultMmapSize is the initial mmap of the store. bbolt remaps when the file outgrows the map,
// and a remap waits for every read transaction (a snapshot's included); reserving address space
// up front, as etcd does (10 GiB), keeps apply from stalling behind a long snapshot. It costs
// virtual memory only: pages count towards RSS when touched.
const defaultMmapSize = 16 << 30

// openStore opens (or creates) the store file with fsync on.
func openStore(path string, noSync bool) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:         time.Second,
		InitialMmapSize: defaultMmapSize,
		FreelistType:    bolt.FreelistMapType,
		NoSync:          noSync,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open state store %s: locked by another process (is another cairn agent using this data dir?)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("open state store %s: %w (the file is damaged: stop the node, move it aside, and the node rebuilds it from the raft snapshot and log on start)", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		switch v := meta.Get(metaFormat); {
		case v == nil:
			return meta.Put(metaFormat, binary.BigEndian.AppendUint64(nil, storeFormat))
		case len(v) != 8 || binary.BigEndian.Uint64(v) != storeFormat:
			return fmt.Errorf("unknown store format %x", v)
		}
		return nil
	}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open state store %s: %w", path, err)
	}
	return db, nil
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// metaRow holds the singletons of the meta bucket as one batch sees them.
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

// store is the state inside one bbolt transaction, read-only or writable.
type store struct{ tx *bolt.Tx }

// appendLike are the buckets whose keys grow with time (time-prefixed indexes): new keys land
// at the end, so their pages are split nearly full instead of bbolt's half-full default.
var appendLike = [][]byte{bucketFilesByCreate, bucketRequestsByT}

// inKeyOrder are the buckets a snapshot stream fills in key order: Restore packs their pages
// full, where apply, inserting random ids, must leave room.
var inKeyOrder = [][]byte{bucketAPIKeys, bucketFiles, bucketTokens, bucketRequests}

// restoring is writable for a transaction of Restore.
func restoring(tx *bolt.Tx) store {
	s := writable(tx)
	for _, name := range inKeyOrder {
		tx.Bucket(name).FillPercent = 1
	}
	return s
}

// writable prepares a write transaction's buckets (bucket settings last one transaction).
func writable(tx *bolt.Tx) store {
	for _, name := range appendLike {
		tx.Bucket(name).FillPercent = 0.95
	}
	return store{tx}
}

func (s store) b(name []byte) *bolt.Bucket { return s.tx.Bucket(name) }

// row decodes the row under key in bucket into a new T.
func row[T any](s store, bucket []byte, key string) (*T, bool, error) {
	v := s.b(bucket).Get([]byte(key))
	if v == nil {
		return nil, false, nil
	}
	t := new(T)
	if err := json.Unmarshal(v, t); err != nil {
		return nil, false, fmt.Errorf("decode %s row %q: %w", bucket, key, err)
	}
	return t, true, nil
}

func putRow(s store, bucket []byte, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.b(bucket).Put([]byte(key), b)
}

func (s store) meta() (metaRow, error) {
	b := s.b(bucketMeta)
	m := metaRow{AppliedIndex: u64(b.Get(metaApplied)), Files: u64(b.Get(metaFileCount)), Tokens: u64(b.Get(metaTokenCount))}
	if v := b.Get(metaClock); v != nil {
		if err := json.Unmarshal(v, &m.Clock); err != nil {
			return m, fmt.Errorf("decode clock: %w", err)
		}
	}
	if v := b.Get(metaConfig); v != nil {
		m.Config = new(ClusterConfig)
		if err := json.Unmarshal(v, m.Config); err != nil {
			return m, fmt.Errorf("decode config: %w", err)
		}
	}
	return m, nil
}

func (s store) putMeta(m *metaRow) error {
	b := s.b(bucketMeta)
	clock, err := json.Marshal(m.Clock)
	if err != nil {
		return err
	}
	if err := errors.Join(b.Put(metaApplied, binary.BigEndian.AppendUint64(nil, m.AppliedIndex)), b.Put(metaClock, clock),
		b.Put(metaFileCount, binary.BigEndian.AppendUint64(nil, m.Files)),
		b.Put(metaTokenCount, binary.BigEndian.AppendUint64(nil, m.Tokens))); err != nil {
		return err
	}
	if m.configChanged && m.Config != nil {
		m.configChanged = false
		return putRow(s, bucketMeta, string(metaConfig), m.Config)
	}
	return nil
}

func (s store) file(id string) (*File, bool, error) {
	return binaryRow(s, bucketFiles, id, decodeFile)
}

func (s store) token(id string) (*Token, bool, error) {
	return binaryRow(s, bucketTokens, id, decodeToken)
}

func binaryRow[T any](s store, bucket []byte, key string, decode func([]byte) (*T, error)) (*T, bool, error) {
	v := s.b(bucket).Get([]byte(key))
	if v == nil {
		return nil, false, nil
	}
	t, err := decode(v)
	if err != nil {
		return nil, false, fmt.Errorf("decode %s row %q: %w", bucket, key, err)
	}
	return t, true, nil
}

// putFileRow stores f's row only (the indexed fields must not have changed).
func (s store) putFileRow(f *File) error { return s.b(bucketFiles).Put([]byte(f.ID), encodeFile(f)) }

func (s store) apiKey(id string) (*APIKey, bool, error) { return row[APIKey](s, bucketAPIKeys, id) }

// tokenBySecret finds a token by its secret's hash; the caller compares the secrets.
func (s store) tokenBySecret(secret string) (*Token, bool, error) {
	id := s.b(bucketTokenBySecret).Get(secretKey(secret))
	if id == nil {
		return nil, false, nil
	}
	return s.token(string(id))
}

func (s store) apiKeyByHash(hexHash string) (*APIKey, bool, error) {
	id := s.b(bucketAPIKeyByHash).Get(hashKey(hexHash))
	if id == nil {
		return nil, false, nil
	}
	return s.apiKey(string(id))
}

// tokenTaken reports whether t's id or secret is already in use.
func (s store) tokenTaken(t Token) bool {
	return s.b(bucketTokens).Get([]byte(t.ID)) != nil || s.b(bucketTokenBySecret).Get(secretKey(t.Secret)) != nil
}

// putFile stores a new file and indexes it.
func (s store) putFile(f *File) error {
	if err := s.putFileRow(f); err != nil {
		return err
	}
	if err := s.b(bucketFilesByCreate).Put(timeKey(f.CreatedAt, f.ID), nil); err != nil {
		return err
	}
	if !f.ExpiresAt.IsZero() {
		return s.b(bucketFilesByExpiry).Put(timeKey(f.ExpiresAt, f.ID), nil)
	}
	return nil
}

func (s store) unindexFile(f *File) error {
	err := s.b(bucketFilesByCreate).Delete(timeKey(f.CreatedAt, f.ID))
	if !f.ExpiresAt.IsZero() {
		err = errors.Join(err, s.b(bucketFilesByExpiry).Delete(timeKey(f.ExpiresAt, f.ID)))
	}
	return err
}

func (s store) deleteFileRow(f *File) error {
	return errors.Join(s.unindexFile(f), s.b(bucketFiles).Delete([]byte(f.ID)))
}

func (s store) putToken(t *Token) error {
	if err := s.b(bucketTokens).Put([]byte(t.ID), encodeToken(t)); err != nil {
		return err
	}
	err := errors.Join(s.b(bucketTokenBySecret).Put(secretKey(t.Secret), []byte(t.ID)),
		s.b(bucketTokensByFile).Put(fileTokenKey(t.FileID, t.ID), nil))
	if !t.ExpiresAt.IsZero() {
		err = errors.Join(err, s.b(bucketTokensByExp).Put(timeKey(t.ExpiresAt, t.ID), nil))
	}
	return err
}

func (s store) deleteTokenRow(t *Token) error {
	err := errors.Join(s.b(bucketTokens).Delete([]byte(t.ID)), s.b(bucketTokenBySecret).Delete(secretKey(t.Secret)),
		s.b(bucketTokensByFile).Delete(fileTokenKey(t.FileID, t.ID)))
	if !t.ExpiresAt.IsZero() {
		err = errors.Join(err, s.b(bucketTokensByExp).Delete(timeKey(t.ExpiresAt, t.ID)))
	}
	return err
}

// fileTokens returns the tokens of a file in token id order.
func (s store) fileTokens(fileID string) ([]Token, error) {
	prefix := append([]byte(fileID), 0)
	var out []Token
	c := s.b(bucketTokensByFile).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		t, ok, err := s.token(string(k[len(prefix):]))
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
	if err := putRow(s, bucketAPIKeys, k.ID, k); err != nil {
		return err
	}
	return s.b(bucketAPIKeyByHash).Put(hashKey(k.Hash), []byte(k.ID))
}

func (s store) deleteAPIKey(k *APIKey) error {
	return errors.Join(s.b(bucketAPIKeys).Delete([]byte(k.ID)), s.b(bucketAPIKeyByHash).Delete(hashKey(k.Hash)))
}

func (s store) apiKeyTaken(k APIKey) bool {
	return s.b(bucketAPIKeys).Get([]byte(k.ID)) != nil || s.b(bucketAPIKeyByHash).Get(hashKey(k.Hash)) != nil
}

func (s store) request(id string) (*requestRow, bool, error) {
	return binaryRow(s, bucketRequests, id, decodeRequest)
}

// putRequest records r, replacing an aged-out row of the same id.
func (s store) putRequest(r *requestRow) error {
	if old, ok, err := s.request(r.ID); err != nil {
		return err
	} else if ok {
		if err := s.b(bucketRequestsByT).Delete(timeKey(old.Time, old.ID)); err != nil {
			return err
		}
	}
	if err := s.b(bucketRequests).Put([]byte(r.ID), encodeRequest(r)); err != nil {
		return err
	}
	return s.b(bucketRequestsByT).Put(timeKey(r.Time, r.ID), nil)
}

// pruneRequests deletes up to limit de-duplication rows older than cutoff, oldest first. They are
// already ignored by lookups, so when (and how much) this runs does not change any result.
func (s store) pruneRequests(cutoff time.Time, limit int) error {
	end := encodeTime(cutoff)
	var old [][]byte
	c := s.b(bucketRequestsByT).Cursor()
	for k, _ := c.First(); k != nil && len(old) < limit && bytes.Compare(k[:encodedTimeLen], end) < 0; k, _ = c.Next() {
		old = append(old, bytes.Clone(k))
	}
	for _, k := range old {
		if err := errors.Join(s.b(bucketRequestsByT).Delete(k), s.b(bucketRequests).Delete(k[encodedTimeLen:])); err != nil {
			return err
		}
	}
	return nil
}

// storePath is where the FSM keeps its store inside dir.
func storePath(dir string) string { return filepath.Join(dir, StoreFile) }
