package core_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/cluster/clusterapi"
	"github.com/cairn-dev/cairn/core"
	"github.com/cairn-dev/cairn/erasure"
	"github.com/cairn-dev/cairn/fsm"
	"github.com/cairn-dev/cairn/internal/coretest"
	"github.com/cairn-dev/cairn/internal/testutil"
)

// TestAbortCleansUpUnlessTheOutcomeIsUnknown: an upload that ends without a file removes its
// shards, except when its commit may still apply (the proposal's fate is unknown): those shards
// may become a file's, and only the garbage collector, which checks the committed state, may
// remove them.
func TestAbortCleansUpUnlessTheOutcomeIsUnknown(t *testing.T) {
	for _, tc := range []struct {
		name      string
		commitErr error // nil: abort before commit
		want      error
		leftForGC bool
	}{
		{"aborted before commit", nil, nil, false},
		{"commit refused", fmt.Errorf("append: %w", clusterapi.ErrLogStoreFull), core.ErrNoSpace, false},
		{"commit outcome unknown", errors.New("leadership lost"), core.ErrUnavailable, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := coretest.New(t, coretest.Options{})
			ctx := context.Background()
			up, err := h.Service.BeginUpload(ctx, h.Root)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := up.ReadFrom(bytes.NewReader(randomBytes(13, 5*block))); err != nil {
				t.Fatal(err)
			}
			if h.Stray() == 0 {
				t.Fatal("the upload wrote no shards")
			}
			if tc.commitErr != nil {
				h.Consensus.SetFault(func(read bool, typ fsm.CommandType) error {
					if typ == fsm.CmdCreateFile {
						return tc.commitErr
					}
					return nil
				})
				if _, _, err := up.Commit(ctx, core.FileAttrs{Name: "x"}); !errors.Is(err, tc.want) {
					t.Fatalf("Commit = %v, want %v", err, tc.want)
				}
			}
			up.Abort()
			if h.Files() != 0 {
				t.Fatal("a file exists")
			}
			if tc.leftForGC {
				if h.Stray() == 0 {
					t.Fatal("the shards of a commit that may still apply were deleted")
				}
				return
			}
			testutil.WaitFor(t, 10*time.Second, "the aborted upload's shards deleted", func() bool { return h.Stray() == 0 })
		})
	}
}

// failingBody yields n bytes, then fails the read: a client that breaks off mid-upload.
type failingBody struct {
	data []byte
}

var errClientGone = errors.New("client went away")

func (b *failingBody) Read(p []byte) (int, error) {
	if len(b.data) == 0 {
		return 0, errClientGone
	}
	n := copy(p, b.data)
	b.data = b.data[n:]
	return n, nil
}

// TestUploadBrokenOffMidSegmentCommitsNoShard: when the body fails inside a segment, the shard
// streams of that segment end with an error, never with a clean end of body that a node would
// commit as a (partial) shard. ReadFrom returns only after every shard put has ended, so the
// check needs no wait.
func TestUploadBrokenOffMidSegmentCommitsNoShard(t *testing.T) {
	h := coretest.New(t, coretest.Options{})
	up, err := h.Service.BeginUpload(context.Background(), h.Root)
	if err != nil {
		t.Fatal(err)
	}
	defer up.Abort()
	// Two full blocks of the first 4-block segment, then the failure.
	if _, err := up.ReadFrom(&failingBody{data: randomBytes(17, 2*block)}); !errors.Is(err, errClientGone) {
		t.Fatalf("ReadFrom = %v, want the body's error", err)
	}
	if n := h.Stray(); n != 0 {
		t.Fatalf("%d shards of the broken-off segment were committed", n)
	}
}

// TestSmallSegmentIsPutWhole: a segment of one small block goes to each node as one whole shard
// (header, then its frame), keeps the write quorum rules of a streamed segment, and a put that
// fails leaves nothing behind once the upload is aborted.
func TestSmallSegmentIsPutWhole(t *testing.T) {
	h := coretest.New(t, coretest.Options{})
	ctx := context.Background()
	for _, size := range []int{1, block} {
		data := randomBytes(uint64(size), size)
		info, secret := mustUpload(t, h, h.Root, "small", data)
		file, ok := h.FSM.File(info.ID)
		if !ok || len(file.Layout.Segments) != 1 {
			t.Fatalf("layout of %d bytes: %+v", size, file.Layout)
		}
		chunk := erasure.ChunkLen(size, file.Layout.Geometry)
		for i, node := range file.Layout.Segments[0].Nodes {
			shard, ok := h.Shards.Shard(node, erasure.ShardID{File: info.ID, Index: i})
			if !ok || len(shard) != erasure.ShardHeaderLen+chunk+4 {
				t.Fatalf("shard %d of a %d-byte file on %s: %d bytes (present %v), want header and one frame", i, size, node, len(shard), ok)
			}
		}
		if got, err := h.Read(ctx, secret); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read back %d bytes: %v", size, err)
		}
	}

	h.Shards.SetDown("n2", true, h.Clock.Now())
	data := randomBytes(3, 100)
	info, secret := mustUpload(t, h, h.Root, "degraded", data)
	file, _ := h.FSM.File(info.ID)
	if nodes := file.Layout.Segments[0].Nodes; !slices.Contains(nodes, "") || slices.Contains(nodes, "n2") {
		t.Fatalf("degraded layout %v: want the down node's slot empty", nodes)
	}
	if got, err := h.Read(ctx, secret); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("degraded read: %v", err)
	}

	h.Shards.SetDown("n3", true, h.Clock.Now())
	before := h.Consensus.Proposals()
	if _, _, err := h.Upload(ctx, h.Root, core.FileAttrs{Name: "lost"}, data); !errors.Is(err, core.ErrUnavailable) {
		t.Fatalf("small upload without quorum: %v, want ErrUnavailable", err)
	}
	if h.Consensus.Proposals() != before {
		t.Fatal("a small upload without quorum was proposed")
	}
	testutil.WaitFor(t, 10*time.Second, "the failed upload's one durable shard deleted", func() bool { return h.Stray() == 0 })
}

// TestLargeBlocksAreReadIntoFrames: with blocks larger than the small buffer, a block's head comes
// through it and the rest goes straight into the shard frames; bodies ending anywhere (inside the
// head, just past it, inside a later block, on a block or segment boundary) read back byte-exact,
// also with a geometry whose k does not divide the block size, and a body that breaks off inside
// such a block commits no shard of its segment.
func TestLargeBlocksAreReadIntoFrames(t *testing.T) {
	const big = 100_001 // above the 64 KiB small buffer; 3 does not divide it
	h := coretest.New(t, coretest.Options{Geometry: erasure.Geometry{Data: 3, Parity: 2}, BlockSize: big, BlocksPerSegment: 2})
	ctx := context.Background()
	for _, size := range []int{64<<10 - 1, 64 << 10, 64<<10 + 1, big - 1, big, big + 1, 2 * big, 2*big + 70_000, 5*big + 3} {
		data := randomBytes(uint64(size), size)
		info, secret := mustUpload(t, h, h.Root, "big.bin", data)
		if got, err := h.Read(ctx, secret); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("size %d: read back %d bytes (%v)", size, len(got), err)
		}
		if sum := sha256.Sum256(data); info.ETag != hex.EncodeToString(sum[:]) || info.Size != int64(size) {
			t.Fatalf("size %d: ETag %s and size %d, want the body's SHA-256 and length", size, info.ETag, info.Size)
		}
	}
	up, err := h.Service.BeginUpload(ctx, h.Root)
	if err != nil {
		t.Fatal(err)
	}
	defer up.Abort()
	if _, err := up.ReadFrom(&failingBody{data: randomBytes(5, big+80_000)}); !errors.Is(err, errClientGone) {
		t.Fatalf("ReadFrom = %v, want the body's error", err)
	}
	if n := h.Stray(); n != 0 {
		t.Fatalf("%d shards of the broken-off segment were committed", n)
	}
}

// TestUploadWritesV1ShardsDuringUpgrade: while the cluster still speaks shard format v1, both
// upload paths (a whole small segment, and streamed blocks read into the frames) write exactly
// the frames a v1 encoder makes, with no header.
func TestUploadWritesV1ShardsDuringUpgrade(t *testing.T) {
	h := coretest.New(t, coretest.Options{Configure: func(c *core.Config) {
		c.ShardFormat = func() uint16 { return erasure.FormatV1 }
	}})
	g := erasure.Geometry{Data: 2, Parity: 1}
	codec, err := erasure.NewCodec(g, block)
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{100, 2*block + 5} {
		data := randomBytes(uint64(size), size)
		info, _ := mustUpload(t, h, h.Root, "v1", data)
		enc := codec.NewBlockEncoder()
		enc.StartFormat(erasure.SegmentID{File: info.ID}, erasure.FormatV1)
		want := make([][]byte, g.Total())
		for off := 0; off < size; off += block {
			frames, err := enc.Encode(data[off:min(off+block, size)])
			if err != nil {
				t.Fatal(err)
			}
			for i, f := range frames {
				want[i] = append(want[i], f...)
			}
		}
		file, _ := h.FSM.File(info.ID)
		for i, node := range file.Layout.Segments[0].Nodes {
			if got, _ := h.Shards.Shard(node, erasure.ShardID{File: info.ID, Index: i}); !bytes.Equal(got, want[i]) {
				t.Fatalf("size %d, shard %d: %d bytes, not the %d bytes of v1 frames", size, i, len(got), len(want[i]))
			}
		}
	}
}
