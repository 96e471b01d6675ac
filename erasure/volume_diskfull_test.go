package erasure

import (
	"errors"
	"os"
	"testing"
)

func openFDs(t *testing.T) int {
	e, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(e)
}

// TestVolumeDiskFullLeavesNoIndexFiles: each failed group commit on a full disk removes the empty
// volume it created, and its index file with it (found by review: they were left, one per
// failed batch, exactly when the disk had no room, and their descriptors stayed open).
func TestVolumeDiskFullLeavesNoIndexFiles(t *testing.T) {
	s, dir, _ := fullStore(t)
	fds := openFDs(t)
	failed := 0
	for i := range 200 {
		id := ShardID{File: "FILfull", Segment: i, Index: 0}
		if _, err := s.vols.put(id, testShard(id, 40000+i)); err != nil {
			if !errors.Is(err, ErrNoSpace) {
				t.Fatal(err)
			}
			failed++
		}
	}
	t.Logf("failed=%d volumes=%d index files=%d fds before=%d after=%d",
		failed, len(volumeFiles(t, dir)), len(indexFiles(t, dir)), fds, openFDs(t))
	if failed == 0 {
		t.Fatal("no group commit failed: the disk was not full")
	}
	if n := len(indexFiles(t, dir)); n > len(volumeFiles(t, dir)) || openFDs(t) > fds+2*len(volumeFiles(t, dir)) {
		t.Fatalf("%d index files after %d failed group commits (%d volumes)", n, failed, len(volumeFiles(t, dir)))
	}
}
