package erasure

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"
)

// ShardInfo describes one committed shard on disk.
type ShardInfo struct {
	ID      ShardID
	Size    int64
	ModTime time.Time
}

// ShardStore keeps one node's committed shards. A shard up to StoreOptions.SmallShardMax bytes
// is a record in a volume file under dir/volumes, group-committed with the other small shards
// written at the same time (volume.go); a larger one is a file under dir/shards/<last 2 chars of
// file id>/<id> (see StoreOrder), written through a temp file in dir/tmp. Either way a shard is
// absent or complete, and durable when Commit returns. It stores shard bytes verbatim, in
// whatever format the writer sends; OpenFrames reads both formats from both places. It is safe
// for concurrent use.
type ShardStore struct {
	shardsDir string
	tmpDir    string
	used      atomic.Int64 // bytes of shard files; the volumes count their own
	vols      *volumeSet   // nil when small shards are files too

	buffers       sync.Pool // *[]byte: aligned directChunk buffers
	smalls        sync.Pool // *[]byte: smallShard buffers
	directOK      atomic.Bool
	directErr     atomic.Pointer[error]
	directBytes   atomic.Int64
	bufferedBytes atomic.Int64

	// mu serialises the stat-then-rename of Commit and the stat-then-remove of Delete, so that
	// the used-bytes accounting stays exact when the same id is written and deleted concurrently.
	mu sync.Mutex
}

// StoreOptions configure a ShardStore.
type StoreOptions struct {
	// SmallShardMax is the largest shard kept as a record in a volume file; larger ones are files
	// of their own. 0 keeps every shard in a file. At most 64 KiB.
	SmallShardMax int
	// VolumeSize is the size at which a volume takes no new records and the next one starts.
	VolumeSize int64
	// GroupCommitWait is the longest a group commit of small shards waits for more records while
	// they arrive less than this apart (0: never). See DESIGN.md, "Small shards: volumes".
	GroupCommitWait time.Duration
	// Logger receives the store's rare events (torn tails cut at open, compactions).
	Logger *slog.Logger
}

// DefaultStoreOptions are what OpenShardStore uses: shards up to 64 KiB in 1 GiB volumes, group
// commits that wait up to 1 ms for more records under load.
func DefaultStoreOptions() StoreOptions {
	return StoreOptions{SmallShardMax: smallShard, VolumeSize: 1 << 30, GroupCommitWait: time.Millisecond}
}

// maxGroupCommitWait bounds StoreOptions.GroupCommitWait: every small write under load may wait
// that long.
const maxGroupCommitWait = 100 * time.Millisecond

// Validate reports options the store cannot work with.
func (o StoreOptions) Validate() error {
	if o.SmallShardMax < 0 || o.SmallShardMax > smallShard {
		return fmt.Errorf("small shard maximum %d: want 0 (off) to %d bytes", o.SmallShardMax, smallShard)
	}
	if o.SmallShardMax > 0 && (o.VolumeSize < 1<<20 || o.VolumeSize > maxVolumeSize) {
		return fmt.Errorf("volume size %d: want 1 MiB to %d bytes", o.VolumeSize, int64(maxVolumeSize))
	}
	if o.GroupCommitWait < 0 || o.GroupCommitWait > maxGroupCommitWait {
		return fmt.Errorf("group commit wait %v: want 0 (never) to %v", o.GroupCommitWait, maxGroupCommitWait)
	}
	return nil
}

// OpenShardStore opens the store in dir with DefaultStoreOptions.
func OpenShardStore(dir string) (*ShardStore, error) {
	return OpenShardStoreWith(dir, DefaultStoreOptions())
}

// OpenShardStoreWith creates dir if needed, removes leftover temp files from a crash, and
// rebuilds the index of small shards by scanning the volumes (cutting away a torn tail).
func OpenShardStoreWith(dir string, opts StoreOptions) (*ShardStore, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("shard store: %w", err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &ShardStore{shardsDir: filepath.Join(dir, "shards"), tmpDir: filepath.Join(dir, "tmp")}
	s.directOK.Store(true)
	for _, d := range []string{s.shardsDir, s.tmpDir} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("shard store: %w", err)
		}
	}
	// The start removes everything in tmp: through a symlink that would be another directory's
	// contents (pointed at shards, every committed shard file).
	if fi, err := os.Lstat(s.tmpDir); err != nil {
		return nil, fmt.Errorf("shard store: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("shard store: %s is a %s: it must be a directory of its own, since every start empties it", s.tmpDir, fi.Mode().Type())
	}
	if err := s.removeTempFiles(opts.Logger); err != nil {
		return nil, fmt.Errorf("shard store: remove leftover temp files: %w", err)
	}
	if err := s.checkOneMount(opts.Logger); err != nil {
		return nil, err
	}
	if err := s.migrateLayout(opts.Logger); err != nil {
		return nil, err
	}
	// Volumes are scanned even when small shards are now written as files, so that the shards
	// they hold stay readable.
	volumeSize := opts.VolumeSize
	if opts.SmallShardMax == 0 && (volumeSize < 1<<20 || volumeSize > maxVolumeSize) {
		// Small shards off: volumes still take the tombstones of the shards they hold, and with no
		// size limit every tombstone would start a volume file of its own.
		volumeSize = DefaultStoreOptions().VolumeSize
	}
	vols, err := openVolumeSet(filepath.Join(dir, "volumes"), opts.SmallShardMax, volumeSize, opts.Logger, false)
	if err != nil {
		return nil, fmt.Errorf("shard store: %w", err)
	}
	vols.commitWait = opts.GroupCommitWait
	s.vols = vols
	var used int64
	err = s.walkFiles(func(info ShardInfo) error {
		if _, ok := vols.lookup(info.ID); ok {
			// A file and a record of one id: the record is the newer (a small write over a large
			// shard removes the file after its record is durable; a large write over a record
			// writes a tombstone after its file is), so the file goes.
			return os.Remove(s.Path(info.ID))
		}
		used += info.Size
		return nil
	})
	if err != nil {
		vols.close()
		return nil, err
	}
	s.used.Store(used)
	return s, nil
}

// ListShardsIn lists the committed shards of the store in dir, as List does, without changing
// anything on disk: for tools and tests that look at the disk of a node that may be running. A
// batch being written when it looks is not listed.
func ListShardsIn(dir string, fn func(ShardInfo) error) error {
	vols, err := openVolumeSet(filepath.Join(dir, "volumes"), 0, 0, slog.New(slog.DiscardHandler), true)
	if err != nil {
		return err
	}
	defer vols.closeFiles()
	s := &ShardStore{shardsDir: filepath.Join(dir, "shards"), vols: vols}
	return s.List(fn)
}

// Close waits for the group commit in flight and closes the volume files. Later writes fail
// with ErrStoreClosed; reads of small shards fail.
func (s *ShardStore) Close() {
	s.vols.close()
}

// Path returns where shard id lives (or would live) on disk; for tests that corrupt a shard on purpose.
func (s *ShardStore) Path(id ShardID) string {
	return filepath.Join(s.shardsDir, StoreOrder(id))
}

// StoreOrder is a shard's path relative to the store: a fan-out directory named after the last two
// characters of the file id (the random part; every id starts with the same "FIL"), then the id.
// List visits shards in ascending StoreOrder, so a resumable walk can checkpoint on it.
func StoreOrder(id ShardID) string {
	return id.File[max(0, len(id.File)-2):] + "/" + id.String()
}

// path is Path for ids that must be valid, so that no id can name a file outside the store.
func (s *ShardStore) path(id ShardID) (string, error) {
	if err := id.validate(); err != nil {
		return "", err
	}
	return s.Path(id), nil
}

// ShardWriter streams one shard into a temp file until Commit or Abort. Not safe for concurrent use.
//
// Shards up to 64 KiB are gathered in a pooled buffer and written with one write. Larger ones go through an
// aligned buffer of directChunk bytes that is written with O_DIRECT, as MinIO writes its shards:
// no copy into the page cache, and an fsync that has little left to flush. Where the filesystem
// refuses O_DIRECT (tmpfs, some network filesystems) the store falls back to buffered writes for
// good and DirectIO reports it.
type ShardWriter struct {
	s       *ShardStore
	id      ShardID
	dst     string
	f       *os.File
	done    bool
	small   []byte // pooled smallShard-capacity buffer: the shard so far, while it fits
	big     []byte // aligned pooled buffer of directChunk bytes, once the shard outgrew small
	direct  bool   // f has O_DIRECT set
	failed  error  // a write to f failed; Commit refuses
	written int64  // bytes written to f
}

const (
	// directChunk is the largest O_DIRECT write, and the size of the aligned buffer.
	directChunk = 1 << 20
	// directAlign is the alignment O_DIRECT wants for buffers, offsets and lengths.
	directAlign = 4096
	// smallShard is the buffer a shard starts in; shards that fit are written with one buffered
	// write, larger ones move on to the aligned O_DIRECT buffer.
	smallShard = 64 << 10
)

// Create starts writing a shard. Nothing is visible under id until Commit. The temp file is
// made only once the shard outgrows what a volume record takes. An invalid id, or one whose index
// no geometry has (64 or more), is refused with ErrInvalidShardID.
func (s *ShardStore) Create(id ShardID) (*ShardWriter, error) {
	if err := id.validateNew(); err != nil {
		return nil, err
	}
	return &ShardWriter{s: s, id: id, dst: s.Path(id)}, nil
}

// openTemp creates the writer's temp file.
func (w *ShardWriter) openTemp() error {
	f, err := os.CreateTemp(w.s.tmpDir, w.id.String()+".*")
	if err != nil {
		return w.fail(err)
	}
	w.f = f
	return nil
}

// Write appends p to the shard being written.
func (w *ShardWriter) Write(p []byte) (int, error) {
	if w.done {
		return 0, fmt.Errorf("write shard %s: %w", w.id, os.ErrClosed)
	}
	if w.failed != nil {
		return 0, w.failed
	}
	n := len(p)
	for len(p) > 0 {
		if w.big == nil {
			if w.small == nil {
				w.small = w.s.smallBuffer()
			}
			if len(w.small)+len(p) <= cap(w.small) {
				w.small = append(w.small, p...)
				return n, nil
			}
			w.outgrowSmall()
		}
		c := copy(w.big[len(w.big):cap(w.big)], p)
		w.big, p = w.big[:len(w.big)+c], p[c:]
		if len(w.big) == cap(w.big) {
			if err := w.flush(w.big); err != nil {
				return n - len(p), err
			}
			w.big = w.big[:0]
		}
	}
	return n, nil
}

// ReadFrom copies r into the shard through the writer's own buffers (no extra copy buffer).
func (w *ShardWriter) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	for {
		if w.done {
			return total, fmt.Errorf("write shard %s: %w", w.id, os.ErrClosed)
		}
		if w.failed != nil {
			return total, w.failed
		}
		if w.big == nil {
			if w.small == nil {
				w.small = w.s.smallBuffer()
			}
			if len(w.small) == cap(w.small) {
				w.outgrowSmall()
			}
		}
		buf := &w.small
		if w.big != nil {
			buf = &w.big
		}
		n, err := r.Read((*buf)[len(*buf):cap(*buf)])
		*buf = (*buf)[:len(*buf)+n]
		total += int64(n)
		if w.big != nil && len(w.big) == cap(w.big) {
			if ferr := w.flush(w.big); ferr != nil {
				return total, ferr
			}
			w.big = w.big[:0]
		}
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// outgrowSmall moves the shard from the small buffer to the aligned one.
func (w *ShardWriter) outgrowSmall() {
	w.big = append(w.s.alignedBuffer(), w.small...)
	w.s.putSmall(w.small)
	w.small = nil
}

// flush writes b (a multiple of directAlign bytes, or the tail at Commit) to the file, with
// O_DIRECT when b is aligned and the filesystem allows it.
func (w *ShardWriter) flush(b []byte) error {
	if w.f == nil {
		if err := w.openTemp(); err != nil {
			return err
		}
	}
	if len(b)%directAlign == 0 && w.s.directOK.Load() && !w.direct {
		if err := setDirect(w.f, true); err != nil {
			w.s.refuseDirect(err)
		} else {
			w.direct = true
		}
	}
	if w.direct && len(b)%directAlign != 0 {
		if err := setDirect(w.f, false); err != nil {
			return w.fail(err)
		}
		w.direct = false
	}
	n, err := w.f.Write(b)
	if err != nil && w.direct && errors.Is(err, syscall.EINVAL) && n == 0 {
		// The filesystem took the flag but refuses the write: buffered from now on.
		w.s.refuseDirect(err)
		if err = setDirect(w.f, false); err == nil {
			w.direct = false
			n, err = w.f.Write(b)
		}
	}
	w.written += int64(n)
	if w.direct {
		w.s.directBytes.Add(int64(n))
	} else {
		w.s.bufferedBytes.Add(int64(n))
	}
	if err != nil {
		return w.fail(err)
	}
	return nil
}

func (w *ShardWriter) fail(err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		err = fmt.Errorf("write shard %s: %w: %w", w.id, ErrNoSpace, err)
	} else {
		err = fmt.Errorf("write shard %s: %w", w.id, err)
	}
	w.failed = err
	return err
}

// setDirect turns O_DIRECT on or off for f.
func setDirect(f *os.File, on bool) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		flags, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
		if err != nil {
			serr = err
			return
		}
		if on {
			flags |= unix.O_DIRECT
		} else {
			flags &^= unix.O_DIRECT
		}
		_, serr = unix.FcntlInt(fd, unix.F_SETFL, flags)
	})
	return errors.Join(err, serr)
}

// alignedBuffer returns an empty directAlign-aligned buffer of directChunk capacity from the pool.
func (s *ShardStore) alignedBuffer() []byte {
	if b, ok := s.buffers.Get().(*[]byte); ok {
		return (*b)[:0]
	}
	raw := make([]byte, directChunk+directAlign)
	off := int(uintptr(unsafe.Pointer(&raw[0])) & (directAlign - 1))
	if off != 0 {
		off = directAlign - off
	}
	return raw[off : off : off+directChunk]
}

// smallBuffer returns an empty pooled buffer of smallShard capacity.
func (s *ShardStore) smallBuffer() []byte {
	if b, ok := s.smalls.Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return make([]byte, 0, smallShard)
}

func (s *ShardStore) putSmall(b []byte) {
	if cap(b) == smallShard {
		b = b[:0]
		s.smalls.Put(&b)
	}
}

func (s *ShardStore) putBuffer(b []byte) {
	if cap(b) == directChunk {
		b = b[:0]
		s.buffers.Put(&b)
	}
}

// refuseDirect records that the filesystem refuses O_DIRECT: the store writes buffered from now on.
func (s *ShardStore) refuseDirect(err error) {
	if s.directOK.Swap(false) {
		s.directErr.Store(&err)
	}
}

// DirectIOStats is how a ShardStore writes shards.
type DirectIOStats struct {
	// Enabled is false once the filesystem refused O_DIRECT; Refusal then says how.
	Enabled bool
	Refusal error
	// DirectBytes and BufferedBytes are the shard bytes written each way so far.
	DirectBytes, BufferedBytes int64
}

// DirectIO reports whether shard writes use O_DIRECT and the bytes written each way so far.
func (s *ShardStore) DirectIO() DirectIOStats {
	st := DirectIOStats{Enabled: s.directOK.Load(), DirectBytes: s.directBytes.Load(), BufferedBytes: s.bufferedBytes.Load()}
	if e := s.directErr.Load(); e != nil {
		st.Refusal = *e
	}
	return st
}

// Commit fsyncs the file, renames it into place atomically (replacing an existing shard of that id),
// and fsyncs the directory. After Commit returns nil, the shard survives a crash. After an error
// the temp file is gone and the shard must not be acknowledged: it may be absent, or (if only the
// directory fsync failed) present but not known to be durable.
func (w *ShardWriter) Commit() error {
	if w.done {
		return fmt.Errorf("commit shard %s: %w", w.id, os.ErrClosed)
	}
	if err := w.commit(); err != nil {
		w.Abort()
		return fmt.Errorf("commit shard %s: %w", w.id, err)
	}
	return nil
}

func (w *ShardWriter) commit() error {
	if w.failed != nil {
		return w.failed
	}
	if w.big == nil && w.s.vols.maxShard > 0 && len(w.small) <= w.s.vols.maxShard {
		return w.commitRecord()
	}
	tail := w.small
	if w.big != nil {
		// The aligned part goes out with O_DIRECT, the rest (under 4 KiB) through the page cache.
		aligned := len(w.big) &^ (directAlign - 1)
		if aligned > 0 {
			if err := w.flush(w.big[:aligned]); err != nil {
				return err
			}
		}
		tail = w.big[aligned:]
	}
	if len(tail) > 0 {
		if err := w.flush(tail); err != nil {
			return err
		}
	}
	w.release()
	if w.f == nil { // an empty shard
		if err := w.openTemp(); err != nil {
			return err
		}
	}
	if err := w.f.Sync(); err != nil {
		return err
	}
	fi, err := w.f.Stat()
	if err != nil {
		return err
	}
	if err := w.f.Close(); err != nil {
		return err
	}
	dir := filepath.Dir(w.dst)
	newDir, err := ensureDir(dir)
	if err != nil {
		return err
	}
	if newDir { // the new directory's own entry must be durable too
		if err := syncDir(w.s.shardsDir); err != nil {
			return err
		}
	}

	w.s.mu.Lock()
	var old int64
	if prev, err := os.Stat(w.dst); err == nil {
		old = prev.Size()
	}
	err = os.Rename(w.f.Name(), w.dst)
	if err == nil {
		w.done = true
		w.s.used.Add(fi.Size() - old)
	}
	w.s.mu.Unlock()
	if err != nil {
		return err
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	// An older version of a small shard is a record; it must not shadow this file at the next open.
	_, err = w.s.vols.remove(w.id)
	return err
}

// commitRecord appends the shard to a volume and returns when the group commit covering it is
// durable. A file of the same id (an older, larger version) is removed after that.
func (w *ShardWriter) commitRecord() error {
	_, err := w.s.vols.put(w.id, w.small)
	w.release()
	if err != nil {
		return err
	}
	w.done = true
	return w.s.removeFile(w.id)
}

// removeFile removes shard id's file, if it has one, keeping the used-bytes count exact.
func (s *ShardStore) removeFile(id ShardID) error {
	p := s.Path(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return nil // not a shard the store wrote, and Stat calls it missing
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if fi.Mode().IsRegular() {
		s.used.Add(-fi.Size()) // a symlink's target was never counted
	}
	return nil
}

// Abort removes the temp file. Safe to call after Commit (no-op) and more than once.
func (w *ShardWriter) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.release()
	if w.f != nil {
		w.f.Close()           // the error is moot: the file is being thrown away
		os.Remove(w.f.Name()) // a leftover is removed by the next OpenShardStore
	}
}

// release gives the aligned buffer back to the pool.
func (w *ShardWriter) release() {
	if w.big != nil {
		w.s.putBuffer(w.big)
		w.big = nil
	}
	if w.small != nil {
		w.s.putSmall(w.small)
		w.small = nil
	}
}

// checkOneMount refuses a shards directory on another mount than tmp, and logs each fan-out
// directory that is: a shard file is committed by a rename out of tmp, which fails across
// mounts (EXDEV), even two bind mounts of one filesystem, so every large write there would fail.
// Apart from that, shards and its fan-out directories may be links: the walk follows them.
func (s *ShardStore) checkOneMount(log *slog.Logger) error {
	tmp, err := mountOf(s.tmpDir)
	if err != nil {
		return fmt.Errorf("shard store: %w", err)
	}
	shards, err := mountOf(s.shardsDir)
	if err != nil {
		return fmt.Errorf("shard store: %w", err)
	}
	if shards != tmp {
		return fmt.Errorf("shard store: %s and %s are on different mounts: shard files are committed by a rename from one into the other", s.shardsDir, s.tmpDir)
	}
	dirs, err := s.fanOutDirs()
	if err != nil {
		return fmt.Errorf("shard store: %w", err)
	}
	for _, p := range dirs {
		if m, err := mountOf(p); err == nil && m != tmp {
			log.Error("a fan-out directory is on another mount than tmp (through a link or a mount): large shards of file ids ending in its name cannot be committed there", "dir", p)
		}
	}
	return nil
}

// mount names the mount a path is on: its mount id where the kernel reports one (statx,
// Linux 5.8 and later), else its device.
type mount struct{ id, devMajor, devMinor uint64 }

// mountOf returns the mount that p (followed, if a link) is on.
func mountOf(p string) (mount, error) {
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, p, 0, unix.STATX_MNT_ID, &st); err != nil {
		// No statx (Linux before 4.11: ENOSYS) or a seccomp profile that denies it (EPERM):
		// the device is what stat(2) has.
		var old unix.Stat_t
		if serr := unix.Stat(p, &old); serr != nil {
			return mount{}, &fs.PathError{Op: "stat", Path: p, Err: serr}
		}
		return mount{devMajor: uint64(unix.Major(old.Dev)), devMinor: uint64(unix.Minor(old.Dev))}, nil
	}
	m := mount{devMajor: uint64(st.Dev_major), devMinor: uint64(st.Dev_minor)}
	if st.Mask&unix.STATX_MNT_ID != 0 {
		m.id = st.Mnt_id
	}
	return m, nil
}

// fanOutDirs returns the paths of the store's fan-out directories in lexical order: the entries
// of the shards directory with a fan-out name that are directories or links to one. Any other
// name no layout made (a link named so could lead anywhere), and a dangling link, a loop or a
// link to a file had nothing written through it.
func (s *ShardStore) fanOutDirs() ([]string, error) {
	entries, err := os.ReadDir(s.shardsDir)
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, e := range entries {
		if !isFanOutName(e.Name()) {
			continue
		}
		dir := filepath.Join(s.shardsDir, e.Name())
		if !e.IsDir() {
			if e.Type()&fs.ModeSymlink == 0 {
				continue
			}
			if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
				continue
			}
		}
		dirs = append(dirs, dir)
	}
	return dirs, nil
}

// isFanOutName reports whether name can be a fan-out directory of some layout: the last two
// characters of a file id now, the first two before (one, for a file id of one character).
func isFanOutName(name string) bool {
	return len(name) >= 1 && len(name) <= 2 && isAlnum(name)
}

// removeTempFiles removes the temp files in tmp: uncommitted writes of a previous process,
// which nobody acked. Only what Create's openTemp makes is removed: a regular file named
// <shard id>.<digits>. Anything else in tmp is no temp file of this store and is left (and
// logged): a fan-out directory or volume linked into tmp holds acknowledged shards under their
// own names, and a directory in tmp may be a mount of anything. The names are read a batch at
// a time, so millions of leftovers cost no memory per name.
func (s *ShardStore) removeTempFiles(log *slog.Logger) error {
	d, err := os.Open(s.tmpDir)
	if err != nil {
		return err
	}
	defer d.Close()
	left := 0
	var firstLeft string
	for {
		entries, err := d.ReadDir(256)
		for _, e := range entries {
			if !e.Type().IsRegular() || !isTempName(e.Name()) {
				if left == 0 {
					firstLeft = e.Name()
				}
				left++
				continue
			}
			if err := os.Remove(filepath.Join(s.tmpDir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
	}
	if left > 0 {
		log.Warn("left entries in the temp directory that are not this store's temp files", "dir", s.tmpDir, "entries", left, "first", firstLeft)
	}
	return nil
}

// isTempName reports whether name is one openTemp makes, in this version or an earlier one: a
// file id, a segment and an index, and the random digits os.CreateTemp puts for its "*", joined
// by dots. The numbers are not bounded as ParseShardID bounds them: before 6e33b76 Create took
// any segment or index, and a crashed write of one left such a name.
func isTempName(name string) bool {
	parts := strings.Split(name, ".")
	if len(parts) != 4 || parts[0] == "" || len(parts[0]) > maxFileIDLen || !isAlnum(parts[0]) {
		return false
	}
	for _, digits := range parts[1:] {
		if digits == "" || strings.Trim(digits, "0123456789") != "" {
			return false
		}
	}
	return true
}

// sameFile reports whether paths a and b name one file.
func sameFile(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}

// ensureDir creates dir if missing and reports whether it did.
func ensureDir(dir string) (bool, error) {
	if _, err := os.Stat(dir); err == nil {
		return false, nil
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return false, err
	}
	return true, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// frameStream is the header of a shard followed by a range of its frames, from a shard file (f)
// or from memory (a volume record's body, mem). Read serves any reader. WriteTo is for a copy
// to a connection (the shard RPC server's io.Copy into its response): a file's frames go as one
// copy from the file, which a TCP connection sends with sendfile, and a record's in one write, so
// neither passes through a copy buffer.
type frameStream struct {
	header []byte // what is left of the header
	mem    []byte // a record's frames still to send; used when f is nil
	f      *os.File
	pos, n int64 // f: the offset of the next frame byte, and how many are left
}

func (s *frameStream) Read(p []byte) (int, error) {
	if len(s.header) > 0 {
		k := copy(p, s.header)
		s.header = s.header[k:]
		return k, nil
	}
	if s.f == nil {
		if len(s.mem) == 0 {
			return 0, io.EOF
		}
		k := copy(p, s.mem)
		s.mem = s.mem[k:]
		return k, nil
	}
	if s.n <= 0 {
		return 0, io.EOF
	}
	k, err := s.f.ReadAt(p[:min(int64(len(p)), s.n)], s.pos)
	s.pos += int64(k)
	s.n -= int64(k)
	return k, err
}

func (s *frameStream) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for _, b := range [][]byte{s.header, s.mem} {
		if len(b) == 0 {
			continue
		}
		k, err := w.Write(b)
		total += int64(k)
		if err != nil {
			return total, err
		}
	}
	s.header, s.mem = nil, nil
	if s.f == nil || s.n <= 0 {
		return total, nil
	}
	if _, err := s.f.Seek(s.pos, io.SeekStart); err != nil {
		return total, err
	}
	// A bare *io.LimitedReader of the *os.File is what net's sendfile path recognises.
	k, err := io.Copy(w, &io.LimitedReader{R: s.f, N: s.n})
	s.pos += k
	s.n -= k
	total += k
	if err == nil && s.n > 0 { // the file shrank under the read
		err = io.ErrUnexpectedEOF
	}
	return total, err
}

func (s *frameStream) Close() error {
	if s.f == nil {
		return nil
	}
	return s.f.Close()
}

// OpenFrames returns shard id as readers want it: the shard header (ShardHeaderLen bytes: the
// stored one of a v2 shard, a synthesised v1 header for a shard of the original headerless
// format), then the frame bytes [off, off+n), offsets counted from the first frame; n < 0 means
// to the end of the shard. A missing shard gives an error wrapping ErrShardNotFound, a range not
// inside the shard (a truncated shard, for one) one wrapping ErrInvalidRange.
func (s *ShardStore) OpenFrames(id ShardID, off, n int64) (io.ReadCloser, error) {
	p, err := s.path(id)
	if err != nil {
		return nil, err
	}
	if body, _, found, err := s.vols.read(id); found {
		if err != nil {
			return nil, fmt.Errorf("open shard %s: %w", id, err)
		}
		return recordFrames(id, body, off, n)
	}
	// O_NONBLOCK: a FIFO at a shard's path (no file the store wrote) must fail the read, not
	// block it until some writer opens the FIFO. It makes no difference to a file.
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR) {
		return nil, fmt.Errorf("open shard %s: %w", id, ErrShardNotFound)
	}
	if errors.Is(err, unix.ELOOP) {
		return nil, fmt.Errorf("open shard %s: %w: a symlink, not a file", id, ErrCorrupt)
	}
	if err != nil {
		return nil, fmt.Errorf("open shard %s: %w", id, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open shard %s: %w", id, err)
	}
	if !fi.Mode().IsRegular() {
		// Corrupt, so that the read falls back to parity and heals it: the healed shard's
		// rename replaces whatever is at the path.
		f.Close()
		return nil, fmt.Errorf("open shard %s: %w: a %s, not a file", id, ErrCorrupt, fi.Mode().Type())
	}
	header := make([]byte, ShardHeaderLen)
	hn, err := f.ReadAt(header, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		f.Close()
		return nil, fmt.Errorf("open shard %s: %w", id, err)
	}
	header, base := readerHeader(header[:hn])
	size := fi.Size() - base
	if n < 0 && off >= 0 && off <= size {
		n = size - off
	}
	if off < 0 || n < 0 || off > size-n {
		f.Close()
		return nil, fmt.Errorf("open shard %s frames [%d,+%d) of %d bytes: %w", id, off, n, size, ErrInvalidRange)
	}
	return &frameStream{header: header, f: f, pos: base + off, n: n}, nil
}

// recordFrames is OpenFrames for a shard held in memory (a verified volume record's body).
func recordFrames(id ShardID, body []byte, off, n int64) (io.ReadCloser, error) {
	header, base := readerHeader(body[:min(len(body), ShardHeaderLen)])
	size := int64(len(body)) - base
	if n < 0 && off >= 0 && off <= size {
		n = size - off
	}
	if off < 0 || n < 0 || off > size-n {
		return nil, fmt.Errorf("open shard %s frames [%d,+%d) of %d bytes: %w", id, off, n, size, ErrInvalidRange)
	}
	frames := body[base+off : base+off+n]
	return &frameStream{header: header, mem: frames}, nil
}

// Stat describes a committed shard, or returns an error wrapping ErrShardNotFound.
func (s *ShardStore) Stat(id ShardID) (ShardInfo, error) {
	p, err := s.path(id)
	if err != nil {
		return ShardInfo{}, err
	}
	if e, ok := s.vols.lookup(id); ok {
		return volumeShard{keyOf(id), e}.info(), nil
	}
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR) || err == nil && !fi.Mode().IsRegular() {
		// Nothing, or nothing the store wrote (a directory, a symlink, a file where the
		// fan-out directory should be): missing, so that it is healed.
		return ShardInfo{}, fmt.Errorf("stat shard %s: %w", id, ErrShardNotFound)
	}
	if err != nil {
		return ShardInfo{}, fmt.Errorf("stat shard %s: %w", id, err)
	}
	return ShardInfo{ID: id, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// Delete removes a committed shard; deleting a missing shard is nil, so GC and repair can retry.
// A small shard's tombstone is durable when Delete returns. A shard file's removal is not
// fsynced: a deletion lost in a crash leaves an unreferenced shard that the reconciling GC
// removes again.
func (s *ShardStore) Delete(id ShardID) error {
	if _, err := s.path(id); err != nil {
		return err
	}
	if _, err := s.vols.remove(id); err != nil {
		return fmt.Errorf("delete shard %s: %w", id, err)
	}
	if err := s.removeFile(id); err != nil {
		return fmt.Errorf("delete shard %s: %w", id, err)
	}
	return nil
}

// List calls fn for every committed shard, in ascending StoreOrder, and stops at fn's first
// error, which it returns wrapped. Files whose names are not shard ids are skipped. fn may call
// the store (GC deletes from inside it).
func (s *ShardStore) List(fn func(ShardInfo) error) error {
	small := s.vols.listing()
	var order [128]byte
	emitSmall := func(upTo string) error {
		for {
			next, packed, ok := small.next(order[:0])
			if !ok || upTo != "" && string(next) >= upTo {
				return nil
			}
			if err := fn(small.pop(packed)); err != nil {
				return err
			}
		}
	}
	err := s.walkFiles(func(info ShardInfo) error {
		if err := emitSmall(StoreOrder(info.ID)); err != nil {
			return err
		}
		if _, ok := s.vols.lookup(info.ID); ok {
			return nil // shadowed by its record, which was or will be listed
		}
		return fn(info)
	})
	if err == nil {
		err = emitSmall("")
	}
	if err != nil {
		return fmt.Errorf("list shards: %w", err)
	}
	return nil
}

// walkFiles calls fn for every shard file, in StoreOrder.
func (s *ShardStore) walkFiles(fn func(ShardInfo) error) error {
	return s.eachFanOutFile(func(p string, d fs.DirEntry) error {
		id, perr := ParseShardID(d.Name())
		if perr != nil || p != s.Path(id) {
			return nil
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		return fn(ShardInfo{ID: id, Size: fi.Size(), ModTime: fi.ModTime()})
	})
}

// eachFanOutFile calls fn, in lexical order, for each regular file one level below the shards
// directory: in a fan-out directory, where every layout this store ever had put shard files.
// It follows a symlink at the shards directory or at a fan-out directory, as the reads and writes
// of the shards in it do, so that GC, scrub and UsedBytes see what was written through it.
// Deeper files, and entries that are neither directories nor links to one, are no one's shards.
func (s *ShardStore) eachFanOutFile(fn func(p string, d fs.DirEntry) error) error {
	dirs, err := s.fanOutDirs()
	if err != nil {
		return err
	}
	for _, dir := range dirs {
		entries, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			continue // removed or replaced while walking
		}
		if err != nil {
			return err
		}
		for _, e := range entries {
			if !e.Type().IsRegular() {
				continue
			}
			if err := fn(filepath.Join(dir, e.Name()), e); err != nil {
				return err
			}
		}
	}
	return nil
}

// UsedBytes is the total size of committed shards, computed at open and kept up to date by
// Commit and Delete.
func (s *ShardStore) UsedBytes() int64 {
	s.vols.mu.Lock()
	defer s.vols.mu.Unlock()
	return s.used.Load() + s.vols.used
}

// VolumeStats describes the volumes that hold the store's small shards.
func (s *ShardStore) VolumeStats() VolumeStats { return s.vols.statistics() }

// Compact rewrites each volume whose dead bytes (records deleted or replaced) exceed half of it
// into a new one holding only its live records, and removes the old one, reading at most
// bytesPerSecond. It returns how many volumes it rewrote. Safe to run beside reads and writes.
func (s *ShardStore) Compact(ctx context.Context, bytesPerSecond int64) (int, error) {
	limit := rate.Limit(bytesPerSecond)
	if bytesPerSecond <= 0 {
		limit = rate.Inf
	}
	// A burst of an eighth of a second (at least one whole record, at most 1 MiB).
	burst := int(min(1<<20, max(bytesPerSecond/8, smallShard+16<<10)))
	return s.vols.compact(ctx, rate.NewLimiter(limit, burst))
}

// ShardLocation is where a committed shard's bytes are stored: its own file (Offset 0), or the
// body of a record in a volume file. For tests and tools that inspect or damage shards on purpose.
type ShardLocation struct {
	Path     string
	Offset   int64 // where the shard's bytes start in Path
	Length   int64
	InVolume bool
	// RecordOffset is where the record (header, then the shard's bytes) starts, for InVolume.
	RecordOffset int64
}

// Locate returns where shard id is stored, or an error wrapping ErrShardNotFound.
func (s *ShardStore) Locate(id ShardID) (ShardLocation, error) {
	if path, e, hl, ok := s.vols.locate(id); ok {
		return ShardLocation{Path: path, Offset: int64(e.off) + int64(hl), Length: int64(e.bodyLen), InVolume: true, RecordOffset: int64(e.off)}, nil
	}
	info, err := s.Stat(id)
	if err != nil {
		return ShardLocation{}, err
	}
	return ShardLocation{Path: s.Path(id), Length: info.Size}, nil
}

// FreeBytes is the space available to an unprivileged writer on the filesystem holding the store.
func (s *ShardStore) FreeBytes() (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(s.shardsDir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", s.shardsDir, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// migrateLayout moves shards written under an earlier fan-out (the first two characters of the
// file id) to where Path puts them now. Each move is one atomic rename, so a crash leaves every
// shard either here or there, and the next open finishes the job.
func (s *ShardStore) migrateLayout(log *slog.Logger) error {
	var moves [][2]string
	err := s.eachFanOutFile(func(p string, d fs.DirEntry) error {
		if id, perr := ParseShardID(d.Name()); perr == nil && p != s.Path(id) {
			moves = append(moves, [2]string{p, s.Path(id)})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("shard store: scan for migration: %w", err)
	}
	for _, m := range moves {
		// Something already at the new path (the shard itself, written since, or anything
		// else) wins: a file with a shard's name elsewhere in the tree must not replace it, and
		// must not keep the node from starting. It is left where it is, for an operator.
		if _, err := os.Lstat(m[1]); !errors.Is(err, fs.ErrNotExist) {
			if sameFile(m[0], m[1]) {
				continue // one file seen twice, through a fan-out directory linked to another
			}
			log.Error("not moving a shard file into the fan-out layout: its place is taken", "from", m[0], "to", m[1], "err", err)
			continue
		}
		if err := os.MkdirAll(filepath.Dir(m[1]), 0o750); err != nil {
			log.Error("not moving a shard file into the fan-out layout", "from", m[0], "to", m[1], "err", err)
			continue
		}
		if err := os.Rename(m[0], m[1]); err != nil {
			// EXDEV (a fan-out directory linked to another filesystem), EIO, ...: the shard stays
			// where it is, and is healed from parity at its new place.
			log.Error("not moving a shard file into the fan-out layout", "from", m[0], "to", m[1], "err", err)
		}
	}
	return nil
}
