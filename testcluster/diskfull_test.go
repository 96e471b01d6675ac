package testcluster

import (
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/node"

	"github.com/cairn-dev/cairn/internal/testutil"
)

// TestDiskFull: one node's disk is under its reserve from the start, so placement avoids it; the
// others fill up until uploads get 507; nothing stored is damaged; deleting files frees room and
// writes resume.
func TestDiskFull(t *testing.T) {
	const reserve = 16 << 20
	dirs := []string{testutil.MountTmpfs(t, "26m"), testutil.MountTmpfs(t, "26m"), testutil.MountTmpfs(t, "26m"), testutil.MountTmpfs(t, "8m")}
	c := New(t, Options{Nodes: 4, BlockSize: 64 << 10, Configure: func(i int, cfg *node.Config) {
		cfg.DataDir = filepath.Join(dirs[i], "data")
		cfg.MinFree = reserve
		cfg.MetaInterval = 200 * time.Millisecond
	}})
	full := c.Config(3).NodeID
	testutil.WaitFor(t, 10*time.Second, "every node to know that "+full+" is full", func() bool {
		for _, i := range c.Running() {
			for _, m := range c.Node(i).Status().Members {
				if m.ID == full && m.FreeBytes >= reserve {
					return false
				}
			}
		}
		return true
	})
	type stored struct {
		token string
		data  []byte
	}
	var kept []stored
	got507 := false
	for i := 0; i < 200 && !got507; i++ {
		data := randomData(int64(i), 512<<10)
		cl := *c.Client(i % 3)
		cl.APIKey = c.RootKey
		meta, resp, err := cl.Upload(fmt.Sprintf("f%d", i), data)
		if err != nil {
			t.Fatal(err)
		}
		switch resp.Status {
		case http.StatusOK:
			kept = append(kept, stored{meta.Tokens[0].Token, data})
		case http.StatusInsufficientStorage:
			if resp.Err().Name != "INSUFFICIENT_STORAGE_EXCEPTION" {
				t.Fatalf("507 body %s", resp.Body)
			}
			got507 = true
		default:
			t.Fatalf("upload %d: %d %s", i, resp.Status, resp.Body)
		}
	}
	if !got507 {
		t.Fatal("200 uploads of 512 KiB never filled the disks")
	}
	t.Logf("%d uploads stored before the disks filled", len(kept))
	if n := len(shardsOnDisk(t, c)[full]); n != 0 {
		t.Fatalf("%d shards placed on the full node", n)
	}
	for _, s := range kept {
		mustDownload(t, c, 1, s.token, s.data)
	}
	// Free room: delete half the files; uploads resume once the nodes re-announce their space.
	for _, s := range kept[:len(kept)/2] {
		if resp, err := c.Client(0).Delete(s.token); err != nil || resp.Status != http.StatusOK {
			t.Fatalf("delete: %v %d", err, resp.Status)
		}
	}
	testutil.WaitFor(t, 20*time.Second, "uploads to resume after deletes", func() bool {
		cl := *c.Client(2)
		cl.APIKey = c.RootKey
		_, resp, err := cl.Upload("again", randomData(99, 512<<10))
		return err == nil && resp.Status == http.StatusOK
	})
	for _, s := range kept[len(kept)/2:] {
		mustDownload(t, c, 0, s.token, s.data)
	}
}
