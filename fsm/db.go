package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// The store on disk (DESIGN.md, "The store"): DATA_DIR/fsm/STORE names the current generation,
// a pebble database in DATA_DIR/fsm/state-<random>/. A new generation (a restore, the migration
// of a bbolt store, the first start) is built completely, flushed and closed beside the current
// one; only then is STORE replaced (write, fsync, rename, fsync of the directory). A crash leaves
// STORE naming either the old generation or the new one, and New removes every other.
const (
	// StorePointerFile names the current store generation inside the FSM's directory.
	StorePointerFile = "STORE"
	// LegacyStoreFile is the bbolt store of format 1, migrated on open.
	LegacyStoreFile = "state.db"

	generationPrefix = "state-"
)

// DefaultCacheBytes is the pebble block cache of a store whose Options leave it at zero.
const DefaultCacheBytes = 32 << 20

// memTableBytes is the size of one pebble memtable. Apply writes without a WAL, so what is in the
// memtables is lost in a crash and replayed from the raft log; memTableStopWrites of them (128
// MiB) is the most unflushed state a node holds, and its bound on memory beside the block cache.
const (
	memTableBytes      = 32 << 20
	memTableStopWrites = 4
)

// memTableReserve is what pebble's memtables may take out of the block cache. Pebble counts every
// memtable it allocates against its cache (db.go newMemTable: Cache.Reserve of the memtable's
// size, held while the memtable is queued or kept for recycling), so a cache of CacheBytes next to
// 32 MiB memtables would hold no block at all: with the former 32 MiB cache and one full memtable,
// the cache's target size was 1 byte, every index, filter and data block was read from the page
// cache on every lookup, and pebble's metrics showed 0 entries and a 0 % hit rate. The cache is
// therefore sized CacheBytes plus the most the memtables can reserve (the memTableStopWrites
// queued ones and the recycled one): blocks get at least CacheBytes, and the store's memory stays
// the one bound it was, CacheBytes + 160 MiB.
const memTableReserve = (memTableStopWrites + 1) * memTableBytes

// errStoreClosed is what a read of a store that Restore replaced (or Close closed) gets.
var errStoreClosed = errors.New("state store closed")

// stateDB is one open store generation: the pebble database, the readers using it (Restore
// closes a replaced generation once they are done: pebble panics on a closed database), and the
// health its background work reports.
type stateDB struct {
	db     *pebble.DB
	path   string
	logger *slog.Logger

	mu      sync.Mutex
	readers int
	closed  bool
	idle    *sync.Cond

	// Background failures (a full disk shows at flush and compaction, since apply writes only
	// to memtables). flushErr stops apply from adding to memtables that cannot be flushed,
	// which would end in a write stall of raft's FSM goroutine; compactErr only makes the node
	// not ready. Each is cleared by the next flush or compaction that succeeds.
	flushErr, compactErr error
	flushFailed          chan struct{} // closed and replaced on every failed flush

	// diskFullPauses counts the pauses of pebble's writers on a full disk (diskFull); stop ends
	// a pause early when the store closes.
	diskFullPauses atomic.Uint64
	stop           chan struct{}

	// committed is the meta row as of the last batch committed to this generation (or as read
	// from the store when it was opened). Apply starts each batch from it instead of reading and
	// decoding the meta keys again, and Config answers from it. Only raft's FSM goroutine stores
	// it, and only after a commit succeeded, so it never runs ahead of the store; the Config it
	// points at is never changed in place (apply replaces it with a changed clone).
	committed atomic.Pointer[metaRow]
	// keys caches the API keys found by the hash of their secret (APIKeyBySecret).
	keys apiKeyCache
}

// maxKeyCacheBytes bounds apiKeyCache: a cluster has few API keys, and a cache that would grow
// past its limit is emptied first, so its memory stays bounded whatever the number of keys. The
// limit comes out of Options.CacheBytes (keyCacheShare of it, at most this).
const (
	maxKeyCacheBytes = 1 << 20
	keyCacheShare    = 32
)

// apiKeyCache holds API keys by the hex hash of their secret, as the store had them at the
// cache's version. Every request with an API key looks its key up, and the store answers that
// with an index read, a row read and a JSON decode. Only keys that exist are cached (a miss costs
// a store read, and unknown secrets cannot fill the cache). A committed batch that created or
// revoked a key empties it (invalidate) before the batch's index is visible to waiters; a reader
// that read the store before that keeps its answer out of the cache by the version check, so the
// cache never holds a key the store no longer has.
type apiKeyCache struct {
	limit int // bytes; 0 caches nothing

	mu      sync.Mutex
	version uint64
	byHash  map[string]*APIKey
	bytes   int
}

// get returns the cached key and the version a store read must be cached under.
func (c *apiKeyCache) get(hash string) (*APIKey, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byHash[hash], c.version
}

// put caches k, read from the store at version, unless the keys changed since.
func (c *apiKeyCache) put(hash string, k *APIKey, version uint64) {
	size := cachedKeyBytes(hash, k)
	c.mu.Lock()
	defer c.mu.Unlock()
	if version != c.version || size > c.limit {
		return
	}
	if c.byHash == nil || c.bytes+size > c.limit {
		c.byHash, c.bytes = make(map[string]*APIKey), 0
	}
	if _, ok := c.byHash[hash]; !ok {
		c.byHash[hash] = k
		c.bytes += size
	}
}

// cachedKeyBytes estimates what caching k costs: its strings and the map entry and struct.
func cachedKeyBytes(hash string, k *APIKey) int {
	n := 160 + len(hash) + len(k.ID) + len(k.Name) + len(k.Hash)
	for _, p := range k.Permissions {
		n += 16 + len(p)
	}
	return n
}

func (c *apiKeyCache) invalidate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.version++
	clear(c.byHash)
	c.bytes = 0
}

// diskFullPause is how long pebble's writers wait after the disk reported it is full before they
// try again. Pebble retries a failed flush at once and without end, so without the pause a full
// disk keeps a core busy until space returns; with it, a flush is tried about once a second.
const diskFullPause = time.Second

// diskFull runs inside pebble's file system (vfs.OnDiskFull) when a write gets ENOSPC, before the
// write is retried once; new writes wait meanwhile. Reads and apply's memtable inserts do not.
func (h *stateDB) diskFull() {
	h.diskFullPauses.Add(1)
	t := time.NewTimer(diskFullPause)
	defer t.Stop()
	select {
	case <-t.C:
	case <-h.stop:
	}
}

// storeOptions are the pebble settings of a store.
type storeOptions struct {
	cacheBytes    int64 // pebble's block cache
	keyCacheBytes int   // apiKeyCache
	logger        *slog.Logger
}

// openDB opens (or creates) the pebble database at path and checks its format.
func openDB(path string, o storeOptions) (*stateDB, error) {
	h := &stateDB{path: path, logger: o.logger, flushFailed: make(chan struct{}), stop: make(chan struct{})}
	h.idle = sync.NewCond(&h.mu)
	h.keys.limit = o.keyCacheBytes
	cache := pebble.NewCache(o.cacheBytes + memTableReserve)
	defer cache.Unref() // the database holds its own reference
	opts := &pebble.Options{
		Cache:                       cache,
		FS:                          vfs.OnDiskFull(vfs.Default, h.diskFull),
		MemTableSize:                memTableBytes,
		MemTableStopWritesThreshold: memTableStopWrites,
		DisableWAL:                  true,
		FormatMajorVersion:          pebble.FormatValueSeparation,
		Logger:                      pebbleLogger{o.logger},
		EventListener: &pebble.EventListener{
			BackgroundError: h.backgroundError,
			FlushEnd:        h.flushEnd,
			CompactionEnd:   h.compactionEnd,
			WriteStallBegin: func(info pebble.WriteStallBeginInfo) {
				o.logger.Warn("state store write stall", "reason", info.Reason)
			},
		},
	}
	// Bloom filters on every level, L0 included: apply checks ids for uniqueness, so most of
	// its reads are of keys that do not exist, and without a filter each costs a block read in
	// every table that overlaps (random ids overlap them all).
	opts.Levels[0].FilterPolicy = bloom.FilterPolicy(10)
	db, err := pebble.Open(path, opts)
	if err != nil {
		if strings.Contains(err.Error(), "lock") {
			return nil, fmt.Errorf("open state store %s: %w (is another cairn agent using this data dir?)", path, err)
		}
		return nil, fmt.Errorf("open state store %s: %w (the store is damaged: stop the node, move DATA_DIR/fsm aside, and the node rebuilds it from the raft snapshot and log on start)", path, err)
	}
	h.db = db
	if err := checkFormat(db); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open state store %s: %w", path, err)
	}
	m, err := (store{r: db}).meta()
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open state store %s: %w", path, err)
	}
	h.committed.Store(&m)
	return h, nil
}

// checkFormat writes the format into a new store and refuses a store of another format.
func checkFormat(db *pebble.DB) error {
	v, err := (store{r: db}).get(tableMeta, metaFormat)
	switch {
	case err != nil:
		return err
	case v == nil:
		return db.Set(tableMeta.key(metaFormat), binary.BigEndian.AppendUint64(nil, storeFormat), pebble.NoSync)
	case u64(v) != storeFormat:
		return fmt.Errorf("unknown store format %x", v)
	}
	return nil
}

// acquire registers a reader; false means the generation is closed (or closing).
func (h *stateDB) acquire() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.readers++
	return true
}

func (h *stateDB) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.readers--; h.readers == 0 {
		h.idle.Broadcast()
	}
}

// close refuses new readers, waits for the current ones, flushes when asked and the store is
// healthy (apply writes no WAL: an unflushed memtable is replayed from the raft log instead),
// and closes the database.
// A second close does nothing.
func (h *stateDB) close(flush bool) error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	close(h.stop)
	for h.readers > 0 {
		h.idle.Wait()
	}
	h.mu.Unlock()
	var err error
	if flush {
		// Even when a flush has failed before (a full disk): a flush asked for and not done must
		// be an error, since the store has no WAL and Close drops the memtables. A restore or
		// migration that ignored it installed an empty generation as if it were the state.
		err = h.flushDurable()
	}
	return errors.Join(err, h.db.Close())
}

// flushDurable flushes every memtable, so that the store's durable applied index is at least the
// one applied when it was called. It returns when the flush is done, or with an error as soon as
// a flush fails (pebble retries it in the background).
func (h *stateDB) flushDurable() error {
	h.mu.Lock()
	failed, err := h.flushFailed, h.flushErr
	h.mu.Unlock()
	if err != nil {
		return fmt.Errorf("flush state store: %w", err)
	}
	done, err := h.db.AsyncFlush()
	if err != nil {
		return fmt.Errorf("flush state store: %w", err)
	}
	select {
	case <-done:
		return nil
	case <-failed:
		return fmt.Errorf("flush state store: %w", h.err())
	}
}

// err is the store's background failure, nil when healthy.
func (h *stateDB) err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return errors.Join(h.flushErr, h.compactErr)
}

// flushFailure is the failure of the last flush, nil once a flush succeeded.
func (h *stateDB) flushFailure() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.flushErr
}

// backgroundError logs what pebble's background work reports, except the flush and compaction
// failures that flushEnd and compactionEnd already logged once (pebble retries those at once,
// which would log them in a loop).
func (h *stateDB) backgroundError(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.flushErr == nil && h.compactErr == nil {
		h.logger.Error("state store background work failed", "err", err)
	}
}

func (h *stateDB) flushEnd(info pebble.FlushInfo) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case info.Err == nil:
		if h.flushErr != nil {
			h.logger.Info("state store flushes again")
		}
		h.flushErr = nil
	case len(info.Output) == 0 && info.Input > 0 && !isEmptyFlush(info.Err):
		if h.flushErr == nil {
			h.logger.Error("state store flush failed; batches are held back and the node is not ready until one succeeds", "err", info.Err)
		}
		h.flushErr = info.Err
		close(h.flushFailed)
		h.flushFailed = make(chan struct{})
	}
}

// isEmptyFlush is pebble's report of a flush that had nothing to write: not a failure. Pebble
// v2.1.7 reports it only as FlushInfo.Err = errEmptyTable (compaction.go), an unexported
// errors.New without a sentinel, a type or a field of FlushInfo to test, so the message is
// all there is to match. Check it when pebble is upgraded: with another message, a flush of
// nothing would count as a failed flush (not ready, batches held back) until the next one.
func isEmptyFlush(err error) bool { return err.Error() == "pebble: empty table" }

func (h *stateDB) compactionEnd(info pebble.CompactionInfo) {
	if errors.Is(info.Err, pebble.ErrCancelledCompaction) {
		return // pebble gave it up for another one (or for Close): not a failure
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if info.Err != nil && h.compactErr == nil {
		h.logger.Error("state store compaction failed; the node is not ready until one succeeds", "err", info.Err)
	}
	h.compactErr = info.Err
}

// pebbleLogger sends pebble's logs to slog. Pebble calls Fatalf on what it cannot survive (a
// MANIFEST it cannot write); it must not return, so it panics after logging, and the node
// restarts into the crash model (the store is the last flushed state, raft replays the rest).
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) { p.l.Debug(fmt.Sprintf(format, args...)) }
func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...))
}
func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error("state store failed for good", "err", msg)
	panic("pebble: " + msg)
}

// buildGeneration creates a new store generation in dir, fills it with fill, makes it durable
// (flush, close, fsync of dir) and returns its name; it is not yet current (installGeneration).
// A failure removes it.
func buildGeneration(dir string, o storeOptions, fill func(db *pebble.DB) (metaRow, error)) (string, metaRow, error) {
	path, err := os.MkdirTemp(dir, generationPrefix)
	if err != nil {
		return "", metaRow{}, fmt.Errorf("new state store: %w", err)
	}
	m, err := fillGeneration(path, o, fill)
	if err != nil {
		return "", metaRow{}, errors.Join(err, os.RemoveAll(path))
	}
	return filepath.Base(path), m, syncDir(dir)
}

func fillGeneration(path string, o storeOptions, fill func(db *pebble.DB) (metaRow, error)) (metaRow, error) {
	h, err := openDB(path, o)
	if err != nil {
		return metaRow{}, err
	}
	m, err := fill(h.db)
	if err != nil {
		_ = h.db.Close()
		return metaRow{}, err
	}
	if err := h.close(true); err != nil {
		return metaRow{}, fmt.Errorf("write %s: %w", path, err)
	}
	return m, nil
}

// installGeneration makes name the current generation of dir, atomically and durably.
func installGeneration(dir, name string) error {
	tmp := filepath.Join(dir, StorePointerFile+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteString(name + "\n")
	if err = errors.Join(err, f.Sync(), f.Close()); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, StorePointerFile)); err != nil {
		return err
	}
	return syncDir(dir)
}

// currentGeneration reads the name of dir's current generation ("" when there is none yet).
func currentGeneration(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, StorePointerFile))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	name := strings.TrimSpace(string(b))
	if !strings.HasPrefix(name, generationPrefix) || filepath.Base(name) != name {
		return "", fmt.Errorf("%s names %q, not a store generation", StorePointerFile, name)
	}
	return name, nil
}

// removeLeftovers deletes what a crash left behind beside the current generation: generations
// being built (a restore, a migration), replaced ones not yet removed, the pointer's temporary
// file, the migrated bbolt store, and the temporary files of a bbolt restore.
func removeLeftovers(dir, current string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if name == current || !(strings.HasPrefix(name, generationPrefix) || name == StorePointerFile+".tmp" ||
			name == LegacyStoreFile || strings.HasPrefix(name, LegacyStoreFile+".restore-")) {
			continue
		}
		errs = append(errs, os.RemoveAll(filepath.Join(dir, name)))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return syncDir(dir)
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
