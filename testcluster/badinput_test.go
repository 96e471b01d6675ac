package testcluster

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/internal/testutil"
)

// TestBadInputLeavesNothingBehind drives every bad upload and token case of the contract through a
// real cluster, and checks the answer and that no file or shard is left.
func TestBadInputLeavesNothingBehind(t *testing.T) {
	const limit = 100_000
	c := New(t, Options{MaxFileSize: limit})
	validateAgainstSpec(t, c)
	data := randomData(5, 5000)
	kept := keepOneFile(t, c, data)
	full, shards, nothingLeft := kept.token, kept.shards, kept.nothingLeft
	keyed := *c.Client(1)
	keyed.APIKey = c.RootKey

	t.Run("over the limit, chunked, no Content-Length", func(t *testing.T) {
		_, resp, err := keyed.UploadStream("big.bin", bytes.NewReader(randomData(9, 3*limit)))
		if err != nil {
			t.Fatal(err)
		}
		wantError(t, "oversized upload", resp, http.StatusBadRequest, 2610)
		nothingLeft(t, "oversized upload")
	})
	t.Run("no file part", func(t *testing.T) {
		body := "--XX\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nx.txt\r\n--XX--\r\n"
		resp := rawUpload(t, keyed, "multipart/form-data; boundary=XX", body)
		wantError(t, "no file part", resp, http.StatusBadRequest, 14)
		nothingLeft(t, "no file part")
	})
	t.Run("truncated multipart", func(t *testing.T) {
		body := "--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\n" +
			strings.Repeat("z", 70_000) // no closing boundary
		resp := rawUpload(t, keyed, "multipart/form-data; boundary=XX", body)
		wantError(t, "truncated multipart", resp, http.StatusBadRequest, 22)
		nothingLeft(t, "truncated multipart")
	})
	t.Run("no or unknown API key", func(t *testing.T) {
		anon := *c.Client(1)
		_, resp, err := anon.Upload("a", data)
		if err != nil {
			t.Fatal(err)
		}
		wantError(t, "no key", resp, http.StatusUnauthorized, 104)
		anon.APIKey = "not-a-key-of-this-cluster"
		_, resp, _ = anon.Upload("a", data)
		wantError(t, "unknown key", resp, http.StatusUnauthorized, 104)
		nothingLeft(t, "unauthenticated upload")
	})
	t.Run("client disconnects mid-upload", func(t *testing.T) {
		conn, err := net.Dial("tcp", c.Node(2).HTTPAddr())
		if err != nil {
			t.Fatal(err)
		}
		w := bufio.NewWriter(conn)
		fmt.Fprintf(w, "POST /files/v1/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"+
			"Content-Type: multipart/form-data; boundary=XX\r\nTransfer-Encoding: chunked\r\n\r\n", c.RootKey)
		part := "--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\n"
		chunk := part + string(randomData(1, 90_000)) // more than a segment: shards get committed
		fmt.Fprintf(w, "%x\r\n%s\r\n", len(chunk), chunk)
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		// Wait until the node has written shards for it, then vanish.
		testutil.WaitFor(t, 10*time.Second, "shards of the in-flight upload", func() bool {
			return countShards(t, c, "") > shards
		})
		conn.Close()
		nothingLeft(t, "disconnected upload")
	})

	t.Run("garbage tokens on every token route", func(t *testing.T) {
		for _, tok := range []string{"garbage", strings.Repeat("A", 43), "%00%01", strings.Repeat("x", 5000)} {
			for _, rt := range []struct{ method, path string }{
				{http.MethodGet, "/files/v1/" + tok + "/file"},
				{http.MethodGet, "/files/v1/" + tok + "/details"},
				{http.MethodDelete, "/files/v1/" + tok},
				{http.MethodPost, "/files/v1/" + tok + "/tokens"},
				{http.MethodDelete, "/files/v1/" + tok + "/tokens/" + full},
				{http.MethodDelete, "/files/v1/" + full + "/tokens/" + tok},
			} {
				resp, err := c.Client(2).Do(rt.method, rt.path, nil, nil)
				if err != nil {
					t.Fatal(err)
				}
				wantError(t, rt.method+" "+rt.path[:min(len(rt.path), 60)], resp, http.StatusBadRequest, 2605)
			}
		}
	})
	t.Run("read token cannot do what a full token does", func(t *testing.T) {
		g, resp, err := c.Client(0).CreateToken(full, "read")
		if err != nil || resp.Status != http.StatusOK || g.AccessLevel != "read" {
			t.Fatalf("create read token: %v %d %s", err, resp.Status, resp.Body)
		}
		read := g.Token
		resp, _ = c.Client(1).Delete(read)
		wantError(t, "delete file with read token", resp, http.StatusUnauthorized, 2606)
		_, resp, _ = c.Client(2).CreateToken(read, "read")
		wantError(t, "create token with read token", resp, http.StatusUnauthorized, 2606)
		resp, _ = c.Client(1).DeleteToken(read, read)
		wantError(t, "delete token with read token", resp, http.StatusUnauthorized, 2606)
		meta, resp, _ := c.Client(2).Details(read)
		if resp.Status != http.StatusOK || meta.Tokens != nil || bytes.Contains(resp.Body, []byte(`"tokens"`)) {
			t.Fatalf("details with a read token must not list tokens: %d %s", resp.Status, resp.Body)
		}
		mustDownload(t, c, 2, full, data) // nothing changed
	})
	t.Run("the last full token cannot be deleted", func(t *testing.T) {
		resp, _ := c.Client(2).DeleteToken(full, full)
		wantError(t, "delete the only full token", resp, http.StatusForbidden, 2607)
		g, resp, _ := c.Client(0).CreateToken(full, "full")
		if resp.Status != http.StatusOK {
			t.Fatalf("create full token: %d %s", resp.Status, resp.Body)
		}
		// With a second full token, a token may delete itself.
		if resp, _ := c.Client(1).DeleteToken(full, full); resp.Status != http.StatusOK {
			t.Fatalf("delete one of two full tokens: %d %s", resp.Status, resp.Body)
		}
		resp, _ = c.Client(2).DeleteToken(g.Token, g.Token)
		wantError(t, "delete the last remaining full token", resp, http.StatusForbidden, 2607)
		mustDownload(t, c, 0, g.Token, data)
	})
}

// rawUpload posts a hand-made body with chunked encoding (no Content-Length).
func rawUpload(t *testing.T, c Client, contentType, body string) Response {
	t.Helper()
	resp, err := c.Do(http.MethodPost, "/files/v1/", io.NopCloser(strings.NewReader(body)),
		http.Header{"Content-Type": {contentType}, "Authorization": {"Bearer " + c.APIKey}})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}
