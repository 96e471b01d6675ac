package testcluster

import (
	"bytes"
	"math/rand"
	"net/http"
	"testing"
	"os"
	"github.com/cairn-dev/cairn/cluster"
	"github.com/cairn-dev/cairn/node"
	"time"
)

func TestSmokeUploadReadEverywhere(t *testing.T) {
	c := New(t, Options{Configure: func(i int, cfg *node.Config) { if osnet { cfg.Network = cluster.OSNetwork{} } }})
	c.Client(0).APIKey = c.RootKey
	data := make([]byte, 100_000)
	rand.New(rand.NewSource(1)).Read(data)
	meta, resp, err := c.Client(0).Upload("a.bin", data, "x", "y")
	if err != nil || resp.Status != http.StatusOK {
		t.Fatalf("upload: %v %d %s", err, resp.Status, resp.Body)
	}
	tok := meta.Tokens[0].Token
	for i := range 3 {
		r, err := c.Client(i).Download(tok)
		if err != nil || r.Status != 200 || !bytes.Equal(r.Body, data) {
			t.Fatalf("node %d download: %v %d len %d", i, err, r.Status, len(r.Body))
		}
	}
	_ = time.Second
}

var osnet = os.Getenv("OSNET") != ""
