package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"os/exec"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/cairn-dev/cairn/core"
	"github.com/cairn-dev/cairn/node"
)

// defaultBenchWorkloads are the four workloads of issue 9, on which the data plane is judged.
const defaultBenchWorkloads = "put:4MiB:20,get:4MiB:20,put:4KiB:64,get:4KiB:64"

// runBench measures cairn's file and token workloads through the public API, with raw keep-alive
// HTTP/1.1 clients spread round-robin over the nodes, against a 3-node cluster with real disks run
// in a child process (so that the servers' CPU is measured apart from the load generator's), or
// against a running cluster given with --addr. In the same run it measures the machine's ceilings
// (disk, and a trivial Go file server on the same bytes) and prints each figure as a ratio of its
// ceiling.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := newCommand("cairn bench", "", "Measure uploads, downloads and token creation against the machine's ceilings (a 3-node\n"+
		"cluster in a child process, or --addr for a running one) and print a table.", stderr)
	fs := cmd.fs
	workloadsFlag := fs.String("workloads", defaultBenchWorkloads,
		"comma-separated KIND:SIZE:CLIENTS, KIND one of put, get, token-persisted, token-ephemeral (SIZE is ignored for tokens)")
	duration := fs.Duration("duration", 5*time.Second, "how long each workload is measured, after its warm-up")
	warmup := fs.Duration("warmup", time.Second, "how long each workload runs unmeasured first")
	rounds := fs.Int("rounds", 1, "rounds over all workloads (interleaved; the table sums them)")
	ceilings := fs.Bool("ceilings", true, "also measure the machine's ceilings (disk and a trivial file server)")
	ceilingDir := fs.String("ceiling-dir", "", "directory on the disk to measure (default: the bench cluster's, or the temp dir with --addr)")
	addrs := fs.String("addr", "", "comma-separated HTTP addresses of a running cluster (default: start a 3-node cluster in a child process)")
	key := fs.String("key", "", "API key for --addr (default: the bench cluster's root key)")
	logLevel := fs.String("log-level", "", "log level of the bench cluster (default: silent)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the bench cluster's process to this file")
	serve := fs.Bool("serve-cluster", false, "internal: run the bench cluster and a file server in this process, for a parent cairn bench")
	serveSizes := fs.String("serve-sizes", "", "internal: file sizes the file server offers")
	maxFileSize := fs.Int64("max-file-size", 0, "internal: the bench cluster's --max-file-size")
	clientTLS := addClientTLSFlags(fs) // httpclient.go: for https:// addresses
	if _, err := cmd.parse(args, 0); err != nil {
		return err
	}
	if *serve {
		return serveBenchCluster(ctx, *serveSizes, *maxFileSize, *logLevel, *cpuProfile, stdout, stderr)
	}
	workloads, err := parseWorkloads(*workloadsFlag)
	if err != nil {
		return fmt.Errorf("--workloads: %w", err)
	}
	if *duration <= 0 || *rounds <= 0 || *warmup < 0 {
		return errors.New("--duration and --rounds must be positive, --warmup not negative")
	}

	var target benchTarget
	if *addrs != "" {
		if *key == "" {
			return errors.New("--key is required with --addr")
		}
		for _, a := range strings.Split(*addrs, ",") {
			target.endpoints = append(target.endpoints, normalizeBenchAddr(a))
		}
		target.key = *key
		if target.tls, err = clientTLS.tlsConfig(); err != nil {
			return err
		}
		target.cpu = scrapeServerCPU(target.endpoints, target.tls)
		if *cpuProfile != "" {
			return errors.New("--cpuprofile profiles the bench cluster; with --addr use the nodes' own profiling")
		}
	} else {
		child, err := startBenchChild(ctx, workloads, *logLevel, *cpuProfile, stderr)
		if err != nil {
			return err
		}
		defer child.stop()
		target = child.target
		if *ceilingDir == "" {
			*ceilingDir = child.dir
		}
	}
	if *ceilingDir == "" {
		*ceilingDir = os.TempDir()
	}

	fmt.Fprintf(stdout, "cairn bench: %d nodes, %d round(s), warm-up %s, %s per workload; load average at start %s\n\n",
		len(target.endpoints), *rounds, *warmup, *duration, loadAverage())
	var ceil benchCeilings
	if *ceilings {
		var err error
		if ceil, err = measureCeilings(*ceilingDir); err != nil {
			return fmt.Errorf("ceilings: %w", err)
		}
		ceil.print(stdout)
	}

	b := &benchRunner{target: target, client: &http.Client{Timeout: 60 * time.Second,
		Transport: &http.Transport{TLSClientConfig: target.tls.Clone()}}}
	if err := b.prepare(ctx, workloads); err != nil {
		return err
	}
	results := make([]*benchResult, len(workloads))
	fileServer := make([]*benchResult, len(workloads))
	for i := range results {
		results[i], fileServer[i] = &benchResult{}, &benchResult{}
	}
	for range *rounds {
		for i, w := range workloads {
			if w.kind == "get" && target.fileServer != "" && *ceilings {
				// The ceiling runs right before its cairn run, so drift on a loaded machine hits both.
				fileServer[i].merge(b.run(ctx, w, *warmup, *duration, true))
			}
			results[i].merge(b.run(ctx, w, *warmup, *duration, false))
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\tclients\tstarted\tok\terrors\tops/s\tMiB/s\tp50\tp99\tmax\tsrv CPU/op\tsrv peak RSS growth\tceiling\tratio\tload\t")
	for i, w := range workloads {
		r := results[i]
		ceilName, ratio := ceil.ratio(w, r, fileServer[i])
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%.0f\t%.1f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
			w.name(), w.clients, r.started, len(r.latencies), r.errorCount(), r.opsPerSec(), r.mibPerSec(w.size),
			r.percentile(0.50), r.percentile(0.99), r.percentile(1), r.cpuPerOp(), formatMiB(r.peakRSS),
			ceilName, ratio, r.load)
		if fs := fileServer[i]; fs.started > 0 {
			fmt.Fprintf(tw, "  file server\t%d\t%d\t%d\t%d\t%.0f\t%.1f\t%s\t%s\t%s\t%s\t\t\t\t%s\t\n",
				w.clients, fs.started, len(fs.latencies), fs.errorCount(), fs.opsPerSec(), fs.mibPerSec(w.size),
				fs.percentile(0.50), fs.percentile(0.99), fs.percentile(1), fs.cpuPerOp(), fs.load)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for i, w := range workloads {
		results[i].printErrors(stdout, w.name())
		fileServer[i].printErrors(stdout, w.name()+" (file server)")
	}
	return nil
}

// normalizeBenchAddr accepts host:port or a URL.
func normalizeBenchAddr(a string) string {
	a = strings.TrimSuffix(strings.TrimSpace(a), "/")
	if !strings.Contains(a, "://") {
		a = "http://" + a
	}
	return a
}

// benchWorkload is one KIND:SIZE:CLIENTS item of --workloads.
type benchWorkload struct {
	kind    string // put, get, token-persisted, token-ephemeral
	size    int64
	clients int
}

func (w benchWorkload) name() string {
	if strings.HasPrefix(w.kind, "token") {
		return w.kind
	}
	return strings.ToUpper(w.kind) + " " + formatSize(w.size)
}

func parseWorkloads(s string) ([]benchWorkload, error) {
	var out []benchWorkload
	for _, item := range strings.Split(s, ",") {
		parts := strings.Split(strings.TrimSpace(item), ":")
		if len(parts) != 3 {
			return nil, fmt.Errorf("%q: want KIND:SIZE:CLIENTS", item)
		}
		w := benchWorkload{kind: parts[0]}
		switch w.kind {
		case "put", "get":
			size, err := node.ParseSize(parts[1])
			if err != nil || size <= 0 {
				return nil, fmt.Errorf("%q: size %q: want a positive size such as 4KiB", item, parts[1])
			}
			w.size = size
		case "token-persisted", "token-ephemeral":
		default:
			return nil, fmt.Errorf("%q: unknown kind %q", item, w.kind)
		}
		n, err := strconv.Atoi(parts[2])
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q: clients %q: want a positive number", item, parts[2])
		}
		w.clients = n
		out = append(out, w)
	}
	return out, nil
}

func formatSize(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return strconv.FormatInt(n>>30, 10) + " GiB"
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + " MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + " KiB"
	}
	return strconv.FormatInt(n, 10) + " B"
}

func formatMiB(n int64) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprintf("%+.0f MiB", float64(n)/(1<<20))
}

// loadAverage is the machine's 1, 5 and 15 minute load average.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// benchTarget is what the workloads run against.
type benchTarget struct {
	endpoints  []string
	key        string
	tls        *tls.Config // for https:// endpoints (--ca-cert, --client-cert)
	fileServer string      // base URL of the trivial file server (child mode only)
	// cpu returns the servers' CPU seconds so far, or false when it cannot tell.
	cpu func() (float64, bool)
	// resetPeak resets the servers' peak resident set and returns the resident set now; peakRSS
	// reads the peak since (child mode only).
	resetPeak func() int64
	peakRSS   func() int64
}

// benchRunner holds the per-size request bodies and the files GET workloads read.
type benchRunner struct {
	target benchTarget
	client *http.Client
	bodies map[int64]benchBody
	files  map[int64][]string // tokens of uploaded files per size
	fileID string             // for token workloads
}

// benchBody is a prebuilt /files/v1 multipart upload of one size.
type benchBody struct {
	contentType string
	body        []byte
}

func newBenchBody(size int64) (benchBody, error) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if err := mw.WriteField("name", "bench.bin"); err != nil {
		return benchBody{}, err
	}
	h := make(textproto.MIMEHeader)
	h.Set("Content-Disposition", `form-data; name="file"; filename="bench.bin"`)
	h.Set("Content-Type", "application/octet-stream")
	part, err := mw.CreatePart(h)
	if err != nil {
		return benchBody{}, err
	}
	part.Write(newBenchData(size))
	if err := mw.Close(); err != nil {
		return benchBody{}, err
	}
	return benchBody{contentType: mw.FormDataContentType(), body: buf.Bytes()}, nil
}

// prepare builds the upload bodies and stores the files GET and token workloads read: one per
// client, so concurrent GETs do not all hit the same shards.
func (b *benchRunner) prepare(ctx context.Context, workloads []benchWorkload) error {
	b.bodies = map[int64]benchBody{}
	b.files = map[int64][]string{}
	for _, w := range workloads {
		switch w.kind {
		case "put", "get":
			if _, ok := b.bodies[w.size]; !ok {
				body, err := newBenchBody(w.size)
				if err != nil {
					return err
				}
				b.bodies[w.size] = body
			}
		}
		if w.kind == "get" {
			for len(b.files[w.size]) < w.clients {
				var c *benchConn
				tok, status, sample, err := b.put(ctx, &c, b.target.endpoints[len(b.files[w.size])%len(b.target.endpoints)], w.size)
				if c != nil {
					c.conn.Close()
				}
				if err != nil {
					return fmt.Errorf("upload a %s file to read: status %d %s: %w", formatSize(w.size), status, sample, err)
				}
				b.files[w.size] = append(b.files[w.size], tok)
			}
		}
		if strings.HasPrefix(w.kind, "token") && b.fileID == "" {
			id, err := benchUpload(ctx, b.client, b.target.endpoints[0], b.target.key)
			if err != nil {
				return fmt.Errorf("upload the file for token workloads: %w", err)
			}
			b.fileID = id
		}
	}
	return nil
}

// benchResult is what one workload run saw. Every request started is counted: as a success with
// its latency, or as an error under its status (or transport failure) with one sample body.
type benchResult struct {
	started   int
	latencies []time.Duration
	errors    map[string]*benchErrors
	elapsed   time.Duration
	cpu       float64 // server CPU seconds, or -1 when unknown
	peakRSS   int64   // growth of the servers' peak resident set over the run
	load      string
}

type benchErrors struct {
	count  int
	sample string
}

func (r *benchResult) addError(kind, sample string) {
	if r.errors == nil {
		r.errors = map[string]*benchErrors{}
	}
	e := r.errors[kind]
	if e == nil {
		e = &benchErrors{sample: sample}
		r.errors[kind] = e
	}
	e.count++
}

func (r *benchResult) errorCount() int {
	n := 0
	for _, e := range r.errors {
		n += e.count
	}
	return n
}

func (r *benchResult) merge(o *benchResult) {
	r.started += o.started
	r.latencies = append(r.latencies, o.latencies...)
	for k, e := range o.errors {
		for range e.count {
			r.addError(k, e.sample)
		}
	}
	r.elapsed += o.elapsed
	if o.cpu < 0 || r.cpu < 0 {
		r.cpu = -1
	} else {
		r.cpu += o.cpu
	}
	r.peakRSS = max(r.peakRSS, o.peakRSS)
	if o.load != "" {
		r.load = o.load
	}
}

func (r *benchResult) opsPerSec() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(len(r.latencies)) / r.elapsed.Seconds()
}

func (r *benchResult) mibPerSec(size int64) float64 {
	return r.opsPerSec() * float64(size) / (1 << 20)
}

func (r *benchResult) cpuPerOp() string {
	if r.cpu < 0 || len(r.latencies) == 0 {
		return "-"
	}
	return (time.Duration(r.cpu / float64(len(r.latencies)) * float64(time.Second))).Round(time.Microsecond).String()
}

func (r *benchResult) percentile(p float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	s := slices.Clone(r.latencies)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))].Round(10 * time.Microsecond)
}

func (r *benchResult) printErrors(w io.Writer, name string) {
	kinds := make([]string, 0, len(r.errors))
	for k := range r.errors {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		e := r.errors[k]
		fmt.Fprintf(w, "  %s: %d x %s, e.g. %q\n", name, e.count, k, e.sample)
	}
}

// drainTimeout bounds how long a run waits for requests still in flight at its deadline. Those
// still running after it are counted as errors ("cut off").
const drainTimeout = 30 * time.Second

// run warms up for warmup, then measures the workload for duration. No request starts after the
// deadline; those in flight finish and count (elapsed runs until the last one ends).
func (b *benchRunner) run(ctx context.Context, w benchWorkload, warmup, duration time.Duration, fileServer bool) *benchResult {
	if warmup > 0 {
		b.runFor(ctx, w, warmup, fileServer)
	}
	res := &benchResult{load: loadAverage()}
	var rss0 int64
	if b.target.resetPeak != nil {
		rss0 = b.target.resetPeak()
	}
	cpu0, cpuOK := 0.0, false
	if b.target.cpu != nil {
		cpu0, cpuOK = b.target.cpu()
	}
	r := b.runFor(ctx, w, duration, fileServer)
	res.merge(r)
	res.cpu = -1
	if cpuOK {
		if cpu1, ok := b.target.cpu(); ok {
			res.cpu = cpu1 - cpu0
		}
	}
	if b.target.peakRSS != nil {
		res.peakRSS = b.target.peakRSS() - rss0
	}
	return res
}

func (b *benchRunner) runFor(ctx context.Context, w benchWorkload, duration time.Duration, fileServer bool) *benchResult {
	deadline := time.Now().Add(duration)
	// Requests are bounded by the drain timeout past the deadline, not by the deadline itself.
	ctx, cancel := context.WithDeadline(ctx, deadline.Add(drainTimeout))
	defer cancel()
	var mu sync.Mutex
	total := &benchResult{}
	var wg sync.WaitGroup
	start := time.Now()
	for c := range w.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := &benchResult{}
			conns := make([]*benchConn, len(b.target.endpoints)+1)
			defer func() {
				for _, cc := range conns {
					if cc != nil {
						cc.conn.Close()
					}
				}
			}()
			for i := c; time.Now().Before(deadline) && ctx.Err() == nil; i++ {
				n := i % len(b.target.endpoints)
				endpoint := b.target.endpoints[n]
				if fileServer {
					n, endpoint = len(b.target.endpoints), b.target.fileServer
				}
				local.started++
				t0 := time.Now()
				status, sample, err := b.one(ctx, &conns[n], endpoint, w, c, fileServer)
				switch {
				case err == nil:
					local.latencies = append(local.latencies, time.Since(t0))
				case ctx.Err() != nil:
					local.addError("cut off by the drain timeout", err.Error())
				case status != 0:
					local.addError("status "+strconv.Itoa(status), sample)
				default:
					local.addError("transport error", err.Error())
				}
			}
			mu.Lock()
			total.merge(local)
			mu.Unlock()
		}()
	}
	wg.Wait()
	total.elapsed = time.Since(start)
	return total
}

// one sends a single request of workload w as client c.
func (b *benchRunner) one(ctx context.Context, c **benchConn, endpoint string, w benchWorkload, client int, fileServer bool) (int, string, error) {
	switch w.kind {
	case "put":
		_, status, sample, err := b.put(ctx, c, endpoint, w.size)
		return status, sample, err
	case "get":
		path := "/f/" + strconv.FormatInt(w.size, 10)
		if !fileServer {
			files := b.files[w.size]
			path = "/files/v1/" + files[client%len(files)] + "/file"
		}
		req := "GET " + path + " HTTP/1.1\r\nHost: cairn\r\n\r\n"
		return benchDo(ctx, c, endpoint, b.target.tls, []byte(req), nil, http.StatusOK, w.size, nil)
	default:
		body := fmt.Sprintf(`{"ephemeral":%t}`, w.kind == "token-ephemeral")
		req := "POST /api/v2/Files/" + b.fileID + "/Token HTTP/1.1\r\nHost: cairn\r\nX-API-KEY: " + b.target.key +
			"\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
		return benchDo(ctx, c, endpoint, b.target.tls, []byte(req), nil, http.StatusCreated, -1, nil)
	}
}

// put uploads one file of size through /files/v1 and returns its token.
func (b *benchRunner) put(ctx context.Context, c **benchConn, endpoint string, size int64) (string, int, string, error) {
	body := b.bodies[size]
	hdr := "POST /files/v1/ HTTP/1.1\r\nHost: cairn\r\nAuthorization: Bearer " + b.target.key +
		"\r\nContent-Type: " + body.contentType + "\r\nContent-Length: " + strconv.Itoa(len(body.body)) + "\r\n\r\n"
	var token string
	status, sample, err := benchDo(ctx, c, endpoint, b.target.tls, []byte(hdr), body.body, http.StatusOK, -1, func(b []byte) error {
		var out struct {
			Tokens []struct {
				Token string `json:"token"`
			} `json:"tokens"`
		}
		if err := json.Unmarshal(b, &out); err != nil || len(out.Tokens) == 0 {
			return fmt.Errorf("upload answer without a token: %.200s", b)
		}
		token = out.Tokens[0].Token
		return nil
	})
	return token, status, sample, err
}

// benchConn is one keep-alive HTTP/1.1 connection to a node. net/http's Transport hands every
// request between goroutines, which on a 2-core machine costs more CPU than a small operation and
// would hide what is measured.
type benchConn struct {
	conn net.Conn
	br   *bufio.Reader
}

// benchDo sends one request on *c (dialling first when needed, with TLS for an https:// endpoint)
// and reads the answer. A status
// other than want is an error with a sample of the body. With wantLen >= 0 the body must be that
// long; decode (may be nil) sees the body of a successful answer. A failed connection is dropped
// and redialled on the next call.
func benchDo(ctx context.Context, c **benchConn, endpoint string, tlsConfig *tls.Config, head, body []byte, want int, wantLen int64,
	decode func([]byte) error) (status int, sample string, err error) {
	if *c == nil {
		conn, err := benchDial(ctx, endpoint, tlsConfig)
		if err != nil {
			return 0, "", err
		}
		*c = &benchConn{conn: conn, br: bufio.NewReaderSize(conn, 64<<10)}
	}
	defer func() {
		if err != nil {
			(*c).conn.Close()
			*c = nil
		}
	}()
	cc := *c
	if dl, ok := ctx.Deadline(); ok {
		cc.conn.SetDeadline(dl)
	}
	bufs := net.Buffers{head}
	if len(body) > 0 {
		bufs = append(bufs, body)
	}
	if _, err := bufs.WriteTo(cc.conn); err != nil {
		return 0, "", err
	}
	resp, err := http.ReadResponse(cc.br, nil)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, string(b), fmt.Errorf("status %s", resp.Status)
	}
	if decode != nil {
		b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			return resp.StatusCode, "", err
		}
		return resp.StatusCode, "", decode(b)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return 0, "", fmt.Errorf("body after %d bytes: %w", n, err)
	}
	if wantLen >= 0 && n != wantLen {
		return 0, "", fmt.Errorf("body of %d bytes, want %d", n, wantLen)
	}
	return resp.StatusCode, "", nil
}

// benchDial opens one connection to endpoint: TCP for http://, TLS speaking HTTP/1.1 for https://.
func benchDial(ctx context.Context, endpoint string, tlsConfig *tls.Config) (net.Conn, error) {
	if host, ok := strings.CutPrefix(endpoint, "https://"); ok {
		cfg := tlsConfig.Clone()
		if cfg == nil {
			cfg = &tls.Config{}
		}
		cfg.NextProtos = []string{"http/1.1"}
		d := tls.Dialer{Config: cfg}
		return d.DialContext(ctx, "tcp", host)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", strings.TrimPrefix(endpoint, "http://"))
}

// benchUpload stores a small file through /api/v2 and returns its id.
func benchUpload(ctx context.Context, client *http.Client, endpoint, key string) (string, error) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	part, err := mw.CreateFormFile("file", "bench.txt")
	if err != nil {
		return "", err
	}
	part.Write([]byte("cairn bench\n"))
	mw.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint+"/api/v2/Files/Own", &buf)
	if err != nil {
		return "", err
	}
	req.Header.Set("X-API-KEY", key)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("%s: %s", resp.Status, b)
	}
	var out struct {
		Result struct {
			ID string `json:"id"`
		} `json:"result"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return "", err
	}
	return out.Result.ID, nil
}

// benchChildInfo is the one JSON line a --serve-cluster child prints when it is ready.
type benchChildInfo struct {
	Endpoints  []string `json:"endpoints"`
	Key        string   `json:"key"`
	FileServer string   `json:"fileServer"`
	Dir        string   `json:"dir"`
}

type benchChild struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	target benchTarget
	dir    string
}

// startBenchChild runs this binary as `cairn bench --serve-cluster`: the 3-node cluster and the
// trivial file server live in that process, so /proc tells their CPU and peak memory apart from
// the load generator's.
func startBenchChild(ctx context.Context, workloads []benchWorkload, logLevel, cpuProfile string, stderr io.Writer) (*benchChild, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	var sizes []string
	maxSize := int64(1 << 20)
	for _, w := range workloads {
		if w.kind == "put" || w.kind == "get" {
			sizes = append(sizes, strconv.FormatInt(w.size, 10))
			maxSize = max(maxSize, w.size)
		}
	}
	args := []string{"bench", "--serve-cluster", "--serve-sizes", strings.Join(sizes, ","),
		"--max-file-size", strconv.FormatInt(maxSize, 10)}
	if logLevel != "" {
		args = append(args, "--log-level", logLevel)
	}
	if cpuProfile != "" {
		args = append(args, "--cpuprofile", cpuProfile)
	}
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	child := &benchChild{cmd: cmd, stdin: stdin}
	line, err := bufio.NewReader(stdout).ReadBytes('\n')
	var info benchChildInfo
	if err == nil {
		err = json.Unmarshal(line, &info)
	}
	if err != nil {
		child.stop()
		return nil, fmt.Errorf("bench cluster did not start: %w", err)
	}
	go io.Copy(io.Discard, stdout)
	pid := cmd.Process.Pid
	child.dir = info.Dir
	child.target = benchTarget{
		endpoints: info.Endpoints, key: info.Key, fileServer: info.FileServer,
		cpu: func() (float64, bool) { return procCPUSeconds(pid) },
		resetPeak: func() int64 {
			os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
			return procStatus(pid, "VmRSS:")
		},
		peakRSS: func() int64 { return procStatus(pid, "VmHWM:") },
	}
	return child, nil
}

// stop closes the child's stdin (its signal to shut down) and waits for it.
func (c *benchChild) stop() {
	c.stdin.Close()
	done := make(chan struct{})
	go func() { c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		c.cmd.Process.Kill()
		<-done
	}
}

// procCPUSeconds is a process's user plus system CPU time from /proc/PID/stat.
func procCPUSeconds(pid int) (float64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// Fields after the command name (which may hold spaces) start after the last ')'.
	rest := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(rest) < 13 {
		return 0, false
	}
	utime, err1 := strconv.ParseFloat(rest[11], 64)
	stime, err2 := strconv.ParseFloat(rest[12], 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	const clockTicks = 100 // USER_HZ, 100 on every Linux architecture Go supports
	return (utime + stime) / clockTicks, true
}

// procStatus is a size field of /proc/PID/status (VmRSS:, VmHWM:) in bytes, 0 when unknown.
func procStatus(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// scrapeServerCPU sums process_cpu_seconds_total over the nodes' /metrics, counting a process
// once when several nodes share it (cairn dev), told apart by process_start_time_seconds.
func scrapeServerCPU(endpoints []string, tlsConfig *tls.Config) func() (float64, bool) {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConfig.Clone()}}
	return func() (float64, bool) {
		perProcess := map[string]float64{}
		for _, e := range endpoints {
			resp, err := client.Get(e + "/metrics")
			if err != nil {
				return 0, false
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var cpu, startTime string
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, "process_cpu_seconds_total "); ok {
					cpu = v
				}
				if v, ok := strings.CutPrefix(line, "process_start_time_seconds "); ok {
					startTime = v
				}
			}
			f, err := strconv.ParseFloat(cpu, 64)
			if err != nil {
				return 0, false
			}
			perProcess[startTime] = f
		}
		total := 0.0
		for _, v := range perProcess {
			total += v
		}
		return total, true
	}
}

// serveBenchCluster is the child side of startBenchChild: a 3-node cluster with real disks in a
// temp dir, and a trivial net/http file server offering /f/SIZE from files on the same disk. It
// prints a benchChildInfo line and runs until its stdin closes.
func serveBenchCluster(ctx context.Context, sizesFlag string, maxFileSize int64, logLevel, cpuProfile string, stdout, stderr io.Writer) error {
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	logger := slog.New(slog.DiscardHandler)
	if logLevel != "" {
		var err error
		if logger, err = newLogger(stderr, logLevel, false); err != nil {
			return err
		}
	}
	dir, err := os.MkdirTemp("", "cairn-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	key := core.NewSecret()
	nodes, stop, err := startDevCluster(devClusterConfig{
		host: "127.0.0.1", dir: dir, rootKey: key, maxFileSize: max(maxFileSize, 1<<20), logger: logger,
	})
	if err != nil {
		return err
	}
	defer stop()
	if err := waitDevReady(ctx, nodes, 60*time.Second); err != nil {
		return err
	}
	filesDir := dir + "/fileserver"
	if err := os.MkdirAll(filesDir, 0o750); err != nil {
		return err
	}
	for _, s := range strings.Split(sizesFlag, ",") {
		if s == "" {
			continue
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("--serve-sizes: %w", err)
		}
		if err := os.WriteFile(filesDir+"/"+s, newBenchData(n), 0o640); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /f/{size}", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.PathValue("size"), 10, 64)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		http.ServeFile(w, r, filesDir+"/"+strconv.FormatInt(n, 10))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	info := benchChildInfo{Key: key, FileServer: "http://" + ln.Addr().String(), Dir: dir}
	for _, n := range nodes {
		info.Endpoints = append(info.Endpoints, "http://"+n.HTTPAddr())
	}
	line, _ := json.Marshal(info)
	fmt.Fprintf(stdout, "%s\n", line)
	stdinClosed := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(stdinClosed) }()
	select {
	case <-stdinClosed:
	case <-ctx.Done():
	}
	return nil
}

// newBenchData is the content of every benchmark file (uploads and the file server alike): not all
// zeros, so nothing along the way can shortcut it.
func newBenchData(size int64) []byte {
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*2654435761>>13) ^ byte(i)
	}
	return data
}
