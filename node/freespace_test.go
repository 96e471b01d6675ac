package node

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/erasure"
	"github.com/cairn-dev/cairn/internal/testutil"
)

// TestFreeSpaceCachesOnlyFarFromTheReserve: on a real filesystem, puts far from the reserve reuse
// one statfs until it is freeSpaceMaxAge old; near the reserve every put asks the filesystem, so
// that bytes written since the last figure are seen at once and a put is refused as exactly as
// without the cache (TestDiskFull in testcluster runs the refusal end to end).
func TestFreeSpaceCachesOnlyFarFromTheReserve(t *testing.T) {
	c := newCountedFreeSpace(t)
	dir, store, f := c.dir, c.store, c.free

	// Far: 1.5 GiB free, no reserve.
	for range 100 {
		if _, err := f.available(0); err != nil {
			t.Fatal(err)
		}
	}
	if c.calls != 1 {
		t.Fatalf("%d statfs calls for 100 puts far from the reserve, want 1", c.calls)
	}
	c.clock = c.clock.Add(freeSpaceMaxAge)
	if _, err := f.available(0); err != nil || c.calls != 2 {
		t.Fatalf("a figure freeSpaceMaxAge old was reused (%d calls, %v)", c.calls, err)
	}

	// Near: the reserve leaves less than the margin, so each put reads the filesystem and sees
	// the bytes of a file written a moment ago.
	free, _ := store.FreeBytes()
	reserve := int64(free) - freeSpaceMargin/2
	c.calls = 0
	before, err := f.available(reserve)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "filler"), make([]byte, 8<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	after, err := f.available(reserve)
	if err != nil {
		t.Fatal(err)
	}
	if c.calls != 2 || before-after < 8<<20 {
		t.Fatalf("near the reserve: %d statfs calls, free %d then %d: want 2 calls and the 8 MiB written seen", c.calls, before, after)
	}
}

// TestFreeSpaceCountsThePutsOwnWrites: the cached figure loses the bytes each put writes, so
// puts that write faster than freeSpaceMaxAge can see (here, under a stopped clock) still bring
// the figure into the margin and make the next put read the filesystem: what a put is told is
// never more than what is really free after the puts before it.
func TestFreeSpaceCountsThePutsOwnWrites(t *testing.T) {
	c := newCountedFreeSpace(t)
	store, f := c.store, c.free
	free, err := store.FreeBytes()
	if err != nil {
		t.Fatal(err)
	}
	shards := localShards{store: store, free: f, minFree: int64(free) - freeSpaceMargin - 16<<20}
	body := bytes.Repeat([]byte{0x5a}, 4<<20)
	for i := range 8 {
		id := erasure.ShardID{File: "FILfreespace", Segment: i, Index: 0}
		if err := shards.PutShard(t.Context(), id, bytes.NewReader(body)); err != nil {
			t.Fatal(err)
		}
	}
	told, err := f.available(shards.minFree)
	if err != nil {
		t.Fatal(err)
	}
	reallyFree, err := store.FreeBytes()
	if err != nil {
		t.Fatal(err)
	}
	if told > reallyFree || c.calls < 2 {
		t.Fatalf("after 32 MiB of puts with the clock stopped: told %d bytes free, %d really free, %d statfs calls", told, reallyFree, c.calls)
	}
}

// countedFreeSpace is a freeSpace over a shard store on a real 1.5 GiB tmpfs, whose statfs calls
// are counted and whose clock stands still until a test moves it.
type countedFreeSpace struct {
	dir   string
	store *erasure.ShardStore
	free  *freeSpace
	calls int
	clock time.Time
}

func newCountedFreeSpace(t *testing.T) *countedFreeSpace {
	t.Helper()
	c := &countedFreeSpace{dir: testutil.MountTmpfs(t, "1536m"), clock: time.Unix(1_800_000_000, 0)}
	store, err := erasure.OpenShardStore(filepath.Join(c.dir, "shards"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	c.store = store
	c.free = newFreeSpace(func() (uint64, error) { c.calls++; return store.FreeBytes() })
	c.free.now = func() time.Time { return c.clock }
	return c
}

// TestFreeSpaceComparisonsAreUnsigned: a filesystem may report 2^63 bytes free or more (an
// "unlimited" FUSE or network filesystem), which as an int64 is negative; such a figure must
// neither refuse puts nor count as near the reserve.
func TestFreeSpaceComparisonsAreUnsigned(t *testing.T) {
	for _, c := range []struct {
		free     uint64
		reserve  int64
		below    bool
		farAbove bool
	}{
		{free: 1<<63 + 4096, reserve: 256 << 20, below: false, farAbove: true},
		{free: ^uint64(0), reserve: 1<<63 - 1, below: false, farAbove: true},
		{free: 100, reserve: 1<<63 - 1, below: true, farAbove: false},
		{free: 0, reserve: 0, below: false, farAbove: false},
		{free: 1 << 20, reserve: -1, below: false, farAbove: false},
		{free: 256<<20 - 1, reserve: 256 << 20, below: true, farAbove: false},
		{free: 256<<20 + freeSpaceMargin, reserve: 256 << 20, below: false, farAbove: false},
		{free: 256<<20 + freeSpaceMargin + 1, reserve: 256 << 20, below: false, farAbove: true},
	} {
		if got := belowReserve(c.free, c.reserve); got != c.below {
			t.Errorf("belowReserve(%d, %d) = %v", c.free, c.reserve, got)
		}
		if got := farAboveReserve(c.free, c.reserve); got != c.farAbove {
			t.Errorf("farAboveReserve(%d, %d) = %v", c.free, c.reserve, got)
		}
	}
}

// TestAnnouncedFullIsUnsigned: the Full flag gossiped to the cluster uses the same unsigned
// comparison, so a filesystem reporting 2^63 bytes free or more does not tell every peer that
// this node takes no shards.
func TestAnnouncedFullIsUnsigned(t *testing.T) {
	n := &Node{}
	n.cfg.MinFree = 256 << 20
	n.freeBytes.Store(1<<63 + 4096)
	if n.meta().Full {
		t.Fatalf("%d bytes free, reserve %d: announced Full", n.freeBytes.Load(), n.cfg.MinFree)
	}
	n.freeBytes.Store(1 << 20)
	if !n.meta().Full {
		t.Fatalf("%d bytes free, reserve %d: not announced Full", n.freeBytes.Load(), n.cfg.MinFree)
	}
}
