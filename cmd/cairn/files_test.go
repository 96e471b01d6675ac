package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/cairn-dev/cairn/testcluster"
)

// fileCluster is an in-process 3-node cluster for the file commands, with a 1 MiB file limit.
func fileCluster(t *testing.T) (*testcluster.Cluster, []string) {
	t.Helper()
	skipShort(t)
	c := testcluster.New(t, testcluster.Options{MaxFileSize: 1 << 20})
	var urls []string
	for i := range c.Size() {
		urls = append(urls, "http://"+c.Node(i).HTTPAddr())
	}
	return c, urls
}

func randomFile(t *testing.T, dir, name string, size int) (string, []byte) {
	t.Helper()
	data := make([]byte, size)
	_, _ = rand.Read(data)
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, data
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPutGetRoundTrip: put through one node, get through another, with tokens made by token
// create and share, and every error exit code on the way.
func TestPutGetRoundTrip(t *testing.T) {
	c, urls := fileCluster(t)
	dir := t.TempDir()
	key := c.RootKey

	for _, size := range []int{0, 1, 16<<10 + 7, 700 << 10} { // empty, tiny, past a block, many blocks and segments
		path, data := randomFile(t, dir, "data.bin", size)
		r := runCLI(t, "put", path, "--addr", urls[0], "--key", key, "--name", "report.pdf", "--tag", "a", "--tag", "b")
		if r.code != 0 {
			t.Fatalf("put %d bytes: exit %d: %v", size, r.code, r.err)
		}
		token := strings.TrimSpace(r.stdout)
		if len(token) < 40 || strings.ContainsAny(token, " \n") {
			t.Fatalf("put printed %q, want one full token", r.stdout)
		}
		meta, _, err := c.Client(2).Details(token)
		if err != nil || meta.Name != "report.pdf" || meta.Size != int64(size) || strings.Join(meta.Tags, ",") != "a,b" ||
			meta.MimeType != "application/pdf" {
			t.Fatalf("details after put: %+v, %v", meta, err)
		}
		out := filepath.Join(dir, "out.bin")
		// Flags after the argument, a bare host:port address.
		r = runCLI(t, "get", token, "-o", out, "--addr", strings.TrimPrefix(urls[1], "http://"), "--force")
		if r.code != 0 {
			t.Fatalf("get %d bytes: exit %d: %v", size, r.code, r.err)
		}
		if got := mustRead(t, out); !bytes.Equal(got, data) {
			t.Fatalf("get %d bytes: got %d different bytes", size, len(got))
		}
		if _, err := os.Stat(out + partSuffix); !os.IsNotExist(err) {
			t.Fatalf("the partial file is left behind: %v", err)
		}
		r = runCLI(t, "get", "--addr", urls[2], token, "-o", "-")
		if r.code != 0 || r.stdout != string(data) {
			t.Fatalf("get -o -: exit %d (%v), %d bytes", r.code, r.err, len(r.stdout))
		}
	}

	path, data := randomFile(t, dir, "notes.txt", 5000)
	token := strings.TrimSpace(runCLI(t, "put", "--addr", urls[0], "--key", key, path).stdout)

	// Without -o the file gets its name in cairn, and an existing file is not overwritten.
	t.Chdir(t.TempDir())
	if r := runCLI(t, "get", token, "--addr", urls[1]); r.code != 0 || !bytes.Equal(mustRead(t, "notes.txt"), data) {
		t.Fatalf("get without -o: exit %d: %v", r.code, r.err)
	}
	if r := runCLI(t, "get", token, "--addr", urls[1]); r.code != exitFailure || !strings.Contains(r.err.Error(), "exists") {
		t.Fatalf("get over an existing file: exit %d: %v", r.code, r.err)
	}

	// A read token from token create: it downloads but cannot make tokens.
	r := runCLI(t, "token", "create", token, "--read", "--expires", "1h", "--addr", urls[2])
	if r.code != 0 {
		t.Fatalf("token create --read: exit %d: %v", r.code, r.err)
	}
	readToken := strings.TrimSpace(r.stdout)
	if r := runCLI(t, "get", readToken, "-o", "-", "--addr", urls[0]); r.code != 0 || r.stdout != string(data) {
		t.Fatalf("get with the read token: exit %d: %v", r.code, r.err)
	}
	if r := runCLI(t, "token", "create", readToken, "--addr", urls[0]); r.code != exitDenied ||
		!strings.Contains(r.err.Error(), "UNAUTHORIZED_TOKEN_EXCEPTION") {
		t.Fatalf("token create with a read token: exit %d: %v", r.code, r.err)
	}
	// Delete the read token with the full one: it stops working.
	if r := runCLI(t, "token", "delete", readToken, "--with", token, "--addr", urls[1]); r.code != 0 {
		t.Fatalf("token delete: exit %d: %v", r.code, r.err)
	}
	if r := runCLI(t, "get", readToken, "-o", "-", "--addr", urls[2]); r.code != exitNotFound ||
		!strings.Contains(r.err.Error(), "INVALID_TOKEN_EXCEPTION") {
		t.Fatalf("get with a deleted token: exit %d: %v", r.code, r.err)
	}
	// The last full token cannot be deleted.
	if r := runCLI(t, "token", "delete", token, "--addr", urls[1]); r.code != exitDenied ||
		!strings.Contains(r.err.Error(), "2607") {
		t.Fatalf("deleting the last full token: exit %d: %v", r.code, r.err)
	}

	// share TOKEN: a read link that works; not a terminal, so no QR code.
	r = runCLI(t, "share", token, "--addr", urls[0], "--expires", "24h")
	if r.code != 0 {
		t.Fatalf("share: exit %d: %v", r.code, r.err)
	}
	link := strings.SplitN(r.stdout, "\n", 2)[0]
	if !strings.HasPrefix(link, urls[0]+"/files/v1/") || strings.Contains(r.stdout, "█") {
		t.Fatalf("share printed %q", r.stdout)
	}
	fetchLink(t, link, data)
	linkToken := strings.TrimSuffix(strings.TrimPrefix(link, urls[0]+"/files/v1/"), "/file")
	if resp, _ := c.Client(0).Do(http.MethodDelete, "/files/v1/"+linkToken, nil, nil); resp.Status != http.StatusUnauthorized {
		t.Fatalf("the shared link's token deleted the file: %d %s", resp.Status, resp.Body)
	}

	// share --id: an ephemeral link through /api/v2.
	resp, err := c.Client(1).Do(http.MethodGet, "/api/v2/Files/Own", nil, http.Header{"X-API-KEY": {key}})
	if err != nil || resp.Status != http.StatusOK {
		t.Fatalf("list files: %v %d", err, resp.Status)
	}
	var list struct {
		Result []struct{ ID, Filename string }
	}
	if err := json.Unmarshal(resp.Body, &list); err != nil {
		t.Fatal(err)
	}
	var fileID string
	for _, f := range list.Result {
		if f.Filename == "notes.txt" {
			fileID = f.ID
		}
	}
	r = runCLI(t, "share", "--id", fileID, "--addr", urls[2], "--key", key)
	if r.code != 0 {
		t.Fatalf("share --id: exit %d: %v", r.code, r.err)
	}
	fetchLink(t, strings.TrimSpace(r.stdout), data)
	if r := runCLI(t, "share", "--id", "FIL"+strings.Repeat("x", 17), "--addr", urls[2], "--key", key); r.code != exitNotFound {
		t.Fatalf("share --id of an unknown file: exit %d: %v", r.code, r.err)
	}

	// put - reads standard input (chunked, no length), with --name required.
	if r := runCLI(t, "put", "-", "--addr", urls[0], "--key", key); r.code != exitUsage {
		t.Fatalf("put - without --name: exit %d: %v", r.code, r.err)
	}
	stdinFile, stdinData := randomFile(t, dir, "stdin.bin", 40<<10)
	in, err := os.Open(stdinFile)
	if err != nil {
		t.Fatal(err)
	}
	savedStdin := os.Stdin
	os.Stdin = in
	r = runCLI(t, "put", "-", "--name", "from-stdin.bin", "--addr", urls[0], "--key", key)
	os.Stdin = savedStdin
	in.Close()
	if r.code != 0 {
		t.Fatalf("put -: exit %d: %v", r.code, r.err)
	}
	if g := runCLI(t, "get", strings.TrimSpace(r.stdout), "-o", "-", "--addr", urls[1]); g.code != 0 || g.stdout != string(stdinData) {
		t.Fatalf("get of the stdin upload: exit %d: %v", g.code, g.err)
	}

	// Errors follow the API: no key, a wrong key, too large, a malformed token.
	if r := runCLI(t, "put", path, "--addr", urls[0]); r.code != exitDenied || !strings.Contains(r.err.Error(), "USER_NOT_AUTHENTICATED_EXCEPTION") {
		t.Fatalf("put without a key: exit %d: %v", r.code, r.err)
	}
	if r := runCLI(t, "put", path, "--addr", urls[0], "--key", "ck_wrong"); r.code != exitDenied {
		t.Fatalf("put with a wrong key: exit %d: %v", r.code, r.err)
	}
	big, _ := randomFile(t, dir, "big.bin", 1<<20+1)
	if r := runCLI(t, "put", big, "--addr", urls[1], "--key", key, "--quiet"); r.code != exitRejected ||
		!strings.Contains(r.err.Error(), "maximum file size of 1 MiB (1048576 bytes)") {
		t.Fatalf("put over the limit: exit %d: %v", r.code, r.err)
	}
	if r := runCLI(t, "get", "not-a-token", "-o", "-", "--addr", urls[0]); r.code != exitNotFound {
		t.Fatalf("get with a malformed token: exit %d: %v", r.code, r.err)
	}
	if r := runCLI(t, "put", filepath.Join(dir, "absent"), "--addr", urls[0], "--key", key); r.code != exitFailure {
		t.Fatalf("put of a missing file: exit %d: %v", r.code, r.err)
	}
}

func fetchLink(t *testing.T, link string, want []byte) {
	t.Helper()
	resp, err := http.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, want) {
		t.Fatalf("GET %s: %d, %d bytes", link, resp.StatusCode, len(got))
	}
}

// cuttingProxy forwards to a node and cuts the connection of the next `cuts` downloads after
// cutAfter body bytes, as a flaky network does. It records each download's Range header.
type cuttingProxy struct {
	target   string
	cutAfter int64

	mu     sync.Mutex
	cuts   int
	ranges []string
}

// forward sends r on to target and returns the answer (nil after answering 502 itself).
func forward(w http.ResponseWriter, r *http.Request, target string) *http.Response {
	req, _ := http.NewRequestWithContext(r.Context(), r.Method, target+r.URL.RequestURI(), r.Body)
	req.Header = r.Header.Clone()
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return nil
	}
	return resp
}

// writeHeader copies the answer's header and status to w.
func writeHeader(w http.ResponseWriter, resp *http.Response) {
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
}

func (p *cuttingProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	resp := forward(w, r, p.target)
	if resp == nil {
		return
	}
	defer resp.Body.Close()
	cut := false
	if strings.HasSuffix(r.URL.Path, "/file") {
		p.mu.Lock()
		p.ranges = append(p.ranges, r.Header.Get("Range"))
		if p.cuts > 0 && resp.StatusCode/100 == 2 {
			p.cuts--
			cut = true
		}
		p.mu.Unlock()
	}
	writeHeader(w, resp)
	if !cut {
		_, _ = io.Copy(w, resp.Body)
		return
	}
	_, _ = io.CopyN(w, resp.Body, p.cutAfter)
	w.(http.Flusher).Flush()
	panic(http.ErrAbortHandler) // the client sees the connection die mid-body
}

func (p *cuttingProxy) seen() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.ranges...)
}

// TestGetResumesInterruptedDownload: a connection cut mid-body resumes with Range in the same run;
// a run that gives up leaves FILE.cairn-part, and the next run resumes from it; a partial file that
// is not this file's is caught by the SHA-256 check and removed.
func TestGetResumesInterruptedDownload(t *testing.T) {
	c, urls := fileCluster(t)
	dir := t.TempDir()
	path, data := randomFile(t, dir, "movie.bin", 600<<10)
	token := strings.TrimSpace(runCLI(t, "put", path, "--addr", urls[0], "--key", c.RootKey).stdout)
	proxy := &cuttingProxy{target: urls[1], cutAfter: 200 << 10}
	srv := httptest.NewServer(proxy)
	t.Cleanup(srv.Close)

	// Two cuts in one run: resumed twice, from where each stopped.
	proxy.cuts = 2
	out := filepath.Join(dir, "one-run.bin")
	if r := runCLI(t, "get", token, "-o", out, "--addr", srv.URL); r.code != 0 {
		t.Fatalf("get through a flaky proxy: exit %d: %v", r.code, r.err)
	}
	if !bytes.Equal(mustRead(t, out), data) {
		t.Fatal("the resumed download differs")
	}
	if got := proxy.seen(); strings.Join(got, "|") != "|bytes=204800-|bytes=409600-" {
		t.Fatalf("ranges asked = %q", got)
	}

	// A run without retries gives up and keeps the part; the next run resumes it.
	proxy.mu.Lock()
	proxy.ranges, proxy.cuts = nil, 1
	proxy.mu.Unlock()
	out = filepath.Join(dir, "two-runs.bin")
	r := runCLI(t, "get", token, "-o", out, "--addr", srv.URL, "--retries", "0")
	if r.code != exitFailure || !strings.Contains(r.err.Error(), "run the command again to resume") {
		t.Fatalf("get that gives up: exit %d: %v", r.code, r.err)
	}
	if part := mustRead(t, out+partSuffix); !bytes.Equal(part, data[:200<<10]) {
		t.Fatalf("the part holds %d bytes, want the first %d", len(part), 200<<10)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatal("an incomplete download took the destination's name")
	}
	if r := runCLI(t, "get", token, "-o", out, "--addr", srv.URL); r.code != 0 || !bytes.Equal(mustRead(t, out), data) {
		t.Fatalf("resuming run: exit %d: %v", r.code, r.err)
	}
	if got := proxy.seen(); strings.Join(got, "|") != "|bytes=204800-" {
		t.Fatalf("ranges asked = %q", got)
	}

	// A stale part of another file: caught by the hash, removed, and the next run starts afresh.
	out = filepath.Join(dir, "stale.bin")
	if err := os.WriteFile(out+partSuffix, bytes.Repeat([]byte("x"), 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	r = runCLI(t, "get", token, "-o", out, "--addr", urls[2])
	if r.code != exitFailure || !strings.Contains(r.err.Error(), "does not match the file's SHA-256") {
		t.Fatalf("get over a stale part: exit %d: %v", r.code, r.err)
	}
	if _, err := os.Stat(out + partSuffix); !os.IsNotExist(err) {
		t.Fatal("the stale part is still there")
	}
	if r := runCLI(t, "get", token, "-o", out, "--addr", urls[2]); r.code != 0 || !bytes.Equal(mustRead(t, out), data) {
		t.Fatalf("get after the stale part: exit %d: %v", r.code, r.err)
	}
	// A part longer than the file (416 to its Range): discarded and downloaded again.
	out = filepath.Join(dir, "long.bin")
	if err := os.WriteFile(out+partSuffix, make([]byte, len(data)+10), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := runCLI(t, "get", token, "-o", out, "--addr", urls[0]); r.code != 0 || !bytes.Equal(mustRead(t, out), data) {
		t.Fatalf("get over a too-long part: exit %d: %v", r.code, r.err)
	}
}

// readPTY collects what is written to the terminal side of a pseudo-terminal until it closes.
func readPTY(t *testing.T) (tty *os.File, output func() string) {
	t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	var buf bytes.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(&buf, ptmx) // ends with EIO once the tty side is closed
	}()
	t.Cleanup(func() { ptmx.Close(); tty.Close() })
	return tty, func() string {
		tty.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the pseudo-terminal did not drain")
		}
		return buf.String()
	}
}

// TestProgressBarOnTerminal: put and get draw a progress bar (bytes, rate, ETA) on a terminal
// stderr, nothing with --quiet or when stderr is not a terminal; share draws a QR code on a
// terminal stdout.
func TestProgressBarOnTerminal(t *testing.T) {
	c, urls := fileCluster(t)
	dir := t.TempDir()
	path, data := randomFile(t, dir, "big.bin", 900<<10)
	bar := regexp.MustCompile(`100% \|█+\| \(900/900 KiB, [0-9.]+ [KMG]?i?B/s\)`)
	eta := regexp.MustCompile(`\[\d+s:\d+s\]`)

	tty, output := readPTY(t)
	var stdout bytes.Buffer
	code, err := runCLIWith(&stdout, tty, "put", path, "--addr", urls[0], "--key", c.RootKey)
	if code != 0 {
		t.Fatalf("put on a terminal: exit %d: %v", code, err)
	}
	token := strings.TrimSpace(stdout.String())
	drawn := output()
	if !strings.Contains(drawn, "upload") || !bar.MatchString(drawn) || !eta.MatchString(drawn) {
		t.Fatalf("no upload progress bar with bytes, rate and ETA on the terminal:\n%q", drawn)
	}

	tty, output = readPTY(t)
	out := filepath.Join(dir, "out.bin")
	if code, err := runCLIWith(io.Discard, tty, "get", token, "-o", out, "--addr", urls[1]); code != 0 {
		t.Fatalf("get on a terminal: exit %d: %v", code, err)
	}
	if drawn := output(); !strings.Contains(drawn, "download") || !bar.MatchString(drawn) {
		t.Fatalf("no download progress bar on the terminal:\n%q", drawn)
	}
	if !bytes.Equal(mustRead(t, out), data) {
		t.Fatal("the download differs")
	}

	// Through a slow link the bar is drawn while the transfer runs: bytes so far, rate and ETA.
	slow := httptest.NewServer(&slowProxy{target: urls[2], chunk: 64 << 10, pause: 80 * time.Millisecond})
	t.Cleanup(slow.Close)
	tty, output = readPTY(t)
	if code, err := runCLIWith(io.Discard, tty, "get", token, "-o", "-", "--addr", slow.URL); code != 0 {
		t.Fatalf("get through a slow link: exit %d: %v", code, err)
	}
	running := regexp.MustCompile(`download +[1-9][0-9]?% \|█*[ ]+\| \([0-9.]+/900 KiB, [0-9.]+ [KMG]?i?B/s\) \[\d+s:\d+s\]`)
	if drawn := output(); !running.MatchString(drawn) {
		t.Fatalf("no progress drawn during a slow download:\n%q", drawn)
	}

	// --quiet: nothing on the terminal.
	tty, output = readPTY(t)
	if code, err := runCLIWith(io.Discard, tty, "get", token, "-o", "-", "--quiet", "--addr", urls[2]); code != 0 {
		t.Fatalf("get --quiet: exit %d: %v", code, err)
	}
	if drawn := output(); drawn != "" {
		t.Fatalf("--quiet drew %q", drawn)
	}
	// Not a terminal: nothing either.
	if r := runCLI(t, "put", path, "--addr", urls[0], "--key", c.RootKey); r.code != 0 || r.stderr != "" {
		t.Fatalf("put to a pipe: exit %d, stderr %q", r.code, r.stderr)
	}

	// share on a terminal stdout: the link, then a QR code of it.
	tty, output = readPTY(t)
	if code, err := runCLIWith(tty, io.Discard, "share", token, "--addr", urls[0]); code != 0 {
		t.Fatalf("share on a terminal: exit %d: %v", code, err)
	}
	drawn = output()
	lines := strings.Split(strings.TrimRight(strings.ReplaceAll(drawn, "\r", ""), "\n"), "\n")
	if len(lines) < 12 || !strings.HasPrefix(lines[0], urls[0]+"/files/v1/") || !strings.ContainsRune(drawn, '█') {
		t.Fatalf("share on a terminal printed:\n%s", drawn)
	}
	width := len([]rune(lines[1]))
	for _, l := range lines[1:] {
		if len([]rune(l)) != width {
			t.Fatalf("the QR code is not square-ish: rows of %d and %d runes", width, len([]rune(l)))
		}
	}
}

// slowProxy forwards to a node and sends each answer's body in chunks with a pause between them,
// as a slow link does (the pause shapes the transfer; nothing waits on it).
type slowProxy struct {
	target string
	chunk  int64
	pause  time.Duration
}

func (p *slowProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	resp := forward(w, r, p.target)
	if resp == nil {
		return
	}
	defer resp.Body.Close()
	writeHeader(w, resp)
	for {
		n, err := io.CopyN(w, resp.Body, p.chunk)
		w.(http.Flusher).Flush()
		if err != nil || n < p.chunk {
			return
		}
		time.Sleep(p.pause)
	}
}
