package erasure

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bits-and-blooms/bloom/v3"
	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"
)

const (
	// maxBatchBytes bounds one group commit: the records appended by one write and covered by one
	// fdatasync. Only the last batch of a volume can be torn by a crash.
	maxBatchBytes = 4 << 20
	// volumeSuffix names a volume file; compactSuffix one being written by compaction.
	volumeSuffix  = ".vol"
	compactSuffix = ".vol.compact"
	// maxVolumeSize keeps every record offset within the index's 32 bits.
	maxVolumeSize = 3 << 30
)

// ErrStoreClosed is returned by writes to a ShardStore after Close.
var ErrStoreClosed = errors.New("shard store closed")

// volumeKey is an index key: a shard id in 24 bytes plus the file id's string bytes.
type volumeKey struct {
	file    string
	segment uint32
	index   uint32
}

func keyOf(id ShardID) volumeKey {
	return volumeKey{file: id.File, segment: uint32(id.Segment), index: uint32(id.Index)}
}

func (k volumeKey) id() ShardID {
	return ShardID{File: k.file, Segment: int(k.segment), Index: int(k.index)}
}

// volumeEntry is where the newest record of a shard lives: 24 bytes per small shard in RAM.
type volumeEntry struct {
	seq     uint64
	vol     uint32
	off     uint32 // record start
	bodyLen uint32
	mtime   uint32 // Unix seconds: the GC's grace period needs no finer
}

// entrySeconds is a write time for the index, rounded up to the second: a shard may look younger
// than it is, never older, so the GC's grace period is never cut short.
func entrySeconds(unixNano int64) uint32 { return uint32((unixNano + 1e9 - 1) / 1e9) }

// recordLen is the length of the whole record of k that e points at in v.
func (v *volume) recordLen(k volumeKey, e volumeEntry) int64 {
	return int64(v.format.recordHeaderLen(len(k.file))) + int64(e.bodyLen)
}

// volume is one volume file. Readers take a reference around their pread, so compaction can
// retire a volume while a read of it is in flight.
type volume struct {
	id      uint32
	path    string
	f       *os.File
	format  volumeFormat // layout and key of its records
	size    int64        // bytes in the file: the next batch goes here
	live    int64        // bytes of records the index points at
	tombs   int64        // bytes of tombstones: not live, but not reclaimable by themselves either
	minSeq  uint64       // lowest sequence number of any record in it (tombstones too)
	refs    int          // readers in flight, plus one while the volume is in the set
	retired bool
	// appending is true while a flusher writes a batch to it; compaction of a volume that was
	// active waits for that batch.
	appending bool
	// ids holds every shard id with a record in the volume, live or dead: compaction drops a
	// tombstone once no other volume may hold a record it covers. Guarded by the set's mu.
	ids *bloom.BloomFilter
	// ix is the volume's index file (volume_index.go) while the volume takes appends; nil once
	// it is sealed (no longer active: the file is closed, one descriptor less per volume) or
	// when it could not be written. Only the flusher appending to the volume touches it, and
	// open, compaction and close, which wait for that flusher; it is set to nil under the set's
	// mu.
	ix *volumeIndexFile
}

// newIDFilter is a volume's id filter, sized for a full volume of 2 KiB records at 1 % false
// positives (about 1.2 bytes per record; a false positive only keeps a tombstone longer).
func newIDFilter(sizeLimit int64) *bloom.BloomFilter {
	return bloom.NewWithEstimates(uint(max(sizeLimit/2048, 1024)), 0.01)
}

// filterKey is k as the id filters see it.
func filterKey(dst []byte, k volumeKey) []byte {
	dst = append(dst[:0], k.file...)
	dst = append(dst, 0)
	dst = binary.BigEndian.AppendUint32(dst, k.segment)
	return binary.BigEndian.AppendUint32(dst, k.index)
}

// volumeSet is the part of a ShardStore that keeps small shards as records in volume files
// (see DESIGN.md, "Small shards: volumes").
type volumeSet struct {
	dir       string
	readOnly  bool
	maxShard  int   // largest shard body stored here
	sizeLimit int64 // a volume at or above this takes no new batch
	log       *slog.Logger

	seq atomic.Uint64 // last sequence number handed out

	mu      sync.Mutex
	index   shardIndex
	vols    map[uint32]*volume
	active  *volume
	nextVol uint32
	used    int64 // bytes of live shard bodies
	closed  bool
	// Group commit: writers queue here; the first one that finds no flusher becomes it.
	pending   []*volumeAppend
	queued    map[volumeKey]int // shard records queued or being written, per id
	flushing  bool
	idle      *sync.Cond // signalled when flushing ends
	batchBuf  []byte     // the flusher's buffer; only the flusher touches it
	indexBuf  []byte     // the flusher's buffer of index file entries
	filterBuf []byte     // a filterKey buffer, under mu
	// commitWait is the longest a flusher waits for more records while they arrive close together
	// (see awaitMore); 0 never waits.
	commitWait     time.Duration
	lastArrival    time.Time     // when the latest record queued
	dense          bool          // the latest two records queued less than commitWait apart
	lastBatchEnd   time.Time     // when the latest group commit finished
	flusherWaiting bool          // a flusher is in awaitMore
	arrived        chan struct{} // capacity 1: wakes the waiting flusher

	compactMu sync.Mutex // one compaction at a time

	stats volumeCounters
}

// volumeCounters are the volume set's cumulative counters.
type volumeCounters struct {
	batches, records, fsyncs   atomic.Int64
	waits, waitNanos           atomic.Int64
	openListed, openScanned    atomic.Int64
	tornBytes, damagedBytes    atomic.Int64
	compactions, reclaimed     atomic.Int64
	compactionBytes, readFails atomic.Int64
}

// volumeAppend is one record waiting for its group commit.
type volumeAppend struct {
	key     volumeKey
	kind    byte
	seq     uint64
	mtime   int64 // Unix nanoseconds
	bodyLen int
	rec     []byte // the encoded record, until it is written
	off     int64  // where the record landed
	done    chan error
	// old is the body length of the entry this record replaced or removed (-1 for none); set by
	// the flusher when it applies the record.
	old int64
}

func volumeName(id uint32) string { return fmt.Sprintf("%08d%s", id, volumeSuffix) }

// openVolumeSet scans every volume in dir and rebuilds the index. A tail that is not a whole,
// valid record (a crash tore the last batch, which nobody was told was durable) is truncated
// away; a damaged record with valid ones after it is skipped. Both are counted and logged.
//
// readOnly changes nothing on disk (for looking at a running node's store): torn tails and
// unfinished compactions are ignored instead of removed, and the set must not be written to.
func openVolumeSet(dir string, maxShard int, sizeLimit int64, log *slog.Logger, readOnly bool) (*volumeSet, error) {
	vs := &volumeSet{
		dir: dir, maxShard: maxShard, sizeLimit: sizeLimit, log: log, readOnly: readOnly,
		index: newShardIndex(0), vols: map[uint32]*volume{}, nextVol: 1,
		queued: map[volumeKey]int{}, arrived: make(chan struct{}, 1),
	}
	vs.idle = sync.NewCond(&vs.mu)
	if !readOnly {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("volumes: %w", err)
		}
	}
	entries, err := os.ReadDir(dir)
	if readOnly && errors.Is(err, os.ErrNotExist) {
		return vs, nil
	}
	if err != nil {
		return nil, fmt.Errorf("volumes: %w", err)
	}
	var ids, indexes []uint32
	fileSizes := map[string]int64{}
	for _, e := range entries {
		name := e.Name()
		switch {
		case (strings.HasSuffix(name, compactSuffix) || strings.HasSuffix(name, indexCompactSuffix)) && !readOnly:
			// A compaction that did not reach its rename: the old volume is still whole.
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return nil, fmt.Errorf("volumes: remove unfinished compaction: %w", err)
			}
		case strings.HasSuffix(name, indexSuffix):
			if !e.Type().IsRegular() {
				// Not one the store wrote (a FIFO would block the load's open and the flusher's
				// writes; a symlink would have its target cut): an index file is a cache, so it goes.
				if !readOnly {
					vs.log.Warn("removing an index file that is not a regular file", "path", filepath.Join(dir, name), "type", e.Type().String())
					os.Remove(filepath.Join(dir, name))
				}
				continue
			}
			if n, err := strconv.ParseUint(strings.TrimSuffix(name, indexSuffix), 10, 32); err == nil {
				indexes = append(indexes, uint32(n))
				if fi, err := e.Info(); err == nil {
					fileSizes[name] = allocatedBytes(fi)
				}
			}
		case strings.HasSuffix(name, volumeSuffix):
			n, err := strconv.ParseUint(strings.TrimSuffix(name, volumeSuffix), 10, 32)
			if err != nil || volumeName(uint32(n)) != name {
				continue
			}
			if n > maxVolumeID {
				// No store gets there (one id per volume written); taking it would wrap nextVol.
				vs.log.Error("ignoring a volume whose id is out of range", "volume", filepath.Join(dir, name))
				continue
			}
			fi, err := os.Stat(filepath.Join(dir, name)) // a symlink to a volume is followed
			if e.Type()&fs.ModeSymlink != 0 {
				// A symlink is taken for a volume elsewhere even when its target is missing (a
				// disk not mounted yet): its id must never go to a new volume, whose rename
				// would replace the link.
				vs.nextVol = max(vs.nextVol, uint32(n)+1)
			}
			if err != nil || !fi.Mode().IsRegular() {
				// Not a volume this store wrote (a directory, FIFO, device, dangling link):
				// skipped, never opened, so it can neither block nor fail the start; its
				// shards, if it had any, are rebuilt by the scrub. It does not advance the
				// next id (a stray name must not use the ids up); a new volume or compaction
				// output that meets its name takes the next free id (takeFreeVolumeID).
				kind := "unreadable"
				if err == nil {
					kind = fi.Mode().Type().String()
				}
				vs.log.Error("skipping a volume that is not a regular file; its shards will be rebuilt", "volume", filepath.Join(dir, name), "type", kind, "err", err)
				continue
			}
			// No later id may be given to a new volume, whatever this file turns out to hold.
			vs.nextVol = max(vs.nextVol, uint32(n)+1)
			ids = append(ids, uint32(n))
			fileSizes[name] = allocatedBytes(fi)
		case strings.HasSuffix(name, volumeSuffix+damagedSuffix):
			// A volume set aside for inspection: a new volume must not take its id, or setting
			// that one aside too would replace the first copy.
			n, err := strconv.ParseUint(strings.TrimSuffix(name, volumeSuffix+damagedSuffix), 10, 32)
			if err == nil && n <= maxVolumeID && volumeName(uint32(n))+damagedSuffix == name {
				vs.nextVol = max(vs.nextVol, uint32(n)+1)
			}
		}
	}
	slices.Sort(ids)
	vs.index = newShardIndex(indexSizeHint(ids, fileSizes))
	tombs := map[volumeKey]uint64{}
	var maxSeq uint64
	for _, id := range ids {
		v, err := vs.scanVolume(id, tombs, &maxSeq)
		if err != nil {
			vs.closeFiles()
			return nil, err
		}
		if v != nil {
			vs.vols[id] = v
		}
	}
	if !readOnly {
		for _, id := range indexes {
			if vs.vols[id] == nil {
				// Its volume was compacted away (or set aside) before the index went too.
				os.Remove(indexPathOf(filepath.Join(dir, volumeName(id))))
			}
		}
	}
	for k, tseq := range tombs {
		if e, ok := vs.index.get(k); ok && e.seq < tseq {
			vs.index.remove(k)
		}
	}
	for k, e := range vs.index.all() {
		v := vs.vols[e.vol]
		v.live += v.recordLen(k, e)
		vs.used += int64(e.bodyLen)
	}
	vs.seq.Store(maxSeq)
	// Keep appending to the newest volume while it has room, as SeaweedFS does; never to one of
	// an older format (a v1 volume has no key, so its records could be forged: see afterDamage).
	if len(ids) > 0 {
		if v := vs.vols[ids[len(ids)-1]]; v != nil && v.size < sizeLimit && v.format.version == volumeFormatCurrent {
			vs.active = v
		}
	}
	for _, v := range vs.vols {
		if v != vs.active {
			v.sealIndex() // the scan has appended what it read; nothing else will
		}
	}
	return vs, nil
}

// indexSizeHint is how many shards the index of volumes ids should expect, from the sizes of
// their files by name (allocatedBytes). Growing the index map entry by entry was 40 % of an open
// from index files (rehashing), so it is sized for the records the index files list: dead ones
// and tombstones included, so an upper bound, as a map that grew by doubling is anyway. Only the
// index file of a volume that exists counts, and for no more than the volume's own length (each
// entry lists a record of its own, longer than the entry) and the largest volume, so stray or
// sparse files cannot make the open allocate beyond what real volumes could hold. It is only a
// hint: too small costs rehashing, nothing else.
func indexSizeHint(ids []uint32, fileSizes map[string]int64) int {
	var n int64
	for _, id := range ids {
		name := volumeName(id)
		n += min(fileSizes[indexPathOf(name)], fileSizes[name], maxVolumeSize+maxBatchBytes) / indexEntryTypicalLen
	}
	return int(n)
}

// allocatedBytes is what fi's file really takes on disk: its length, or less for a sparse file.
func allocatedBytes(fi os.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return min(fi.Size(), st.Blocks*512)
	}
	return fi.Size()
}

// scanVolume reads volume id from start to end, adding its records to the index (the highest
// sequence number of an id wins; on a tie, as after a compaction that crashed before removing
// its source, the later volume) and its tombstones to tombs.
func (vs *volumeSet) scanVolume(id uint32, tombs map[volumeKey]uint64, maxSeq *uint64) (*volume, error) {
	path := filepath.Join(vs.dir, volumeName(id))
	flag := os.O_RDWR
	if vs.readOnly {
		// O_NONBLOCK: a FIFO put at the name since the open listed it must not block a
		// read-only open (O_RDWR does not block on one). No effect on a file.
		flag = os.O_RDONLY | unix.O_NONBLOCK
	}
	f, err := os.OpenFile(path, flag, 0)
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.EISDIR) || errors.Is(err, unix.ENXIO) || errors.Is(err, unix.ELOOP) {
		// Removed or replaced since the open listed it (a compaction retired it, for a
		// read-only listing; a stray swap otherwise): skipped as the listing would have.
		vs.log.Error("skipping a volume that is gone or not a regular file; its shards will be rebuilt", "volume", path, "err", err)
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("volumes: open %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("volumes: %w", err)
	}
	if !fi.Mode().IsRegular() { // replaced since the open listed it
		f.Close()
		vs.log.Error("skipping a volume that is not a regular file; its shards will be rebuilt", "volume", path, "type", fi.Mode().Type().String())
		return nil, nil
	}
	size := fi.Size()
	hdr := make([]byte, maxVolumeHeaderLen)
	hn, _ := f.ReadAt(hdr, 0)
	got, format, err := parseVolumeHeader(hdr[:hn])
	if err != nil || got != id {
		f.Close()
		if vs.readOnly {
			return nil, nil // being created, or damaged: the store's own open deals with it
		}
		os.Remove(indexPathOf(path)) // lists records of a volume that is not there any more
		if size <= maxVolumeHeaderLen {
			// Created but never synced with a record in it (creation syncs the header before the
			// first batch): nothing acknowledged lives here.
			vs.log.Warn("removing an empty volume with a torn header", "volume", path, "bytes", size)
			vs.stats.tornBytes.Add(size)
			return nil, os.Remove(path)
		}
		// One bad header must not keep the node from starting: the volume is set aside for
		// inspection, and its shards are missing until the scrub rebuilds them from parity.
		vs.log.Error("setting aside a volume whose header is damaged; its shards will be rebuilt", "volume", path, "bytes", size)
		vs.stats.damagedBytes.Add(size)
		if err := os.Rename(path, path+damagedSuffix); err != nil {
			return nil, fmt.Errorf("volumes: set aside %s: %w", path, err)
		}
		return nil, nil
	}
	v := &volume{id: id, path: path, f: f, format: format, refs: 1, minSeq: ^uint64(0), ids: newIDFilter(vs.sizeLimit)}
	var fk []byte
	add := func(kind byte, k volumeKey, seq uint64, off, n int64, bodyLen int, mtime uint32) {
		*maxSeq = max(*maxSeq, seq)
		v.minSeq = min(v.minSeq, seq)
		if kind == recordTomb {
			tombs[k] = max(tombs[k], seq)
			v.tombs += n
		} else {
			fk = filterKey(fk, k)
			v.ids.Add(fk)
		}
		if old, ok := vs.index.get(k); kind == recordShard && (!ok || seq >= old.seq) {
			vs.index.set(k, volumeEntry{seq: seq, vol: id, off: uint32(off), bodyLen: uint32(bodyLen), mtime: mtime})
		}
	}
	// The records the index file lists are taken from it; the volume is read from the end of
	// the last of them, and what is read there is appended to the index file.
	volHeader := bytes.Clone(hdr[:format.headerLen()])
	listed := 0
	ixEnd, pos, err := loadIndex(path, id, volHeader, format, size, func(e indexEntry) {
		add(e.kind, e.key, e.seq, e.off, e.recordLen(format), e.bodyLen, e.mtime)
		listed++
	})
	if err != nil {
		vs.log.Warn("cannot read a volume's index file; scanning the volume", "volume", path, "err", err)
	}
	vs.stats.openListed.Add(int64(listed))
	if !vs.readOnly {
		if v.ix, err = openIndexForAppend(path, id, volHeader, ixEnd, pos); err != nil {
			vs.log.Warn("cannot write a volume's index file; the next start scans the volume", "volume", path, "err", err)
		}
	}
	var ixBuf []byte
	volumeSynced := false
	flushIndex := func(end int64) {
		if v.ix == nil || len(ixBuf) == 0 {
			return
		}
		// A listed record must be durable (the invariant of index files): what the scan read may
		// be only in the page cache, after a crash between a batch's write and its fdatasync.
		if !volumeSynced {
			if err := unix.Fdatasync(int(f.Fd())); err != nil {
				vs.log.Warn("cannot sync a volume before listing its records; the next start scans them", "volume", path, "err", err)
				ixBuf = ixBuf[:0]
				return
			}
			volumeSynced = true
		}
		if err := v.ix.add(ixBuf, end); err != nil {
			vs.log.Warn("cannot write a volume's index file; the next start scans the volume", "volume", path, "err", err)
			v.ix.drop()
			v.ix = nil
		}
		ixBuf = ixBuf[:0]
	}
	listedEnd := pos
	r := bufio.NewReaderSize(io.NewSectionReader(f, pos, size-pos), 1<<20)
	var buf []byte
	for pos < size {
		var rec volumeRecord
		var n int64
		var err error
		if pos >= maxRecordStart {
			err = errBeyondRecords
		} else {
			rec, n, err = readRecord(r, format, &buf)
		}
		if err != nil {
			next, verdict := size, tornTail // past maxRecordStart: bytes this store never wrote
			if pos < maxRecordStart {
				next, verdict = format.afterDamage(f, pos, n, size)
			}
			if verdict != resumeAt && vs.readOnly {
				break // a batch being written, or a torn tail the store cuts at its next open
			}
			if verdict == quarantineRest {
				vs.log.Error("not indexing the rest of a v1 volume after damage (its records could be forged); shards there are healed from parity",
					"volume", path, "at", pos, "bytes", size-pos, "err", err)
				vs.stats.damagedBytes.Add(size - pos)
				break
			}
			if verdict == tornTail {
				vs.log.Warn("truncating a torn volume tail (an unacknowledged batch)", "volume", path, "at", pos, "bytes", size-pos, "err", err)
				vs.stats.tornBytes.Add(size - pos)
				if err := f.Truncate(pos); err != nil {
					f.Close()
					return nil, fmt.Errorf("volumes: truncate %s: %w", path, err)
				}
				if err := unix.Fdatasync(int(f.Fd())); err != nil {
					f.Close()
					return nil, fmt.Errorf("volumes: sync %s: %w", path, err)
				}
				size = pos
				break
			}
			vs.log.Error("skipping damaged bytes inside a volume; shards there are healed from parity", "volume", path, "at", pos, "bytes", next-pos, "err", err)
			vs.stats.damagedBytes.Add(next - pos)
			pos = next
			r.Reset(io.NewSectionReader(f, pos, size-pos))
			continue
		}
		k := keyOf(rec.id)
		add(rec.kind, k, rec.seq, pos, n, rec.bodyLen, entrySeconds(rec.mtime))
		vs.stats.openScanned.Add(1)
		if v.ix != nil {
			ixBuf = appendIndexEntry(ixBuf, indexEntry{kind: rec.kind, key: k, seq: rec.seq, off: pos, bodyLen: rec.bodyLen, mtime: entrySeconds(rec.mtime)})
		}
		pos += n
		listedEnd = pos
		if len(ixBuf) >= 1<<20 {
			flushIndex(listedEnd)
		}
	}
	flushIndex(listedEnd)
	v.size = size
	return v, nil
}

// readRecord reads and fully verifies the next record of a volume of format f from r, returning
// it and its length. On an error, a length above zero says the header was authentic and the
// record spans that many bytes (only its body is damaged, or cut short).
func readRecord(r *bufio.Reader, f volumeFormat, buf *[]byte) (volumeRecord, int64, error) {
	fixed, err := r.Peek(recordFixedLen)
	if err != nil {
		return volumeRecord{}, 0, fmt.Errorf("%w: %v", errBadRecord, err)
	}
	hl := f.recordHeaderLen(int(fixed[6]))
	h, err := r.Peek(hl)
	if err != nil {
		return volumeRecord{}, 0, fmt.Errorf("%w: %v", errBadRecord, err)
	}
	rec, err := f.parseRecordHeader(h)
	if err != nil {
		return volumeRecord{}, 0, err
	}
	n := int64(hl + rec.bodyLen)
	if _, err := r.Discard(hl); err != nil {
		return volumeRecord{}, n, err
	}
	*buf = slices.Grow((*buf)[:0], rec.bodyLen)[:rec.bodyLen]
	if _, err := io.ReadFull(r, *buf); err != nil {
		return volumeRecord{}, n, fmt.Errorf("%w: body cut short: %v", errBadRecord, err)
	}
	if !rec.bodyOK(*buf) {
		return volumeRecord{}, n, fmt.Errorf("%w: body checksum mismatch", errBadRecord)
	}
	return rec, n, nil
}

// damageVerdict is what a walk over a volume's records does after bytes that are not a valid
// record.
type damageVerdict int

const (
	// resumeAt: go on at the offset returned with it; the bytes before it are damage.
	resumeAt damageVerdict = iota
	// tornTail: nothing valid follows; the bytes are the unacknowledged tail of a crash.
	tornTail
	// quarantineRest: stop; nothing after this point can be trusted as a record.
	quarantineRest
)

// afterDamage decides where a walk over volume file goes on after the bytes at pos failed to read
// as a record (authentic is readRecord's length: above zero when the header was authentic and
// only the body was damaged). A volume's records may hold any bytes a client uploaded, so the
// walk never takes a record from inside another record's span on the strength of a checksum a
// client can compute:
//   - in a v2 volume, the bytes are looked past for the next record whose tag verifies under the
//     volume's key, which no client knows: a record found that way is one this store wrote (it
//     may even start inside the damaged record's span, when the file was cut short behind the
//     store's back and a batch appended at its new end). None: a torn tail;
//   - in a v1 volume (unkeyed), nothing found by looking can be trusted. A damaged record whose
//     header is authentic is skipped by its own length, which leads to the next record the
//     writer put there (a record reaching the end of the file is the torn tail). Otherwise, if
//     nothing that looks valid follows, the bytes are a torn tail as before; if something does,
//     it may be a record a client forged inside its own upload, so the rest of the volume is
//     quarantined: not indexed, left on disk, its shards missing until the scrub rebuilds them
//     from parity.
func (f volumeFormat) afterDamage(file *os.File, pos, authentic, size int64) (int64, damageVerdict) {
	if f.version == VolumeFormatV1 && authentic > 0 {
		if pos+authentic >= size {
			return size, tornTail
		}
		return pos + authentic, resumeAt
	}
	next := findRecord(file, f, pos+1, size)
	switch {
	case next < 0:
		return size, tornTail
	case f.version == VolumeFormatV1:
		return size, quarantineRest
	}
	return next, resumeAt
}

// findRecord returns the offset of the first whole, valid record of format f at or after from,
// or -1.
func findRecord(file *os.File, f volumeFormat, from, size int64) int64 {
	const window = 1 << 20
	buf := make([]byte, window+recordFixedLen)
	var body []byte
	// No record starts at or past maxRecordStart: a volume extended by a hole of terabytes (a
	// stray truncate, a sparse copy) is read up to there, not to its end. Holes are read, not
	// skipped with SEEK_DATA: a filesystem that reports dirty data as a hole (OpenZFS before
	// 2.2.2) would make acknowledged records look like a torn tail, and the tail is cut.
	end := min(size, maxRecordStart)
	for at := from; at < end; at += window {
		n, _ := file.ReadAt(buf, at)
		for i := 0; i < min(n, window); i++ {
			j := bytes.Index(buf[i:n], recordMagic[:])
			if j < 0 || i+j >= window {
				break
			}
			i += j
			cand := at + int64(i)
			if cand >= end {
				return -1
			}
			r := bufio.NewReader(io.NewSectionReader(file, cand, size-cand))
			if _, _, err := readRecord(r, f, &body); err == nil {
				return cand
			}
		}
	}
	return -1
}

// sealIndex closes v's index file, which stays on disk for the next open: v takes no more
// appends. The caller holds the set's mu or is the only one using the set.
func (v *volume) sealIndex() {
	if v.ix != nil {
		v.ix.f.Close()
		v.ix = nil
	}
}

// closeFiles closes every volume file (a failed open).
func (vs *volumeSet) closeFiles() {
	for _, v := range vs.vols {
		v.f.Close()
		v.sealIndex()
	}
}

// noSpace marks a full filesystem's error as ErrNoSpace, which callers answer as "disk full".
func noSpace(err error) error {
	if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) {
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	}
	return err
}

// createVolume makes a new, empty volume durable: header written and synced, directory synced.
func (vs *volumeSet) createVolume(id uint32, suffix string) (*volume, error) {
	path := filepath.Join(vs.dir, volumeName(id))
	if suffix != volumeSuffix {
		path = strings.TrimSuffix(path, volumeSuffix) + suffix
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create volume: %w", noSpace(err))
	}
	format := newV2Format(newVolumeKey())
	header := format.appendVolumeHeader(nil, id, time.Now())
	_, err = f.Write(header)
	if err == nil {
		err = unix.Fdatasync(int(f.Fd()))
	}
	if err == nil {
		err = syncDir(vs.dir)
	}
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("create volume %s: %w", path, noSpace(err))
	}
	v := &volume{id: id, path: path, f: f, format: format, size: format.headerLen(), refs: 1, minSeq: ^uint64(0), ids: newIDFilter(vs.sizeLimit)}
	if v.ix, err = openIndexForAppend(path, id, header, 0, v.size); err != nil {
		vs.log.Warn("cannot write a volume's index file; the next start scans the volume", "volume", path, "err", err)
	}
	return v, nil
}

// put stores body as the newest version of id and returns once the fdatasync that covers it
// has returned. old is the body length of the version it replaced, or -1.
func (vs *volumeSet) put(id ShardID, body []byte) (old int64, err error) {
	return vs.append(id, recordShard, body)
}

// remove writes a tombstone for id and drops it from the index, once the tombstone is durable.
// old is the body length of the removed version, or -1 when there was none. No tombstone is
// written when the volumes neither hold id nor have a write of it in flight: a delete that
// overtakes a commit of the same shard still wins, as it would have, had it come a moment later.
func (vs *volumeSet) remove(id ShardID) (old int64, err error) {
	k := keyOf(id)
	vs.mu.Lock()
	_, ok := vs.index.get(k)
	ok = ok || vs.queued[k] > 0
	vs.mu.Unlock()
	if !ok {
		return -1, nil
	}
	return vs.append(id, recordTomb, nil)
}

func (vs *volumeSet) append(id ShardID, kind byte, body []byte) (int64, error) {
	now := time.Now()
	req := &volumeAppend{key: keyOf(id), kind: kind, mtime: now.UnixNano(), bodyLen: len(body), done: make(chan error, 1), old: -1}
	// Encoded in the current layout; the flusher seals it with the key of the volume it lands in.
	layout := volumeFormat{version: volumeFormatCurrent}
	req.rec = layout.appendUnsealed(make([]byte, 0, layout.recordHeaderLen(len(id.File))+len(body)), kind, id, 0, now, body)
	vs.mu.Lock()
	if vs.closed {
		vs.mu.Unlock()
		return -1, ErrStoreClosed
	}
	// Numbered in queue order, under mu: the flusher applies records in that order, and the scan
	// at open lets the highest number win, so both must agree on which of two racing records of
	// one id (a put and a tombstone) is the later.
	req.seq = vs.seq.Add(1)
	setRecordSeq(req.rec, req.seq)
	vs.pending = append(vs.pending, req)
	// now was taken before the lock, so two racing writers may see a negative gap: close together.
	vs.dense = !vs.lastArrival.IsZero() && now.Sub(vs.lastArrival) < vs.commitWait
	vs.lastArrival = now
	if vs.flusherWaiting {
		vs.wakeFlusher()
	}
	if kind == recordShard {
		vs.queued[req.key]++
	}
	lead := !vs.flushing
	vs.flushing = true
	vs.mu.Unlock()
	if lead {
		vs.flush()
	}
	err := <-req.done
	return req.old, err
}

// flush writes one batch of pending records with one write and one fdatasync, applies them to
// the index, and wakes their writers. If more records queued meanwhile, a new flusher takes
// them, so no writer waits behind more than the batch ahead of it.
func (vs *volumeSet) flush() {
	vs.awaitMore()
	vs.mu.Lock()
	var batch []*volumeAppend
	size := 0
	for len(vs.pending) > 0 && (len(batch) == 0 || size+len(vs.pending[0].rec) <= maxBatchBytes) {
		size += len(vs.pending[0].rec)
		batch = append(batch, vs.pending[0])
		vs.pending[0] = nil
		vs.pending = vs.pending[1:]
	}
	v := vs.active
	if v != nil {
		v.appending = true
	}
	vs.mu.Unlock()

	end, err := vs.writeBatch(&v, batch)

	vs.mu.Lock()
	var drop *volume
	if err == nil {
		v.size = end
		vs.applyBatch(v, batch)
	} else if v != nil && vs.active == v {
		vs.active = nil // a failed write or sync leaves the volume suspect: the next batch starts a new one
		if v.size == v.format.headerLen() && v.refs == 1 {
			// It holds no record (new, or rotated to for this batch): remove it, or each failed
			// batch on a full disk leaves one more empty volume file and descriptor behind.
			delete(vs.vols, v.id)
			v.retired = true
			drop = v
		} else {
			v.sealIndex()
		}
	}
	if v != nil {
		v.appending = false
		vs.idle.Broadcast()
	}
	for _, req := range batch {
		if req.kind == recordShard {
			if vs.queued[req.key]--; vs.queued[req.key] == 0 {
				delete(vs.queued, req.key)
			}
		}
	}
	vs.lastBatchEnd = time.Now()
	more := len(vs.pending) > 0
	if !more {
		vs.flushing = false
		vs.idle.Broadcast()
	}
	vs.mu.Unlock()
	if drop != nil {
		if drop.ix != nil {
			drop.ix.drop()
		}
		drop.f.Close()
		if rerr := os.Remove(drop.path); rerr != nil {
			vs.log.Warn("could not remove an empty volume after a failed group commit", "volume", drop.path, "err", rerr)
		}
	}
	for _, req := range batch {
		req.done <- err
	}
	if more {
		go vs.flush()
	}
}

// groupCommitEnough is the batch a group commit stops waiting at: past it, the fdatasync's CPU
// (about 150 µs here) is under 20 µs per record, a tenth of what the rest of a small write costs.
const groupCommitEnough = 8

// awaitMore lets a batch grow while writes arrive close together. If the latest two records
// queued less than commitWait apart, or the previous group commit ended less than commitWait ago
// (records queued while it was syncing), the flusher waits until groupCommitEnough records are
// pending, commitWait has passed, or the set closes, before it takes them: one fdatasync then
// covers the records of writers that were a fraction of a millisecond behind, where each would
// otherwise have paid for its own. MySQL's binlog_group_commit_sync_delay and
// binlog_group_commit_sync_no_delay_count are the same pair of bounds. A writer whose previous
// record queued longer ago than that, as a lone client's does, is flushed at once, and a batch
// that is already big enough does not wait. No writer is acknowledged before its record's
// fdatasync either way.
func (vs *volumeSet) awaitMore() {
	if vs.commitWait <= 0 {
		return
	}
	vs.mu.Lock()
	start := time.Now()
	busy := vs.dense || (!vs.lastBatchEnd.IsZero() && start.Sub(vs.lastBatchEnd) < vs.commitWait)
	if !busy || vs.closed {
		vs.mu.Unlock()
		return
	}
	deadline := start.Add(vs.commitWait)
	vs.flusherWaiting = true
	var timer *time.Timer
	for len(vs.pending) < groupCommitEnough && !vs.closed {
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		vs.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(left)
		} else {
			timer.Reset(left)
		}
		select {
		case <-vs.arrived:
		case <-timer.C:
		}
		vs.mu.Lock()
	}
	vs.flusherWaiting = false
	vs.mu.Unlock()
	if timer != nil {
		timer.Stop()
	}
	vs.stats.waits.Add(1)
	vs.stats.waitNanos.Add(int64(time.Since(start)))
}

// maxVolumeID is the highest volume id: one id per volume written, so no store gets near it,
// and nextVol (one more) cannot wrap to an id in use.
const maxVolumeID = 1<<32 - 2

// takeVolumeID returns the id for a new volume. The caller holds vs.mu.
func (vs *volumeSet) takeVolumeID() (uint32, error) {
	if vs.nextVol > maxVolumeID {
		return 0, fmt.Errorf("volumes: no volume id left after %d", vs.nextVol-1)
	}
	id := vs.nextVol
	vs.nextVol++
	return id, nil
}

// takeFreeVolumeID takes the next id whose volume name nothing holds: the open skips names that
// are not regular files (a directory, a FIFO) without counting their ids, and a new volume must
// neither fail on one (its create is O_EXCL) nor replace one (a compaction's final rename).
func (vs *volumeSet) takeFreeVolumeID() (uint32, error) {
	for range maxTakenVolumeNames {
		vs.mu.Lock()
		id, err := vs.takeVolumeID()
		vs.mu.Unlock()
		if err != nil {
			return 0, err
		}
		if _, err := os.Lstat(filepath.Join(vs.dir, volumeName(id))); errors.Is(err, fs.ErrNotExist) {
			return id, nil
		}
		vs.log.Error("a volume's name is taken by something the store did not write; trying the next id", "volume", filepath.Join(vs.dir, volumeName(id)))
	}
	return 0, errTakenVolumeNames
}

// maxTakenVolumeNames is how many taken names in a row a new volume skips before giving up.
const maxTakenVolumeNames = 16

var errTakenVolumeNames = fmt.Errorf("volumes: %d volume names in a row are taken by files the store did not write", maxTakenVolumeNames)

// createNextVolume creates a volume under the next id whose name nothing holds.
func (vs *volumeSet) createNextVolume() (*volume, error) {
	id, err := vs.takeFreeVolumeID()
	if err != nil {
		return nil, err
	}
	return vs.createVolume(id, volumeSuffix)
}

const damagedSuffix = ".damaged"

// wakeFlusher tells a flusher in awaitMore to look at the queue again.
func (vs *volumeSet) wakeFlusher() {
	select {
	case vs.arrived <- struct{}{}:
	default:
	}
}

// writeBatch appends the batch to *v (rotating to a new volume when *v is nil or full) and
// syncs it, returning the volume's new end. On failure the volume is cut back to where the
// batch began.
func (vs *volumeSet) writeBatch(v **volume, batch []*volumeAppend) (int64, error) {
	if *v == nil || (*v).size >= vs.sizeLimit || (*v).format.version != volumeFormatCurrent {
		vs.mu.Lock()
		if *v != nil {
			(*v).sealIndex() // full, or of an older format: it takes no more appends
			(*v).appending = false
		}
		vs.mu.Unlock()
		nv, err := vs.createNextVolume()
		if err != nil {
			return 0, err
		}
		id := nv.id
		vs.mu.Lock()
		nv.appending = true
		vs.vols[id] = nv
		vs.active = nv
		vs.idle.Broadcast()
		vs.mu.Unlock()
		*v = nv
	}
	buf := vs.batchBuf[:0]
	for _, req := range batch {
		(*v).format.seal(req.rec, req.key.id())
		buf = append(buf, req.rec...)
	}
	vs.batchBuf = buf
	f := (*v).f
	// The end of the file, not a remembered size: a file cut short behind the store's back must
	// not leave a hole that the next open reads as damage in the middle.
	end, err := f.Seek(0, io.SeekEnd)
	if err == nil {
		_, err = f.WriteAt(buf, end)
	}
	if err == nil {
		vs.stats.fsyncs.Add(1)
		err = unix.Fdatasync(int(f.Fd()))
	}
	if err != nil {
		_ = f.Truncate(end) // best effort: an unsynced record must not surface at the next open
		return 0, fmt.Errorf("append to volume %s: %w", (*v).path, noSpace(err))
	}
	off := end
	for _, req := range batch {
		req.off = off
		off += int64(len(req.rec))
		req.rec = nil
	}
	vs.indexBatch(*v, batch, end, off)
	vs.stats.batches.Add(1)
	vs.stats.records.Add(int64(len(batch)))
	return off, nil
}

// indexBatch appends the durable batch, written to v from start to end, to v's index file. The
// file must stay a prefix of v's records: if v was cut short behind the store's back (the batch
// starts before the last record listed) or the write fails, the index file goes, and the next
// start scans v.
func (vs *volumeSet) indexBatch(v *volume, batch []*volumeAppend, start, end int64) {
	if v.ix == nil {
		return
	}
	if start < v.ix.covered {
		vs.log.Warn("a volume is shorter than its index file says; dropping the index file", "volume", v.path, "end", start, "listed", v.ix.covered)
		v.ix.drop()
		v.ix = nil
		return
	}
	buf := vs.indexBuf[:0]
	for _, req := range batch {
		buf = appendIndexEntry(buf, indexEntry{kind: req.kind, key: req.key, seq: req.seq, off: req.off, bodyLen: req.bodyLen, mtime: entrySeconds(req.mtime)})
	}
	vs.indexBuf = buf
	if err := v.ix.add(buf, end); err != nil {
		vs.log.Warn("cannot write a volume's index file; the next start scans the volume", "volume", v.path, "err", err)
		v.ix.drop()
		v.ix = nil
	}
}

// applyBatch points the index at the batch's records, in sequence order per id. Caller holds mu.
func (vs *volumeSet) applyBatch(v *volume, batch []*volumeAppend) {
	for _, req := range batch {
		v.minSeq = min(v.minSeq, req.seq)
		old, had := vs.index.get(req.key)
		if had && old.seq > req.seq {
			if req.kind == recordTomb {
				v.tombs += int64(v.format.recordHeaderLen(len(req.key.file)))
			} else {
				vs.filterBuf = filterKey(vs.filterBuf, req.key)
				v.ids.Add(vs.filterBuf)
			}
			continue // a newer version was applied first: this record is dead on arrival
		}
		if had {
			req.old = int64(old.bodyLen)
			vs.used -= int64(old.bodyLen)
			if ov := vs.vols[old.vol]; ov != nil {
				ov.live -= ov.recordLen(req.key, old)
			}
			vs.index.remove(req.key)
		}
		if req.kind == recordTomb {
			v.tombs += int64(v.format.recordHeaderLen(len(req.key.file)))
		} else {
			vs.filterBuf = filterKey(vs.filterBuf, req.key)
			v.ids.Add(vs.filterBuf)
			e := volumeEntry{seq: req.seq, vol: v.id, off: uint32(req.off), bodyLen: uint32(req.bodyLen), mtime: entrySeconds(req.mtime)}
			vs.index.set(req.key, e)
			vs.used += int64(e.bodyLen)
			v.live += v.recordLen(req.key, e)
		}
	}
}

// lookup returns the entry of id, if the volumes hold it.
func (vs *volumeSet) lookup(id ShardID) (volumeEntry, bool) {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	return vs.index.get(keyOf(id))
}

// locate returns the file holding id's record, the record's index entry and its header length.
// Both lookups happen under one lock: between two, a compaction can move the record into a new
// volume and retire the old one.
func (vs *volumeSet) locate(id ShardID) (path string, e volumeEntry, headerLen int, ok bool) {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	e, ok = vs.index.get(keyOf(id))
	if !ok {
		return "", volumeEntry{}, 0, false
	}
	v := vs.vols[e.vol]
	if v == nil {
		return "", volumeEntry{}, 0, false
	}
	return v.path, e, v.format.recordHeaderLen(len(id.File)), true
}

// read returns the whole body of id's record, verified against its record header (identity,
// length, body checksum). found is false when the volumes do not hold id. A record that does
// not verify, or lies past the end of its file, is an error wrapping ErrInvalidRange: the shard
// is there but wrong, so readers count it corrupt and heal it.
func (vs *volumeSet) read(id ShardID) (body []byte, e volumeEntry, found bool, err error) {
	k := keyOf(id)
	vs.mu.Lock()
	e, ok := vs.index.get(k)
	var v *volume
	if ok {
		v = vs.vols[e.vol]
		ok = v != nil
	}
	if ok {
		v.refs++
	}
	vs.mu.Unlock()
	if !ok {
		return nil, e, false, nil
	}
	defer vs.release(v)
	hl := v.format.recordHeaderLen(len(k.file))
	buf := make([]byte, hl+int(e.bodyLen))
	n, rerr := v.f.ReadAt(buf, int64(e.off))
	if rerr != nil && !errors.Is(rerr, io.EOF) {
		return nil, e, true, fmt.Errorf("read shard %s from %s: %w", id, v.path, rerr)
	}
	bad := func(why string) ([]byte, volumeEntry, bool, error) {
		vs.stats.readFails.Add(1)
		return nil, e, true, fmt.Errorf("%w: shard %s in %s at %d: %s (%w)", ErrCorrupt, id, v.path, e.off, why, ErrInvalidRange)
	}
	if n < len(buf) {
		return bad("record cut short")
	}
	rec, err := v.format.parseRecordHeader(buf)
	switch {
	case err != nil:
		return bad(err.Error())
	case rec.kind != recordShard || rec.id != id || rec.seq != e.seq || rec.bodyLen != int(e.bodyLen):
		return bad(fmt.Sprintf("record names shard %s seq %d", rec.id, rec.seq))
	case !rec.bodyOK(buf[hl:]):
		return bad("body checksum mismatch")
	}
	return buf[hl:], e, true, nil
}

// release drops a reader's reference; the last one closes a retired volume.
func (vs *volumeSet) release(v *volume) {
	vs.mu.Lock()
	v.refs--
	closeIt := v.refs == 0 && v.retired
	vs.mu.Unlock()
	if closeIt {
		v.f.Close()
	}
}

// volumeShard is one index entry, as List hands it out.
type volumeShard struct {
	key   volumeKey
	entry volumeEntry
}

func (s volumeShard) info() ShardInfo {
	return ShardInfo{ID: s.key.id(), Size: int64(s.entry.bodyLen), ModTime: time.Unix(int64(s.entry.mtime), 0)}
}

// close stops new writes and waits for the batch in flight.
func (vs *volumeSet) close() {
	vs.mu.Lock()
	vs.closed = true
	vs.wakeFlusher()
	for vs.flushing {
		vs.idle.Wait()
	}
	vs.mu.Unlock()
	vs.compactMu.Lock() // wait for a compaction in flight; closed stops the next one
	defer vs.compactMu.Unlock()
	vs.mu.Lock()
	defer vs.mu.Unlock()
	for _, v := range vs.vols {
		v.retired = true
		v.refs--
		if v.refs == 0 {
			v.f.Close()
		}
		v.sealIndex()
	}
}

// VolumeStats describes the volume files that hold a store's small shards.
type VolumeStats struct {
	Volumes int
	// Shards is the number of indexed small shards; IndexBytes the RAM their index takes (an
	// estimate: entries times the measured bytes per entry, plus the volumes' id filters).
	Shards     int
	IndexBytes int64
	// FileBytes is the size of all volume files, LiveBytes the part the index points at.
	FileBytes, LiveBytes int64
	// Batches and Records count group commits and the records they wrote (Records / Batches is
	// the mean batch); Fsyncs the fdatasyncs they issued.
	Batches, Records, Fsyncs int64
	// Waits counts the group commits that waited for more records (StoreOptions.GroupCommitWait),
	// WaitTime the time they waited in all.
	Waits    int64
	WaitTime time.Duration
	// OpenListed counts the records the last open took from index files, OpenScanned those it
	// read from the volumes themselves (volumes without an index file, and records past the end
	// of one).
	OpenListed, OpenScanned int64
	// TornBytes were cut from volume tails at open (unacknowledged batches of a crash);
	// DamagedBytes skipped inside volumes at open; CorruptReads records that failed verification.
	TornBytes, DamagedBytes, CorruptReads int64
	// Compactions, ReclaimedBytes and CompactionBytes are compaction's work so far: volumes
	// rewritten, bytes freed, bytes copied.
	Compactions, ReclaimedBytes, CompactionBytes int64
}

// indexEntryBytes and indexEntryBytesUnpacked are the measured RAM per index entry
// (TestVolumeIndexBytesPerEntry), in the middle of the swing of a map's load: for minted file
// ids, packed, the map slot of key and entry (63-101 bytes); for other ids (24 characters), the
// map slot and the file id's bytes (97-141).
const (
	indexEntryBytes         = 82
	indexEntryBytesUnpacked = 119
)

func (vs *volumeSet) statistics() VolumeStats {
	vs.mu.Lock()
	st := VolumeStats{Volumes: len(vs.vols), Shards: vs.index.len()}
	index := int64(len(vs.index.packed))*indexEntryBytes + int64(len(vs.index.other))*indexEntryBytesUnpacked
	for _, v := range vs.vols {
		st.FileBytes += v.size
		st.LiveBytes += v.live
		index += int64(v.ids.Cap() / 8) // the id filter
	}
	vs.mu.Unlock()
	st.IndexBytes = index
	c := &vs.stats
	st.Batches, st.Records, st.Fsyncs = c.batches.Load(), c.records.Load(), c.fsyncs.Load()
	st.Waits, st.WaitTime = c.waits.Load(), time.Duration(c.waitNanos.Load())
	st.OpenListed, st.OpenScanned = c.openListed.Load(), c.openScanned.Load()
	st.TornBytes, st.DamagedBytes, st.CorruptReads = c.tornBytes.Load(), c.damagedBytes.Load(), c.readFails.Load()
	st.Compactions, st.ReclaimedBytes, st.CompactionBytes = c.compactions.Load(), c.reclaimed.Load(), c.compactionBytes.Load()
	return st
}

// compact rewrites every sealed volume whose dead bytes exceed half of it, reading and writing
// at most limit's rate. See DESIGN.md for why each step is safe against a crash.
func (vs *volumeSet) compact(ctx context.Context, limit *rate.Limiter) (int, error) {
	vs.compactMu.Lock()
	defer vs.compactMu.Unlock()
	done := 0
	// A volume that fails (a live record in it unreadable until healed) is passed over for the
	// rest of this pass, so the others still get their space back; its error is returned.
	failed := map[uint32]bool{}
	var firstErr error
	for {
		vs.mu.Lock()
		if vs.closed {
			vs.mu.Unlock()
			return done, firstErr
		}
		var pick *volume
		var pickDead int64
		for _, v := range vs.vols {
			if failed[v.id] {
				continue
			}
			dead := v.size - v.format.headerLen() - v.live - v.tombs
			// The active volume qualifies too (a store that never fills a volume must still get
			// its space back), but only once its dead part is worth a new volume file.
			if v == vs.active && dead < min(1<<20, vs.sizeLimit/4) {
				continue
			}
			if dead > v.size/2 && dead > pickDead {
				pick, pickDead = v, dead
			}
		}
		if pick != nil && pick == vs.active {
			// Seal it: the next batch starts a new volume; wait for the batch being written to it.
			vs.active = nil
			for pick.appending {
				vs.idle.Wait()
			}
			pick.sealIndex()
		}
		vs.mu.Unlock()
		if pick == nil {
			return done, firstErr
		}
		if err := vs.compactOne(ctx, pick, limit); err != nil {
			if ctx.Err() != nil {
				return done, err
			}
			failed[pick.id] = true
			firstErr = cmp.Or(firstErr, err)
			continue
		}
		done++
	}
}

// compactOne copies v's live records and its still-needed tombstones into a new volume written
// under a temporary name, syncs it, renames it into place, switches the index, and removes v.
func (vs *volumeSet) compactOne(ctx context.Context, v *volume, limit *rate.Limiter) error {
	newID, err := vs.takeFreeVolumeID()
	if err != nil {
		return err
	}
	// A tombstone must stay while another volume may hold an older record of its id: one whose
	// lowest sequence number is below the tombstone's and whose id filter may hold the id.
	// Records appended meanwhile are newer than every tombstone in v and need none of them.
	var fk []byte
	tombNeeded := func(k volumeKey, seq uint64) bool {
		fk = filterKey(fk, k)
		vs.mu.Lock()
		defer vs.mu.Unlock()
		for _, o := range vs.vols {
			if o != v && o.minSeq < seq && o.ids.Test(fk) {
				return true
			}
		}
		return false
	}

	nv, err := vs.createVolume(newID, compactSuffix)
	if err != nil {
		return err
	}
	tmp := nv.path
	dropIndex := func() {
		if nv.ix != nil {
			nv.ix.drop()
			nv.ix = nil
		}
	}
	fail := func(err error) error {
		nv.f.Close()
		os.Remove(tmp)
		dropIndex()
		return fmt.Errorf("compact %s: %w", v.path, err)
	}
	// The new volume's index file is written as its records are; it is not needed for
	// correctness, so failing to write it only drops it.
	var ixBuf []byte
	flushIndex := func(end int64) {
		if nv.ix != nil && len(ixBuf) > 0 {
			if err := nv.ix.add(ixBuf, end); err != nil {
				vs.log.Warn("cannot write a volume's index file; the next start scans the volume", "volume", tmp, "err", err)
				dropIndex()
			}
		}
		ixBuf = ixBuf[:0]
	}
	type moved struct {
		key      volumeKey
		from, to uint32
		seq      uint64
	}
	var moves []moved
	out := nv.format.headerLen()
	w := bufio.NewWriterSize(io.NewOffsetWriter(nv.f, out), 1<<20)
	start := v.format.headerLen()
	r := bufio.NewReaderSize(io.NewSectionReader(v.f, start, v.size-start), 1<<20)
	var body []byte
	for pos := start; pos < v.size; {
		rec, n, err := readRecord(r, v.format, &body)
		if err != nil {
			// Damaged bytes: skipped, as at open, by the same rules. If a live record was among
			// them, the check before the rename below refuses to drop it.
			next, verdict := v.format.afterDamage(v.f, pos, n, v.size)
			if verdict != resumeAt {
				break
			}
			pos = next
			r.Reset(io.NewSectionReader(v.f, pos, v.size-pos))
			continue
		}
		if err := limit.WaitN(ctx, min(int(n), limit.Burst())); err != nil {
			return fail(err)
		}
		k := keyOf(rec.id)
		keep := rec.kind == recordTomb && tombNeeded(k, rec.seq)
		if rec.kind == recordShard {
			vs.mu.Lock()
			e, ok := vs.index.get(k)
			vs.mu.Unlock()
			keep = ok && e.vol == v.id && int64(e.off) == pos
		}
		if keep {
			rb := nv.format.appendRecord(nil, rec.kind, rec.id, rec.seq, time.Unix(0, rec.mtime), body)
			if _, err := w.Write(rb); err != nil {
				return fail(err)
			}
			if rec.kind == recordShard {
				moves = append(moves, moved{key: k, from: uint32(pos), to: uint32(out), seq: rec.seq})
				fk = filterKey(fk, k)
				nv.ids.Add(fk) // nv is not in the set yet: no other goroutine sees its filter
			} else {
				nv.tombs += int64(len(rb))
			}
			nv.minSeq = min(nv.minSeq, rec.seq)
			if nv.ix != nil {
				ixBuf = appendIndexEntry(ixBuf, indexEntry{kind: rec.kind, key: k, seq: rec.seq, off: out, bodyLen: rec.bodyLen, mtime: entrySeconds(rec.mtime)})
			}
			out += int64(len(rb))
			if len(ixBuf) >= 1<<20 {
				flushIndex(out)
			}
		}
		pos += n
	}
	if err := w.Flush(); err != nil {
		return fail(err)
	}
	flushIndex(out)
	// Every record of v that is still live must have been copied; one that could not be read is
	// left where it is, for a read or the scrub to find corrupt and heal, before v can go.
	vs.mu.Lock()
	var copied int64
	for _, m := range moves {
		if e, ok := vs.index.get(m.key); ok && e.vol == v.id && e.off == m.from {
			copied += v.recordLen(m.key, e)
		}
	}
	uncopied := v.live - copied
	vs.mu.Unlock()
	if uncopied > 0 {
		return fail(fmt.Errorf("%d bytes of live records are unreadable; compaction waits until they are healed", uncopied))
	}
	if len(moves) == 0 && out == nv.format.headerLen() {
		// Nothing left to keep: the old volume simply goes.
		nv.f.Close()
		dropIndex()
		if err := os.Remove(tmp); err != nil {
			return fmt.Errorf("compact %s: %w", v.path, err)
		}
		return vs.retire(v, 0)
	}
	if err := unix.Fdatasync(int(nv.f.Fd())); err != nil {
		return fail(err)
	}
	nv.size = out
	final := filepath.Join(vs.dir, volumeName(newID))
	if err := os.Rename(tmp, final); err != nil {
		return fail(err)
	}
	nv.path = final
	if nv.ix != nil {
		if err := os.Rename(nv.ix.path, indexPathOf(final)); err != nil {
			vs.log.Warn("cannot rename a compacted volume's index file; the next start scans the volume", "volume", final, "err", err)
			dropIndex()
		} else {
			nv.ix.path = indexPathOf(final)
		}
	}
	nv.sealIndex() // a compacted volume takes no appends
	// From here a crash leaves both volumes; the scan at open keeps the later copy of each
	// record (same sequence number), and v's bytes are then all dead and compacted next time.
	if err := syncDir(vs.dir); err != nil {
		return fmt.Errorf("compact %s: %w", v.path, err)
	}
	vs.mu.Lock()
	vs.vols[newID] = nv
	for _, m := range moves {
		if e, ok := vs.index.get(m.key); ok && e.vol == v.id && e.off == m.from && e.seq == m.seq {
			e.vol, e.off = newID, m.to
			vs.index.set(m.key, e)
			nv.live += nv.recordLen(m.key, e)
		}
	}
	vs.mu.Unlock()
	vs.log.Info("compacted a volume", "from", filepath.Base(v.path), "to", filepath.Base(final), "bytes_before", v.size, "bytes_after", out, "records_kept", len(moves))
	return vs.retire(v, out)
}

// retire takes v out of the set (readers in flight keep its file open until they finish),
// removes its file and counts a compaction that left kept bytes.
func (vs *volumeSet) retire(v *volume, kept int64) error {
	vs.mu.Lock()
	delete(vs.vols, v.id)
	v.retired = true
	v.refs--
	closeIt := v.refs == 0
	vs.mu.Unlock()
	if closeIt {
		v.f.Close()
	}
	if err := os.Remove(v.path); err != nil {
		return fmt.Errorf("compact: remove %s: %w", v.path, err)
	}
	if v.ix != nil {
		v.ix.drop()
		v.ix = nil
	} else {
		os.Remove(indexPathOf(v.path))
	}
	if err := syncDir(vs.dir); err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	vs.stats.compactions.Add(1)
	vs.stats.reclaimed.Add(v.size - kept)
	vs.stats.compactionBytes.Add(kept)
	return nil
}
