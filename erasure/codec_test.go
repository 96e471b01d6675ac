package erasure

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

const testBlockSize = 4096

var testGeometries = []Geometry{{Data: 2, Parity: 1}, {Data: 3, Parity: 2}, {Data: 4, Parity: 2}}

// memSource serves shards from memory; a nil shard is missing. It records every OpenShard and
// checks that every stream it hands out is closed.
type memSource struct {
	shards [][]byte

	mu       sync.Mutex
	opens    []openCall
	unclosed int
}

type openCall struct {
	index  int
	off, n int64
}

func newMemSource(shards [][]byte) *memSource {
	return &memSource{shards: shards}
}

func (m *memSource) OpenShard(ctx context.Context, index int, off, n int64) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.opens = append(m.opens, openCall{index, off, n})
	s := m.shards[index]
	if s == nil {
		return nil, fmt.Errorf("shard %d: %w", index, ErrShardNotFound)
	}
	// As ShardStore.OpenFrames: the header, then frames [off, off+n).
	header, base := readerHeader(s[:min(len(s), ShardHeaderLen)])
	frames := s[base:]
	if off < 0 || n < 0 || off+n > int64(len(frames)) {
		return nil, fmt.Errorf("shard %d [%d,+%d) of %d: %w", index, off, n, len(frames), ErrInvalidRange)
	}
	m.unclosed++
	return &memStream{Reader: io.MultiReader(bytes.NewReader(header), bytes.NewReader(frames[off:off+n])), m: m}, nil
}

func (m *memSource) checkClosed(t *testing.T) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.unclosed != 0 {
		t.Errorf("%d shard streams left open", m.unclosed)
	}
}

type memStream struct {
	io.Reader
	m      *memSource
	closed bool
}

func (s *memStream) Close() error {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	if !s.closed {
		s.closed = true
		s.m.unclosed--
	}
	return nil
}

// testSeg is the segment the single-segment tests encode and read.
var testSeg = SegmentID{File: "FILtest", Segment: 0}

// encodeSegment encodes data as testSeg.
func encodeSegment(t testing.TB, c *Codec, data []byte) [][]byte {
	return encodeSegmentAs(t, c, testSeg, data)
}

// encodeSegmentAs encodes data into k+m shards the way a writer does: the header, then block by
// block, appending frame i to shard i.
func encodeSegmentAs(t testing.TB, c *Codec, seg SegmentID, data []byte) [][]byte {
	t.Helper()
	shards := make([][]byte, c.g.Total())
	for i := range shards {
		shards[i] = AppendShardHeader(nil, seg.Shard(i))
	}
	enc := c.NewBlockEncoder()
	defer c.PutBlockEncoder(enc)
	enc.Start(seg)
	for off := 0; off < len(data); off += c.BlockSize() {
		frames, err := enc.Encode(data[off:min(off+c.BlockSize(), len(data))])
		if err != nil {
			t.Fatal(err)
		}
		for i, f := range frames {
			shards[i] = append(shards[i], f...)
		}
	}
	for i, s := range shards {
		if want := testShardSize(int64(len(data)), c.BlockSize(), c.g); int64(len(s)) != want {
			t.Fatalf("shard %d is %d bytes, ShardSize says %d", i, len(s), want)
		}
	}
	return shards
}

// span is the range of data bytes of one segment within its file.
type span struct {
	Offset, Length int64
}

// segmentSpans cuts a file of fileSize bytes into segments of at most blockSize*blocksPerSegment
// bytes, as uploads do.
func segmentSpans(fileSize int64, blockSize, blocksPerSegment int) []span {
	segSize := int64(blockSize) * int64(blocksPerSegment)
	var spans []span
	for off := int64(0); off < fileSize; off += segSize {
		spans = append(spans, span{Offset: off, Length: min(segSize, fileSize-off)})
	}
	return spans
}

// testShardSize is the byte size of one shard of a segment holding segLen data bytes: the header
// and every frame.
func testShardSize(segLen int64, blockSize int, g Geometry) int64 {
	l := newSegmentLayout(segLen, blockSize, g)
	_, n := l.shardRange(0, l.blocks-1)
	return ShardHeaderLen + n
}

// encodeFile encodes every segment of data, segment s as {testSeg.File, s}.
func encodeFile(t testing.TB, c *Codec, data []byte, blocksPerSegment int) ([]span, [][][]byte) {
	spans := segmentSpans(int64(len(data)), c.BlockSize(), blocksPerSegment)
	segs := make([][][]byte, len(spans))
	for s, sp := range spans {
		segs[s] = encodeSegmentAs(t, c, SegmentID{File: testSeg.File, Segment: s}, data[sp.Offset:sp.Offset+sp.Length])
	}
	return spans, segs
}

// readFile reads [off, off+n) of a file through ReadSegment, segment by segment.
func readFile(ctx context.Context, c *Codec, spans []span, srcs []*memSource, off, n int64) ([]byte, []ShardFault, error) {
	var buf bytes.Buffer
	var faults []ShardFault
	for s, sp := range spans {
		lo, hi := max(off, sp.Offset), min(off+n, sp.Offset+sp.Length)
		if lo >= hi {
			continue
		}
		f, err := c.ReadSegment(ctx, &buf, SegmentID{File: testSeg.File, Segment: s}, sp.Length, lo-sp.Offset, hi-lo, srcs[s])
		faults = append(faults, f...)
		if err != nil {
			return buf.Bytes(), faults, err
		}
	}
	return buf.Bytes(), faults, nil
}

func randomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// subsets returns every subset of {0..n-1} with 1..max elements.
func subsets(n, max int) [][]int {
	var out [][]int
	for mask := 1; mask < 1<<n; mask++ {
		var s []int
		for i := range n {
			if mask&(1<<i) != 0 {
				s = append(s, i)
			}
		}
		if len(s) <= max {
			out = append(out, s)
		}
	}
	return out
}

type lossMode int

const (
	lossMissing lossMode = iota
	lossCorrupt
	lossMixed // even positions missing, odd corrupt
)

func (m lossMode) String() string { return [...]string{"missing", "corrupt", "mixed"}[m] }

// damage returns copies of shards with the shards in lost removed or corrupted by one flipped
// byte. With flipWithin > 0 the flip lands in the shard's first flipWithin bytes (block 0's frame,
// so that every reader opening the shard sees it); otherwise it lands anywhere.
func damage(rng *rand.Rand, shards [][]byte, lost []int, mode lossMode, flipWithin int) (out [][]byte, corrupt map[int]bool) {
	out = slices.Clone(shards)
	corrupt = make(map[int]bool)
	for pos, i := range lost {
		if mode == lossMissing || mode == lossMixed && pos%2 == 0 {
			out[i] = nil
			continue
		}
		s := slices.Clone(shards[i])
		limit := len(s)
		if flipWithin > 0 {
			limit = min(limit, flipWithin)
		}
		s[rng.IntN(limit)] ^= 1 << rng.IntN(8)
		out[i] = s
		corrupt[i] = true
	}
	return out, corrupt
}

func TestCodecRoundTripWithLosses(t *testing.T) {
	const perSeg = 4
	sizes := []int{0, 1, testBlockSize - 1, testBlockSize, testBlockSize + 1, 3*testBlockSize + 17, 9*testBlockSize + 100}
	for _, g := range testGeometries {
		c, err := NewCodec(g, testBlockSize)
		if err != nil {
			t.Fatal(err)
		}
		for _, size := range sizes {
			t.Run(fmt.Sprintf("%s/%d", g, size), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(size), uint64(g.Total())))
				data := randomBytes(rng, size)
				spans, segs := encodeFile(t, c, data, perSeg)
				if size == 0 && len(spans) != 0 {
					t.Fatalf("0-byte file has %d segments", len(spans))
				}
				for _, lost := range subsets(g.Total(), g.Parity+1) {
					for _, mode := range []lossMode{lossMissing, lossCorrupt, lossMixed} {
						name := fmt.Sprintf("lost %v %s", lost, mode)
						unrecoverable := len(lost) > g.Parity
						srcs := make([]*memSource, len(segs))
						corrupt := make([]map[int]bool, len(segs))
						for s, shards := range segs {
							flipWithin := 0
							if unrecoverable {
								flipWithin = ChunkLen(int(min(spans[s].Length, testBlockSize)), g) + crcLen
							}
							var damaged [][]byte
							damaged, corrupt[s] = damage(rng, shards, lost, mode, flipWithin)
							srcs[s] = newMemSource(damaged)
						}
						got, faults, err := readFile(t.Context(), c, spans, srcs, 0, int64(size))
						for _, src := range srcs {
							src.checkClosed(t)
						}
						if unrecoverable {
							if size > 0 && !errors.Is(err, ErrUnrecoverable) {
								t.Fatalf("%s: err = %v, want ErrUnrecoverable", name, err)
							}
							continue
						}
						if err != nil {
							t.Fatalf("%s: %v", name, err)
						}
						if !bytes.Equal(got, data) {
							t.Fatalf("%s: read back %d bytes that differ from the %d written", name, len(got), len(data))
						}
						checkFaults(t, name, faults, lost, g, corrupt, size > 0)
					}
				}
			})
		}
	}
}

// checkFaults asserts every fault names a lost shard with the right kind, and that every lost data
// shard was reported (data shards are always read).
func checkFaults(t *testing.T, name string, faults []ShardFault, lost []int, g Geometry, corrupt []map[int]bool, read bool) {
	t.Helper()
	seen := make(map[int]bool)
	for _, f := range faults {
		if !slices.Contains(lost, f.Index) {
			t.Fatalf("%s: fault on healthy shard %d: %v", name, f.Index, f.Err)
		}
		if f.Err == nil {
			t.Fatalf("%s: fault on shard %d without an error", name, f.Index)
		}
		// Corruption is per segment but identical in kind across segments.
		if f.Corrupt != corrupt[0][f.Index] || f.Corrupt != errors.Is(f.Err, ErrCorrupt) {
			t.Fatalf("%s: fault on shard %d: Corrupt=%v, err %v", name, f.Index, f.Corrupt, f.Err)
		}
		if !f.Corrupt && !errors.Is(f.Err, ErrShardNotFound) {
			t.Fatalf("%s: missing shard %d reported as %v", name, f.Index, f.Err)
		}
		seen[f.Index] = true
	}
	if !read {
		return
	}
	for _, i := range lost {
		if i < g.Data && !seen[i] {
			t.Fatalf("%s: lost data shard %d not reported (faults %v)", name, i, faults)
		}
	}
}

func TestReadSegmentRanges(t *testing.T) {
	const perSeg = 3
	for _, g := range testGeometries {
		c, err := NewCodec(g, testBlockSize)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(7, uint64(g.Total())))
		size := 7*testBlockSize + 333 // three segments, the last one short
		data := randomBytes(rng, size)
		spans, segs := encodeFile(t, c, data, perSeg)
		tests := []struct {
			name string
			lost []int
			mode lossMode
		}{
			{name: "healthy"},
			{name: "one data shard missing", lost: []int{0}, mode: lossMissing},
			{name: "data and parity corrupt", lost: []int{g.Data - 1, g.Total() - 1}[:g.Parity], mode: lossCorrupt},
		}
		for _, tt := range tests {
			t.Run(g.String()+"/"+tt.name, func(t *testing.T) {
				for range 200 {
					off := rng.Int64N(int64(size) + 1)
					n := rng.Int64N(int64(size) - off + 1)
					if rng.IntN(4) == 0 { // favour small ranges around block edges
						n = min(rng.Int64N(3*testBlockSize/2), int64(size)-off)
					}
					srcs := make([]*memSource, len(segs))
					for s, shards := range segs {
						damaged, _ := damage(rng, shards, tt.lost, tt.mode, 0)
						srcs[s] = newMemSource(damaged)
					}
					got, _, err := readFile(t.Context(), c, spans, srcs, off, n)
					if err != nil {
						t.Fatalf("read [%d,+%d): %v", off, n, err)
					}
					if !bytes.Equal(got, data[off:off+n]) {
						t.Fatalf("read [%d,+%d): wrong bytes", off, n)
					}
					for s, src := range srcs {
						src.checkClosed(t)
						if tt.lost == nil {
							checkHealthyOpens(t, src, spans[s], off, n, g)
						}
					}
				}
			})
		}
	}
}

// checkHealthyOpens asserts a healthy read opened exactly the k data shards, once each, over
// exactly the frames of the blocks overlapping the range.
func checkHealthyOpens(t *testing.T, src *memSource, sp span, off, n int64, g Geometry) {
	t.Helper()
	lo, hi := max(off, sp.Offset)-sp.Offset, min(off+n, sp.Offset+sp.Length)-sp.Offset
	if lo >= hi {
		if len(src.opens) != 0 {
			t.Fatalf("segment at %d outside the range was opened: %v", sp.Offset, src.opens)
		}
		return
	}
	frame := int64(ChunkLen(testBlockSize, g) + crcLen)
	first, last := lo/testBlockSize, (hi-1)/testBlockSize
	lastLen := min(int64(testBlockSize), sp.Length-last*testBlockSize)
	wantOff := first * frame
	wantN := last*frame + int64(ChunkLen(int(lastLen), g)+crcLen) - wantOff
	if len(src.opens) != g.Data {
		t.Fatalf("healthy read opened %v, want the %d data shards", src.opens, g.Data)
	}
	for i, o := range src.opens {
		if (o != openCall{index: i, off: wantOff, n: wantN}) {
			t.Fatalf("open %d = %+v, want shard %d [%d,+%d)", i, o, i, wantOff, wantN)
		}
	}
}

func TestReadSegmentSwitchesMidStream(t *testing.T) {
	g := Geometry{Data: 4, Parity: 2}
	c, err := NewCodec(g, testBlockSize)
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(rand.New(rand.NewPCG(1, 2)), 4*testBlockSize)
	shards := encodeSegment(t, c, data)
	frame := int64(ChunkLen(testBlockSize, g) + crcLen)
	shards[1] = slices.Clone(shards[1])
	shards[1][ShardHeaderLen+2*frame+5] ^= 0xff // block 2 of data shard 1 rots
	src := newMemSource(shards)
	var buf bytes.Buffer
	faults, err := c.ReadSegment(t.Context(), &buf, testSeg, int64(len(data)), 0, int64(len(data)), src)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), data) {
		t.Fatal("wrong bytes")
	}
	if len(faults) != 1 || faults[0].Index != 1 || !faults[0].Corrupt {
		t.Fatalf("faults = %+v, want one corrupt fault on shard 1", faults)
	}
	want := openCall{index: g.Data, off: 2 * frame, n: 2 * frame}
	if got := src.opens[len(src.opens)-1]; len(src.opens) != g.Data+1 || got != want {
		t.Fatalf("opens = %+v, want the data shards then %+v", src.opens, want)
	}
}

func TestReadSegmentErrors(t *testing.T) {
	c, err := NewCodec(Geometry{Data: 2, Parity: 1}, testBlockSize)
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(rand.New(rand.NewPCG(3, 4)), 2*testBlockSize)
	shards := encodeSegment(t, c, data)
	segLen := int64(len(data))
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		off, n  int64
		w       io.Writer
		wantErr error
	}{
		{name: "range past end", ctx: t.Context(), off: 1, n: segLen, w: io.Discard, wantErr: ErrInvalidRange},
		{name: "negative offset", ctx: t.Context(), off: -1, n: 1, w: io.Discard, wantErr: ErrInvalidRange},
		{name: "canceled", ctx: canceled, off: 0, n: segLen, w: io.Discard, wantErr: context.Canceled},
		{name: "writer fails", ctx: t.Context(), off: 0, n: segLen, w: failWriter{}, wantErr: errWrite},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newMemSource(shards)
			_, err := c.ReadSegment(tt.ctx, tt.w, testSeg, segLen, tt.off, tt.n, src)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			src.checkClosed(t)
		})
	}
	t.Run("empty range reads nothing", func(t *testing.T) {
		src := newMemSource(shards)
		faults, err := c.ReadSegment(t.Context(), io.Discard, testSeg, segLen, 5, 0, src)
		if err != nil || faults != nil || len(src.opens) != 0 {
			t.Fatalf("faults %v, err %v, opens %v; want nothing", faults, err, src.opens)
		}
	})
}

var errWrite = errors.New("write failed")

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errWrite }

func TestReadSegmentConcurrent(t *testing.T) {
	g := Geometry{Data: 3, Parity: 2}
	c, err := NewCodec(g, testBlockSize)
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(rand.New(rand.NewPCG(5, 6)), 5*testBlockSize+9)
	shards := encodeSegment(t, c, data)
	shards[0] = nil
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			var buf bytes.Buffer
			if _, err := c.ReadSegment(t.Context(), &buf, testSeg, int64(len(data)), 0, int64(len(data)), newMemSource(shards)); err != nil {
				errs <- err
			} else if !bytes.Equal(buf.Bytes(), data) {
				errs <- errors.New("wrong bytes")
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestRebuildShard(t *testing.T) {
	for _, g := range testGeometries {
		c, err := NewCodec(g, testBlockSize)
		if err != nil {
			t.Fatal(err)
		}
		for _, size := range []int{1, testBlockSize, 3*testBlockSize + 17} {
			data := randomBytes(rand.New(rand.NewPCG(uint64(size), 9)), size)
			shards := encodeSegment(t, c, data)
			for index := range g.Total() {
				// Besides the shard being rebuilt, lose up to m-1 others, the last one by corruption.
				for _, others := range subsets(g.Total(), g.Parity-1) {
					if slices.Contains(others, index) {
						continue
					}
					t.Run(fmt.Sprintf("%s/%d/shard %d/lost %v", g, size, index, others), func(t *testing.T) {
						src := slices.Clone(shards)
						src[index] = nil
						for n, i := range others {
							if n == len(others)-1 {
								src[i] = slices.Clone(src[i])
								src[i][len(src[i])-1] ^= 1
							} else {
								src[i] = nil
							}
						}
						var buf bytes.Buffer
						ms := newMemSource(src)
						if _, err := c.RebuildShard(t.Context(), &buf, testSeg, int64(size), index, ms); err != nil {
							t.Fatal(err)
						}
						ms.checkClosed(t)
						if !bytes.Equal(buf.Bytes(), shards[index]) {
							t.Fatal("rebuilt shard differs from the original")
						}
					})
				}
			}
		}
	}
	t.Run("too many lost", func(t *testing.T) {
		g := Geometry{Data: 2, Parity: 1}
		c, err := NewCodec(g, testBlockSize)
		if err != nil {
			t.Fatal(err)
		}
		shards := encodeSegment(t, c, []byte("hello"))
		shards[1] = nil
		if _, err := c.RebuildShard(t.Context(), io.Discard, testSeg, 5, 0, newMemSource(shards)); !errors.Is(err, ErrUnrecoverable) {
			t.Fatalf("err = %v, want ErrUnrecoverable", err)
		}
	})
}

func TestVerifyShard(t *testing.T) {
	g := Geometry{Data: 3, Parity: 2}
	c, err := NewCodec(g, testBlockSize)
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(rand.New(rand.NewPCG(11, 12)), 2*testBlockSize+100)
	segLen := int64(len(data))
	shards := encodeSegment(t, c, data)
	shard, sibling := shards[4], shards[3]
	foreign := encodeSegmentAs(t, c, SegmentID{File: "FILother", Segment: 0}, data)[4]
	frame := ChunkLen(testBlockSize, g) + crcLen
	// Blocks 0 and 1 are full, so their frames have the same length and can trade places.
	swapped := slices.Clone(shard)
	copy(swapped[ShardHeaderLen:], shard[ShardHeaderLen+frame:ShardHeaderLen+2*frame])
	copy(swapped[ShardHeaderLen+frame:], shard[ShardHeaderLen:ShardHeaderLen+frame])
	flip := func(at int) []byte {
		s := slices.Clone(shard)
		s[at] ^= 0x10
		return s
	}
	tests := []struct {
		name    string
		shard   []byte
		wantErr error
	}{
		{name: "healthy", shard: shard},
		{name: "flip in header", shard: flip(20), wantErr: ErrCorrupt},
		{name: "flip in first chunk", shard: flip(ShardHeaderLen), wantErr: ErrCorrupt},
		{name: "flip in crc", shard: flip(ShardHeaderLen + frame - 1), wantErr: ErrCorrupt},
		{name: "flip in last block", shard: flip(len(shard) - 5), wantErr: ErrCorrupt},
		{name: "sibling shard", shard: sibling, wantErr: ErrCorrupt},
		{name: "sibling frames under this header", shard: append(slices.Clone(shard[:ShardHeaderLen]), sibling[ShardHeaderLen:]...), wantErr: ErrCorrupt},
		{name: "another file's shard", shard: foreign, wantErr: ErrCorrupt},
		{name: "another file's frames under this header", shard: append(slices.Clone(shard[:ShardHeaderLen]), foreign[ShardHeaderLen:]...), wantErr: ErrCorrupt},
		{name: "two frames swapped", shard: swapped, wantErr: ErrCorrupt},
		{name: "truncated by one", shard: shard[:len(shard)-1], wantErr: ErrCorrupt},
		{name: "truncated at frame edge", shard: shard[:ShardHeaderLen+2*frame], wantErr: io.ErrUnexpectedEOF},
		{name: "header only", shard: shard[:ShardHeaderLen], wantErr: ErrCorrupt},
		{name: "empty", shard: nil, wantErr: io.ErrUnexpectedEOF},
		{name: "trailing byte", shard: append(slices.Clone(shard), 0), wantErr: ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := VerifyShard(bytes.NewReader(tt.shard), testSeg.Shard(4), segLen, testBlockSize, g)
			if tt.wantErr == nil && err != nil || !errors.Is(err, tt.wantErr) {
				t.Fatalf("VerifyShard = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestEncodeRejectsBadBlocks(t *testing.T) {
	c, err := NewCodec(Geometry{Data: 2, Parity: 1}, 16)
	if err != nil {
		t.Fatal(err)
	}
	enc := c.NewBlockEncoder()
	for _, n := range []int{0, 17} {
		if _, err := enc.Encode(make([]byte, n)); err == nil {
			t.Errorf("Encode of %d bytes with 16-byte blocks succeeded", n)
		}
	}
}

func TestNewCodecRejects(t *testing.T) {
	tests := []struct {
		name string
		g    Geometry
		bs   int
	}{
		{name: "no parity", g: Geometry{Data: 2}, bs: 16},
		{name: "zero block", g: Geometry{Data: 2, Parity: 1}, bs: 0},
		{name: "too wide", g: Geometry{Data: 60, Parity: 5}, bs: 16},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewCodec(tt.g, tt.bs); err == nil {
				t.Fatal("NewCodec succeeded")
			}
		})
	}
}

// FuzzReadSegment feeds arbitrary shard bytes to the reader: it must never panic, leak a stream or
// write more than asked.
func FuzzReadSegment(f *testing.F) {
	g := Geometry{Data: 2, Parity: 1}
	c, err := NewCodec(g, 16)
	if err != nil {
		f.Fatal(err)
	}
	good := encodeSegment(f, c, []byte("the quick brown fox jumps over"))
	f.Add(good[0], good[1], good[2], int64(30), int64(0), int64(30))
	f.Add([]byte{}, good[1], good[2], int64(30), int64(3), int64(20))
	f.Fuzz(func(t *testing.T, s0, s1, s2 []byte, segLen, off, n int64) {
		if segLen > 1<<12 {
			return
		}
		src := newMemSource([][]byte{s0, s1, s2})
		var buf bytes.Buffer
		_, err := c.ReadSegment(t.Context(), &buf, testSeg, segLen, off, n, src)
		if err == nil && int64(buf.Len()) != n {
			t.Fatalf("read %d bytes, asked for %d", buf.Len(), n)
		}
		src.checkClosed(t)
	})
}

func FuzzVerifyShard(f *testing.F) {
	g := Geometry{Data: 2, Parity: 1}
	c, err := NewCodec(g, 16)
	if err != nil {
		f.Fatal(err)
	}
	good := encodeSegment(f, c, []byte("the quick brown fox jumps over"))
	f.Add(good[0], int64(30), 16)
	f.Add(good[2][:7], int64(30), 16)
	f.Fuzz(func(t *testing.T, shard []byte, segLen int64, blockSize int) {
		if segLen > 1<<16 || blockSize > 1<<16 {
			return
		}
		// Must not panic; a shard of the wrong length is never accepted. The stream is what
		// ShardStore.OpenFrames makes of the stored bytes.
		header, base := readerHeader(shard[:min(len(shard), ShardHeaderLen)])
		stream := append(slices.Clone(header), shard[base:]...)
		if VerifyShard(bytes.NewReader(stream), testSeg.Shard(0), segLen, blockSize, g) == nil &&
			int64(len(stream)) != testShardSize(segLen, blockSize, g) {
			t.Fatalf("accepted a %d-byte shard, want %d bytes", len(stream), testShardSize(segLen, blockSize, g))
		}
	})
}

// localMemSource is a memSource that names some of its shards local (LocalShardSource).
type localMemSource struct {
	*memSource
	local map[int]bool
}

func (l localMemSource) Local(index int) bool { return l.local[index] }

// TestReadSegmentPrefersLocalShards: a source that knows its local shards has them read first
// (a local parity shard and a decode instead of a remote data shard), then the remote data
// shards, and only k shards are opened on a healthy read.
func TestReadSegmentPrefersLocalShards(t *testing.T) {
	g := Geometry{Data: 3, Parity: 2}
	c, err := NewCodec(g, testBlockSize)
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(rand.New(rand.NewPCG(3, 4)), 3*testBlockSize+100)
	for _, tt := range []struct {
		name  string
		local []int
		want  []int // shard indices opened, in order
	}{
		{name: "none local", want: []int{0, 1, 2}},
		{name: "a parity shard local", local: []int{4}, want: []int{4, 0, 1}},
		{name: "data and parity local", local: []int{2, 3}, want: []int{2, 3, 0}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src := localMemSource{memSource: newMemSource(encodeSegment(t, c, data)), local: map[int]bool{}}
			for _, i := range tt.local {
				src.local[i] = true
			}
			var buf bytes.Buffer
			faults, err := c.ReadSegment(t.Context(), &buf, testSeg, int64(len(data)), 0, int64(len(data)), src)
			if err != nil || len(faults) != 0 {
				t.Fatalf("ReadSegment: faults %+v, err %v", faults, err)
			}
			if !bytes.Equal(buf.Bytes(), data) {
				t.Fatal("wrong bytes")
			}
			var opened []int
			for _, o := range src.opens {
				opened = append(opened, o.index)
			}
			if !slices.Equal(opened, tt.want) {
				t.Fatalf("opened shards %v, want %v", opened, tt.want)
			}
			src.checkClosed(t)
		})
	}
}

// TestEncodeDataInPlaceMatchesEncodeInto: a full block whose data the caller laid out in the data
// frames (chunk i at frames[i][:DataChunkLen()], the last one zero-padded) encodes to exactly the
// frames EncodeInto makes from the contiguous block, also when k does not divide the block size.
func TestEncodeDataInPlaceMatchesEncodeInto(t *testing.T) {
	for _, tc := range []struct {
		g         Geometry
		blockSize int
	}{{Geometry{Data: 2, Parity: 1}, 4096}, {Geometry{Data: 3, Parity: 2}, 1001}, {Geometry{Data: 4, Parity: 2}, 7}} {
		c, err := NewCodec(tc.g, tc.blockSize)
		if err != nil {
			t.Fatal(err)
		}
		block := make([]byte, tc.blockSize)
		r := rand.New(rand.NewPCG(uint64(tc.blockSize), 1))
		for i := range block {
			block[i] = byte(r.UintN(256))
		}
		seg := SegmentID{File: "f", Segment: 1}
		want, inPlace := c.NewBlockEncoder(), c.NewBlockEncoder()
		want.Start(seg)
		inPlace.Start(seg)
		total, cl := tc.g.Total(), inPlace.DataChunkLen()
		intoFrames, placed := make([][]byte, total), make([][]byte, total)
		for i := range total {
			intoFrames[i] = make([]byte, 0, inPlace.FrameLen(tc.blockSize))
			placed[i] = make([]byte, inPlace.FrameLen(tc.blockSize))
			for j := range placed[i] {
				placed[i][j] = 0xAA // garbage where padding and parity go
			}
			if i < tc.g.Data {
				lo := min(i*cl, tc.blockSize)
				clear(placed[i][copy(placed[i][:cl], block[lo:min(lo+cl, tc.blockSize)]):cl])
			}
			placed[i] = placed[i][:0]
		}
		wantFrames, err := want.EncodeInto(block, intoFrames)
		if err != nil {
			t.Fatal(err)
		}
		got, err := inPlace.EncodeDataInPlace(placed)
		if err != nil {
			t.Fatal(err)
		}
		for i := range total {
			if !bytes.Equal(got[i], wantFrames[i]) {
				t.Fatalf("%s, block %d: frame %d differs from EncodeInto's", tc.g, tc.blockSize, i)
			}
		}
	}
}

func TestShortFrameClass(t *testing.T) {
	for _, tt := range []struct{ frameLen, class int }{
		{1, 0}, {2052, 0}, {4096, 0}, {4097, 1}, {8192, 1}, {32769, 4}, {65536, 4}, {65537, -1}, {1 << 20, -1},
	} {
		if got := shortFrameClass(tt.frameLen); got != tt.class {
			t.Errorf("shortFrameClass(%d) = %d, want %d", tt.frameLen, got, tt.class)
		}
		if tt.class >= 0 && shortFrameMinLen<<tt.class < tt.frameLen {
			t.Errorf("class %d (%d bytes) cannot hold a %d-byte frame", tt.class, shortFrameMinLen<<tt.class, tt.frameLen)
		}
	}
}
