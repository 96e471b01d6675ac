package testcluster

import (
	"bytes"
	"fmt"
	"io"
	"math/rand"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/erasure"

	"github.com/cairn-dev/cairn/internal/testutil"
)

// randomData returns n reproducible random bytes for a seed.
func randomData(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// mustUpload uploads through node i with the root key and returns the full token. A 503 (the
// cluster is electing a leader, e.g. on a loaded machine) is retried as a client honouring
// Retry-After would; any other failure fails the test.
func mustUpload(t *testing.T, c *Cluster, i int, name string, data []byte, tags ...string) (string, FileMetadata) {
	t.Helper()
	cl := *c.Client(i)
	cl.APIKey = c.RootKey
	var (
		meta FileMetadata
		resp Response
		err  error
	)
	testutil.WaitForState(t, 20*time.Second, fmt.Sprintf("an upload of %s through node%d that is not 503", name, i), func() (bool, string) {
		meta, resp, err = cl.Upload(name, data, tags...)
		return err != nil || resp.Status != http.StatusServiceUnavailable, fmt.Sprintf("status %d body %.300s", resp.Status, resp.Body)
	})
	if err != nil || resp.Status != http.StatusOK {
		t.Fatalf("upload %s through node%d: err=%v status=%d body=%s", name, i, err, resp.Status, resp.Body)
	}
	if len(meta.Tokens) != 1 || meta.Tokens[0].AccessLevel != "full" {
		t.Fatalf("upload answer has tokens %+v, want one full token", meta.Tokens)
	}
	return meta.Tokens[0].Token, meta
}

// mustDownload checks that node i serves exactly want for token (retrying 503s like mustUpload).
func mustDownload(t *testing.T, c *Cluster, i int, token string, want []byte) {
	t.Helper()
	var (
		resp Response
		err  error
	)
	testutil.WaitForState(t, 20*time.Second, fmt.Sprintf("a download through node%d that is not 503", i), func() (bool, string) {
		resp, err = c.Client(i).Download(token)
		return err != nil || resp.Status != http.StatusServiceUnavailable, fmt.Sprintf("status %d body %.300s", resp.Status, resp.Body)
	})
	if err != nil || resp.Status != http.StatusOK {
		t.Fatalf("download through node%d: err=%v status=%d body=%.200s", i, err, resp.Status, resp.Body)
	}
	if !bytes.Equal(resp.Body, want) {
		t.Fatalf("download through node%d: got %d bytes, want %d (content differs)", i, len(resp.Body), len(want))
	}
}

// wantError checks an API error answer.
func wantError(t *testing.T, what string, resp Response, status, code int) {
	t.Helper()
	if resp.Status != status || resp.Err().Code != code {
		t.Fatalf("%s: got status %d body %s, want status %d code %d", what, resp.Status, resp.Body, status, code)
	}
}

// shardsOnDisk lists every committed shard on every running node.
func shardsOnDisk(t *testing.T, c *Cluster) map[string][]erasure.ShardID {
	t.Helper()
	out := map[string][]erasure.ShardID{}
	for _, i := range c.Running() {
		n := c.Node(i)
		err := n.Shards().List(func(info erasure.ShardInfo) error {
			out[n.ID()] = append(out[n.ID()], info.ID)
			return nil
		})
		if err != nil {
			t.Fatalf("list shards on %s: %v", n.ID(), err)
		}
	}
	return out
}

// keptFile is the file a bad-input test keeps, and the cluster's file and shard counts once that
// file has all its shards (written degraded on a loaded machine, repair would add its missing
// shard later and the shard count would never return to the baseline).
type keptFile struct {
	c             *Cluster
	token         string
	files, shards int
}

// keepOneFile uploads data as keep.bin and takes the baseline once it is fully healthy.
func keepOneFile(t *testing.T, c *Cluster, data []byte) keptFile {
	t.Helper()
	k := keptFile{c: c}
	k.token, _ = mustUpload(t, c, 0, "keep.bin", data)
	testutil.WaitFor(t, 30*time.Second, "keep.bin fully healthy", func() bool { return fullyHealthy(t, c, []string{k.token}) })
	k.files, _ = c.Node(0).FSM().Counts()
	k.shards = countShards(t, c, "")
	return k
}

// nothingLeft waits for the shards of a failed upload to be removed and checks that no running
// node has a file more than the baseline.
func (k keptFile) nothingLeft(t *testing.T, what string) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, what+": shards of the failed upload removed", func() bool {
		return countShards(t, k.c, "") == k.shards
	})
	for _, i := range k.c.Running() {
		if got, _ := k.c.Node(i).FSM().Counts(); got != k.files {
			t.Fatalf("%s: node%d has %d files, want %d", what, i, got, k.files)
		}
	}
}

// countShards counts the shards of fileID on running nodes ("" counts all).
func countShards(t *testing.T, c *Cluster, fileID string) int {
	total := 0
	for _, ids := range shardsOnDisk(t, c) {
		for _, id := range ids {
			if fileID == "" || id.File == fileID {
				total++
			}
		}
	}
	return total
}

// multipartBody builds a multipart/form-data body with text fields and one file part.
func multipartBody(t *testing.T, fields map[string]string, fileField, filename string, data []byte) (io.Reader, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for k, v := range fields {
		if err := mw.WriteField(k, v); err != nil {
			t.Fatal(err)
		}
	}
	h := make(textproto.MIMEHeader)
	h.Set("Content-Disposition", fmt.Sprintf(`form-data; name=%q; filename=%q`, fileField, filename))
	h.Set("Content-Type", "text/plain")
	part, err := mw.CreatePart(h)
	if err != nil {
		t.Fatal(err)
	}
	part.Write(data)
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return &buf, mw.FormDataContentType()
}
