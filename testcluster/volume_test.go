package testcluster

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/erasure"
	"github.com/cairn-dev/cairn/internal/testutil"
	"github.com/cairn-dev/cairn/node"
)

// TestSmallFilesInVolumes uploads small files through every node, and checks that their shards
// are volume records that read back byte-exact through every node (and after a node is killed
// and restarted); then deletes most of them: the GC removes their shards, and compaction, run by
// the GC loop, gives the space back (the volume files shrink) while the survivors stay readable.
func TestSmallFilesInVolumes(t *testing.T) {
	c := New(t, Options{Configure: func(_ int, cfg *node.Config) {
		cfg.GCInterval = 200 * time.Millisecond
		cfg.GCGracePeriod = time.Second
		cfg.VolumeSize = 1 << 20
	}})
	type upload struct {
		token string
		data  []byte
		id    string
	}
	var files []upload
	for i := range 60 {
		data := randomData(int64(5000+i), 1+(i*7919)%60_000) // 1 B to 60 kB: shards up to 30 kB
		token, _ := mustUpload(t, c, i%3, fmt.Sprintf("small%d", i), data)
		files = append(files, upload{token: token, data: data, id: fileOf(t, c, i%3, token).ID})
	}
	for _, f := range files {
		for idx, holder := range fileOf(t, c, 0, f.token).Layout.Segments[0].Nodes {
			loc, err := c.Node(holder2index(c, holder)).Shards().Locate(erasure.ShardID{File: f.id, Segment: 0, Index: idx})
			if err != nil || !loc.InVolume {
				t.Fatalf("shard %d of %s: %+v, %v; want a volume record", idx, f.id, loc, err)
			}
		}
	}
	readAll := func(files []upload) {
		t.Helper()
		for _, f := range files {
			for _, i := range c.Running() {
				mustDownload(t, c, i, f.token, f.data)
			}
		}
	}
	readAll(files)

	c.Kill(1)
	c.Restart(1)
	c.WaitReady(30 * time.Second)
	readAll(files)

	volumeBytes := func() (sum float64) {
		for _, i := range c.Running() {
			sum += metricValue(t, c, i, "cairn_volume_bytes")
		}
		return sum
	}
	before := volumeBytes()
	var kept []upload
	for i, f := range files {
		if i%5 == 0 {
			kept = append(kept, f)
			continue
		}
		resp, err := c.Client(i % 3).Delete(f.token)
		if err != nil || resp.Status != http.StatusNoContent && resp.Status != http.StatusOK {
			t.Fatalf("delete %s: %v, status %d %s", f.id, err, resp.Status, resp.Body)
		}
	}
	testutil.WaitFor(t, 60*time.Second, "the deleted files' shards collected and their volumes compacted", func() bool {
		for i, f := range files {
			if i%5 != 0 && countShards(t, c, f.id) != 0 {
				return false
			}
		}
		return faultCount(t, c, "cairn_volume_compactions_total") > 0 && volumeBytes() < before/2
	})
	t.Logf("volume bytes on all nodes: %.0f before the deletes, %.0f after GC and compaction", before, volumeBytes())
	readAll(kept)
	for _, f := range kept {
		if n := countShards(t, c, f.id); n != 3 {
			t.Fatalf("file %s has %d shards left, want 3", f.id, n)
		}
	}
}
