package httpapi

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/core"
	"github.com/cairn-dev/cairn/internal/testutil"
)

// TestDownloadRangeEdges asks both download routes for every edge of a byte range, now that the
// content is written straight into the response (deferredHeaderWriter.ReadFrom): the first and the
// last byte, ranges running past the end, suffix ranges longer than the file, unsatisfiable ones,
// and several ranges (answered with the whole file). The file spans several segments, so a range
// also crosses a segment boundary.
func TestDownloadRangeEdges(t *testing.T) {
	const size = 40 << 10 // three segments of 16 KiB
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*7 + i/251)
	}
	e := newEnmeshedEnv(t, maxFileSize(size))
	info, full := e.upload(t, "alice", core.FileAttrs{Name: "edges.bin", MimeType: "application/octet-stream"}, string(data))
	read := readToken(t, e.env, full.Secret)
	last := size - 1
	tests := []struct {
		rng        string
		status     int
		from, to   int // the body is data[from:to]
		contentRng string
	}{
		{"bytes=0-0", 206, 0, 1, fmt.Sprintf("bytes 0-0/%d", size)},
		{fmt.Sprintf("bytes=%d-%d", last, last), 206, last, size, fmt.Sprintf("bytes %d-%d/%d", last, last, size)},
		{fmt.Sprintf("bytes=%d-", last), 206, last, size, fmt.Sprintf("bytes %d-%d/%d", last, last, size)},
		{fmt.Sprintf("bytes=%d-%d", last, size+100), 206, last, size, fmt.Sprintf("bytes %d-%d/%d", last, last, size)},
		{"bytes=16383-16384", 206, 16383, 16385, fmt.Sprintf("bytes 16383-16384/%d", size)}, // across a segment boundary
		{"bytes=0-", 200 + 6, 0, size, fmt.Sprintf("bytes 0-%d/%d", last, size)},
		{"bytes=-1", 206, last, size, fmt.Sprintf("bytes %d-%d/%d", last, last, size)},
		{fmt.Sprintf("bytes=-%d", size), 206, 0, size, fmt.Sprintf("bytes 0-%d/%d", last, size)},
		{fmt.Sprintf("bytes=-%d", size+5), 206, 0, size, fmt.Sprintf("bytes 0-%d/%d", last, size)},
		{fmt.Sprintf("bytes=%d-", size), 416, 0, 0, fmt.Sprintf("bytes */%d", size)},
		{fmt.Sprintf("bytes=%d-%d", size, size+10), 416, 0, 0, fmt.Sprintf("bytes */%d", size)},
		{"bytes=-0", 416, 0, 0, fmt.Sprintf("bytes */%d", size)},
		{"bytes=5-2", 416, 0, 0, ""},
		{"bytes=0-99999999999999999999", 206, 0, size, fmt.Sprintf("bytes 0-%d/%d", last, size)}, // past int64: to the end
		{"bytes=-99999999999999999999", 206, 0, size, fmt.Sprintf("bytes 0-%d/%d", last, size)},  // past int64: the whole file
		{"bytes=99999999999999999999-", 416, 0, 0, fmt.Sprintf("bytes */%d", size)},
		{"bytes=99999999999999999999-99999999999999999999", 416, 0, 0, fmt.Sprintf("bytes */%d", size)},
		{"bytes=0-0,-1", 200, 0, size, ""},
		{"bytes=0-0, 5-9", 200, 0, size, ""},
		{"items=0-5", 200, 0, size, ""},
	}
	routes := map[string]string{
		"files/v1": "/files/v1/" + read + "/file",
		"enmeshed": "/api/v2/Files/" + info.ID + "/Download",
	}
	for route, path := range routes {
		for _, tc := range tests {
			t.Run(route+"/"+tc.rng, func(t *testing.T) {
				res := e.do(t, http.MethodGet, path, nil, map[string]string{"Range": tc.rng})
				if res.status != tc.status {
					t.Fatalf("status %d, want %d (%.200s)", res.status, tc.status, res.body)
				}
				if tc.contentRng != "" && res.header.Get("Content-Range") != tc.contentRng {
					t.Fatalf("Content-Range %q, want %q", res.header.Get("Content-Range"), tc.contentRng)
				}
				if tc.status == 416 {
					// Refused in the route's own error format, never ServeContent's text/plain.
					if route == "files/v1" {
						wantError(t, res, 416, 1, "RANGE_NOT_SATISFIABLE_EXCEPTION")
					} else {
						wantEnmeshedError(t, res, 416, codeRangeNotSatisfiable, "")
					}
					return
				}
				if string(res.body) != string(data[tc.from:tc.to]) {
					t.Fatalf("body: %d bytes, want data[%d:%d]", len(res.body), tc.from, tc.to)
				}
				if cl := res.header.Get("Content-Length"); cl != fmt.Sprint(tc.to-tc.from) {
					t.Fatalf("Content-Length %q, want %d", cl, tc.to-tc.from)
				}
			})
		}
	}
}

// TestDownloadEmptyFileRanges: on an empty file every well-formed range is answered 200 with the
// empty body, as ServeContent answers a range from a first-pos there. A suffix range of non-zero
// length selects the whole, empty representation (RFC 9110 §14.1.1), which no 206 can state; it
// was answered 206 "bytes 0--1/0". Both download routes.
func TestDownloadEmptyFileRanges(t *testing.T) {
	e := newEnmeshedEnv(t)
	info, full := e.upload(t, "alice", core.FileAttrs{Name: "empty.txt", MimeType: "text/plain"}, "")
	routes := map[string]string{
		"files/v1": "/files/v1/" + full.Secret + "/file",
		"enmeshed": "/api/v2/Files/" + info.ID + "/Download",
	}
	tests := []struct {
		rng          string
		status       int
		contentRange string
	}{
		{"bytes=-1", 200, ""},
		{"bytes=-5", 200, ""},
		{"bytes=-99999999999999999999", 200, ""},
		{"bytes=-0", 200, ""},
		{"bytes=0-", 200, ""},
		{"bytes=0-0", 200, ""},
	}
	for route, path := range routes {
		for _, tc := range tests {
			t.Run(route+"/"+tc.rng, func(t *testing.T) {
				res := e.do(t, http.MethodGet, path, nil, map[string]string{"Range": tc.rng})
				if res.status != tc.status || res.header.Get("Content-Range") != tc.contentRange {
					t.Fatalf("status %d, Content-Range %q; want %d, %q", res.status, res.header.Get("Content-Range"), tc.status, tc.contentRange)
				}
				if tc.status == 200 && len(res.body) != 0 {
					t.Fatalf("body of %d bytes from an empty file", len(res.body))
				}
			})
		}
	}
}

// TestDownloadPreconditionsFailInTheRoutesFormat: a failed If-Match or If-Unmodified-Since is a
// 412 in each front-end's error format (it was ServeContent's bare 412), while a matching
// If-Match, or a mismatching one on a conditional the file meets, still serves the file.
func TestDownloadPreconditionsFailInTheRoutesFormat(t *testing.T) {
	e := newEnmeshedEnv(t)
	const data = "conditional content"
	info, full := e.upload(t, "alice", core.FileAttrs{Name: "cond.txt", MimeType: "text/plain"}, data)
	routes := map[string]string{
		"files/v1": "/files/v1/" + full.Secret + "/file",
		"enmeshed": "/api/v2/Files/" + info.ID + "/Download",
	}
	for route, path := range routes {
		t.Run(route, func(t *testing.T) {
			plain := e.do(t, http.MethodGet, path, nil, nil)
			etag := plain.header.Get("ETag")
			if plain.status != 200 || etag == "" {
				t.Fatalf("plain download: %d, ETag %q", plain.status, etag)
			}
			if ok := e.do(t, http.MethodGet, path, nil, map[string]string{"If-Match": etag}); ok.status != 200 || string(ok.body) != data {
				t.Fatalf("If-Match of the file's own ETag: %d %q", ok.status, ok.body)
			}
			refused := []map[string]string{
				{"If-Match": `"not-the-etag"`},
				{"If-Unmodified-Since": "Mon, 02 Jan 2006 15:04:05 GMT"},
				{"If-Match": `"not-the-etag"`, "Range": "bytes=0-3"},
			}
			for _, h := range refused {
				res := e.do(t, http.MethodGet, path, nil, h)
				if route == "files/v1" {
					wantError(t, res, 412, 1, "PRECONDITION_FAILED_EXCEPTION")
				} else {
					wantEnmeshedError(t, res, 412, codePreconditionFailed, "")
				}
				if strings.Contains(string(res.body), data) || res.header.Get("Content-Range") != "" || res.header.Get("ETag") != "" {
					t.Fatalf("%v: the refusal carries the file: headers %v, body %s", h, res.header, res.body)
				}
			}
			head := e.do(t, http.MethodHead, path, nil, map[string]string{"If-Match": `"not-the-etag"`})
			if head.status != 412 || len(head.body) != 0 {
				t.Fatalf("HEAD with a failed If-Match: %d, %d body bytes", head.status, len(head.body))
			}
		})
	}
}

// TestDownloadClientGoneLeavesNothing: clients that read a few bytes of a large download and
// hang up, or never read at all, leave no goroutine behind once the server noticed, now that
// ReadRange runs on the request's own goroutine.
func TestDownloadClientGoneLeavesNothing(t *testing.T) {
	const size = 2 << 20
	e := newEnv(t, maxFileSize(size))
	tok := e.addFile(t, "big.bin", "application/octet-stream", strings.Repeat("z", size))
	path := "/files/v1/" + tok + "/file"
	if res := e.do(t, http.MethodGet, path, nil, nil); res.status != 200 || len(res.body) != size {
		t.Fatalf("warm-up download: %d, %d bytes", res.status, len(res.body))
	}
	e.srv.Client().CloseIdleConnections()
	settled := func() int {
		runtime.GC()
		return runtime.NumGoroutine()
	}
	var baseline int
	testutil.WaitFor(t, 10*time.Second, "goroutines to settle after the warm-up", func() bool {
		a := settled()
		baseline = a
		return a == settled()
	})

	for i := range 8 {
		conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
		if i%2 == 0 { // read the status line and a little of the body, then hang up
			br := bufio.NewReader(conn)
			if line, err := br.ReadString('\n'); err != nil || !strings.Contains(line, "200") {
				t.Fatalf("status line %q, %v", line, err)
			}
			if _, err := io.CopyN(io.Discard, br, 64<<10); err != nil {
				t.Fatal(err)
			}
		}
		conn.Close()
	}
	testutil.WaitFor(t, 20*time.Second, "the aborted downloads' goroutines to end", func() bool {
		return settled() <= baseline
	})
	if res := e.do(t, http.MethodGet, path, nil, nil); res.status != 200 || len(res.body) != size {
		t.Fatalf("download after the aborted ones: %d, %d bytes", res.status, len(res.body))
	}
}

// TestDownloadStalledClientIsCutOff: a client that asks for a file and then reads nothing pins
// its request (and, in a cluster, shard streams on k nodes) until DownloadStallTimeout cuts it
// off. The server aborts the connection, counts it, and its goroutines end; a reading client is
// unaffected.
func TestDownloadStalledClientIsCutOff(t *testing.T) {
	const size = 16 << 20 // more than loopback's socket buffers on both ends hold
	e := startEnv(t, mounts{downloadStall: 300 * time.Millisecond}, maxFileSize(size))
	tok := e.addFile(t, "big.bin", "application/octet-stream", strings.Repeat("s", size))
	path := "/files/v1/" + tok + "/file"
	if res := e.do(t, http.MethodGet, path, nil, nil); res.status != 200 || len(res.body) != size {
		t.Fatalf("a reading client: %d, %d bytes", res.status, len(res.body))
	}
	e.srv.Client().CloseIdleConnections()

	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
	testutil.WaitFor(t, 20*time.Second, "the stalled download to be counted", func() bool {
		return strings.Contains(string(e.do(t, http.MethodGet, "/metrics", nil, nil).body), "cairn_http_downloads_stalled_total 1")
	})
	// The server has hung up: what is left in the buffers drains, then the stream ends short.
	n, _ := io.Copy(io.Discard, conn)
	if n >= size {
		t.Fatalf("the stalled client still got all %d bytes", n)
	}
	if !strings.Contains(e.logs.String(), "download cut off") {
		t.Fatalf("no log line for the cut-off download:\n%s", e.logs.String())
	}
}
