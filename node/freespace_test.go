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
	dir := testutil.MountTmpfs(t, "1536m")
	store, err := erasure.OpenShardStore(filepath.Join(dir, "shards"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	calls := 0
	f := newFreeSpace(func() (uint64, error) { calls++; return store.FreeBytes() })
	clock := time.Unix(1_800_000_000, 0)
	f.now = func() time.Time { return clock }

	// Far: 1.5 GiB free, no reserve.
	for range 100 {
		if _, err := f.available(0); err != nil {
			t.Fatal(err)
		}
	}
	if calls != 1 {
		t.Fatalf("%d statfs calls for 100 puts far from the reserve, want 1", calls)
	}
	clock = clock.Add(freeSpaceMaxAge)
	if _, err := f.available(0); err != nil || calls != 2 {
		t.Fatalf("a figure freeSpaceMaxAge old was reused (%d calls, %v)", calls, err)
	}

	// Near: the reserve leaves less than the margin, so each put reads the filesystem and sees
	// the bytes of a file written a moment ago.
	free, _ := store.FreeBytes()
	reserve := int64(free) - freeSpaceMargin/2
	calls = 0
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
	if calls != 2 || before-after < 8<<20 {
		t.Fatalf("near the reserve: %d statfs calls, free %d then %d: want 2 calls and the 8 MiB written seen", calls, before, after)
	}
}

// TestFreeSpaceCountsThePutsOwnWrites: the cached figure loses the bytes each put writes, so
// puts that write faster than freeSpaceMaxAge can see (here, under a stopped clock) still bring
// the figure into the margin and make the next put read the filesystem: what a put is told is
// never more than what is really free after the puts before it.
func TestFreeSpaceCountsThePutsOwnWrites(t *testing.T) {
	dir := testutil.MountTmpfs(t, "1536m")
	store, err := erasure.OpenShardStore(filepath.Join(dir, "shards"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	calls := 0
	f := newFreeSpace(func() (uint64, error) { calls++; return store.FreeBytes() })
	clock := time.Unix(1_800_000_000, 0)
	f.now = func() time.Time { return clock }
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
	if told > reallyFree || calls < 2 {
		t.Fatalf("after 32 MiB of puts with the clock stopped: told %d bytes free, %d really free, %d statfs calls", told, reallyFree, calls)
	}
}
