package testcluster

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/node"

	"github.com/cairn-dev/cairn/internal/testutil"
)

// TestHostileClientsAreBounded sends what an attacker would to a real cluster: stalled and short
// bodies, huge declared lengths, a 5 MB filename, more concurrent uploads than a node takes, and a
// zero-length suffix range. Each gets its API's own error, promptly, and leaves no file or shard.
func TestHostileClientsAreBounded(t *testing.T) {
	const idle = time.Second
	c := New(t, Options{Configure: func(_ int, cfg *node.Config) {
		cfg.UploadIdleTimeout = idle
		cfg.MaxConcurrentUploads = 2
	}})
	data := randomData(3, 6000)
	kept := keepOneFile(t, c, data)
	token, shards, nothingLeft := kept.token, kept.shards, kept.nothingLeft
	addr := c.Node(1).HTTPAddr()
	v1Head := func(length string) string {
		return fmt.Sprintf("POST /files/v1/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"+
			"Content-Type: multipart/form-data; boundary=XX\r\n%s\r\n", c.RootKey, length)
	}
	v2Head := func(length string) string {
		return fmt.Sprintf("POST /api/v2/Files/Own HTTP/1.1\r\nHost: x\r\nX-API-KEY: %s\r\n"+
			"Content-Type: multipart/form-data; boundary=XX\r\n%s\r\n", c.RootKey, length)
	}
	filePart := "--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n\r\n"

	t.Run("stalled chunked body is cut off at the idle deadline", func(t *testing.T) {
		conn := rawConn(t, addr)
		chunk := filePart + string(randomData(1, 90_000)) // more than a segment: shards get committed
		send(t, conn, v1Head("Transfer-Encoding: chunked\r\n")+fmt.Sprintf("%x\r\n%s\r\n", len(chunk), chunk))
		testutil.WaitFor(t, 10*time.Second, "shards of the stalled upload", func() bool { return countShards(t, c, "") > shards })
		resp := readAnswer(t, conn, 10*idle) // and then nothing more is sent
		wantError(t, "stalled upload", resp, http.StatusBadRequest, 22)
		nothingLeft(t, "stalled upload")
	})
	t.Run("short body under a large declared length does not hang", func(t *testing.T) {
		for _, head := range []string{v1Head("Content-Length: 5000000\r\n"), v2Head("Content-Length: 5000000\r\n")} {
			resp := rawAnswer(t, addr, head+filePart+"only a few bytes", 10*idle)
			if resp.Status != http.StatusBadRequest {
				t.Fatalf("short body: status %d body %s, want 400", resp.Status, resp.Body)
			}
		}
		nothingLeft(t, "short body")
	})
	t.Run("declared length over the limit is refused before the body", func(t *testing.T) {
		resp := rawAnswer(t, addr, v1Head("Content-Length: 10000000000\r\n")+filePart, 10*time.Second)
		wantError(t, "10 GB declared", resp, http.StatusBadRequest, 2610)
		resp = rawAnswer(t, addr, v2Head("Content-Length: 10000000000\r\n")+filePart, 10*time.Second)
		wantV2Error(t, "10 GB declared on /api/v2", resp, http.StatusBadRequest, "error.runtime.validation.invalidPropertyValue")
		nothingLeft(t, "declared too large")
	})
	t.Run("5 MB filename", func(t *testing.T) {
		name := strings.Repeat("n", 5<<20)
		body := "--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" + name + "\"\r\n\r\nabc\r\n--XX--\r\n"
		length := fmt.Sprintf("Content-Length: %d\r\n", len(body))
		wantError(t, "5 MB filename", rawAnswer(t, addr, v1Head(length)+body, time.Minute), http.StatusBadRequest, 15)
		wantV2Error(t, "5 MB filename on /api/v2", rawAnswer(t, addr, v2Head(length)+body, time.Minute),
			http.StatusBadRequest, "error.runtime.validation.invalidPropertyValue")
		nothingLeft(t, "5 MB filename")
	})
	t.Run("concurrent uploads over the cap answer 503", func(t *testing.T) {
		// Two slow but steady uploads hold both slots: a byte every tenth of the idle deadline
		// keeps them alive, so the idle deadline does not end them.
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				holdUpload(addr, v1Head("Transfer-Encoding: chunked\r\n")+fmt.Sprintf("%x\r\n%s\r\n", len(filePart), filePart), idle/10, stop)
			}()
		}
		testutil.WaitFor(t, 30*time.Second, "two uploads in flight on node1", func() bool {
			return metricValue(t, c, 1, "cairn_http_uploads_in_flight") == 2
		})
		keyed := *c.Client(1)
		keyed.APIKey = c.RootKey
		busy := `cairn_http_uploads_refused_total{reason="busy"}`
		refused := metricValue(t, c, 1, busy)
		_, resp, err := keyed.Upload("third.bin", data)
		if err != nil {
			t.Fatal(err)
		}
		wantError(t, "third upload", resp, http.StatusServiceUnavailable, 1)
		if resp.Header.Get("Retry-After") == "" {
			t.Fatal("503 without Retry-After")
		}
		body, ct := multipartBody(t, nil, "file", "third.bin", data)
		resp, err = keyed.Do(http.MethodPost, "/api/v2/Files/Own", body,
			http.Header{"Content-Type": {ct}, "X-Api-Key": {c.RootKey}})
		if err != nil {
			t.Fatal(err)
		}
		wantV2Error(t, "third upload on /api/v2", resp, http.StatusServiceUnavailable, "error.connector.unavailable")
		if resp.Header.Get("Retry-After") == "" {
			t.Fatal("/api/v2 503 without Retry-After")
		}
		// Both 503s came from the cap, not from a cluster between leaders.
		if got := metricValue(t, c, 1, busy); got != refused+2 {
			t.Fatalf("%s went from %v to %v, want +2", busy, refused, got)
		}
		// Another node has room: the cap is per node.
		mustUpload(t, c, 2, "elsewhere.bin", data)
		close(stop)
		wg.Wait()
		testutil.WaitFor(t, 10*time.Second, "the slots freed", func() bool {
			return metricValue(t, c, 1, "cairn_http_uploads_in_flight") == 0
		})
		mustUpload(t, c, 1, "after.bin", data)
	})
	t.Run("bytes=-0 is unsatisfiable", func(t *testing.T) {
		get := func(rng string) func() (Response, error) {
			return func() (Response, error) {
				return c.Client(2).Do(http.MethodGet, "/files/v1/"+token+"/file", nil, http.Header{"Range": {rng}})
			}
		}
		resp := not503(t, get("bytes=-0"))
		if resp.Status != http.StatusRequestedRangeNotSatisfiable ||
			resp.Header.Get("Content-Range") != fmt.Sprintf("bytes */%d", len(data)) {
			t.Fatalf("bytes=-0: %d %v", resp.Status, resp.Header)
		}
		resp = not503(t, get("bytes=-1"))
		if resp.Status != http.StatusPartialContent || !bytes.Equal(resp.Body, data[len(data)-1:]) {
			t.Fatalf("bytes=-1: %d %q", resp.Status, resp.Body)
		}
	})
}

// rawAnswer sends one hand-written request on a fresh connection and reads the answer, again while
// the answer is a 503: on a loaded machine the cluster may be between leaders, which is not what
// these tests are about.
func rawAnswer(t *testing.T, addr, request string, within time.Duration) Response {
	t.Helper()
	var resp Response
	testutil.WaitForState(t, 30*time.Second, "an answer that is not 503", func() (bool, string) {
		conn := rawConn(t, addr)
		// A node that answers early (a 503, or a refusal before the body) closes the connection
		// without reading the rest, so the send may break; the answer is still there to read.
		_, _ = io.WriteString(conn, request)
		resp = readAnswer(t, conn, within)
		conn.Close()
		return resp.Status != http.StatusServiceUnavailable, fmt.Sprintf("status %d body %.300s", resp.Status, resp.Body)
	})
	return resp
}

// not503 repeats do while it answers 503 (see rawAnswer).
func not503(t *testing.T, do func() (Response, error)) Response {
	t.Helper()
	var resp Response
	testutil.WaitForState(t, 30*time.Second, "an answer that is not 503", func() (bool, string) {
		var err error
		if resp, err = do(); err != nil {
			t.Fatal(err)
		}
		return resp.Status != http.StatusServiceUnavailable, fmt.Sprintf("status %d body %.300s", resp.Status, resp.Body)
	})
	return resp
}

// holdUpload keeps one upload open on addr as a slow but steady client does, one byte every
// `every`, until stop; when the node answers early (a 503 between leaders), it starts over.
func holdUpload(addr, request string, every time.Duration, stop <-chan struct{}) {
	for {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			return
		}
		answered := make(chan struct{})
		go func() {
			defer close(answered)
			_, _ = http.ReadResponse(bufio.NewReader(conn), nil)
		}()
		_, err = io.WriteString(conn, request)
		tick := time.NewTicker(every)
		for err == nil {
			select {
			case <-stop:
				tick.Stop()
				conn.Close()
				<-answered
				return
			case <-answered:
				err = errors.New("answered")
			case <-tick.C:
				_, err = io.WriteString(conn, "1\r\nz\r\n")
			}
		}
		tick.Stop()
		conn.Close()
		<-answered
		select {
		case <-stop:
			return
		default:
		}
	}
}

// rawConn dials addr for a hand-written HTTP/1.1 request; the test closes it.
func rawConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func send(t *testing.T, conn net.Conn, s string) {
	t.Helper()
	if _, err := io.WriteString(conn, s); err != nil {
		t.Fatalf("send: %v", err)
	}
}

// readAnswer reads one HTTP response from conn. The deadline only turns a hang into a failure.
func readAnswer(t *testing.T, conn net.Conn, within time.Duration) Response {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(within))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer within %s: %v", within, err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return Response{Status: res.StatusCode, Header: res.Header, Body: body}
}

// wantV2Error checks an /api/v2 error envelope.
func wantV2Error(t *testing.T, what string, resp Response, status int, code string) {
	t.Helper()
	var env struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(resp.Body, &env); err != nil || resp.Status != status || env.Error.Code != code {
		t.Fatalf("%s: got status %d body %s, want status %d code %s", what, resp.Status, resp.Body, status, code)
	}
}

// TestStalledNonUploadBodiesAreCutOffAtTheIdleDeadline: the node's server has no ReadTimeout, and
// only uploads had an idle deadline on their body, so a client that declared a body and sent
// nothing held a handler and a connection for as long as it liked: on POST /files/v1/{token}/tokens
// without any credentials (the body is read before the token), and on every other route that reads
// a body. Each is now answered, in its API's format, once the body has sent nothing for the idle
// deadline (--upload-idle-timeout).
func TestStalledNonUploadBodiesAreCutOffAtTheIdleDeadline(t *testing.T) {
	const idle = time.Second
	c := New(t, Options{Configure: func(_ int, cfg *node.Config) { cfg.UploadIdleTimeout = idle }})
	addr := c.Node(1).HTTPAddr()
	stalled := func(method, path, auth string) string {
		return method + " " + path + " HTTP/1.1\r\nHost: x\r\n" + auth +
			"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
	}
	root := "Authorization: Bearer " + c.RootKey + "\r\n"
	for _, tc := range []struct {
		name, request string
		want          func(t *testing.T, resp Response)
	}{
		{"token create without credentials", stalled(http.MethodPost, "/files/v1/"+strings.Repeat("A", 43)+"/tokens", ""),
			func(t *testing.T, resp Response) { wantError(t, "token create", resp, http.StatusBadRequest, 22) }},
		{"settings", stalled(http.MethodPut, "/files/v1/settings", root),
			func(t *testing.T, resp Response) { wantError(t, "settings", resp, http.StatusBadRequest, 22) }},
		{"api key create", stalled(http.MethodPost, "/v1/apikeys", root),
			func(t *testing.T, resp Response) { wantError(t, "api key create", resp, http.StatusBadRequest, 22) }},
		{"api/v2 token create", stalled(http.MethodPost, "/api/v2/Files/FILAAAAAAAAAAAAAAAAA/Token", "X-API-KEY: "+c.RootKey+"\r\n"),
			func(t *testing.T, resp Response) {
				wantV2Error(t, "api/v2 token create", resp, http.StatusBadRequest, "error.connector.validation.invalidJsonInPayload")
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := rawConn(t, addr)
			send(t, conn, tc.request) // and then nothing more
			tc.want(t, readAnswer(t, conn, 10*idle))
		})
	}
}
