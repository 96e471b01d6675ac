package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/cairn-dev/cairn/core"
)

// runBench measures token creation through the public API: persisted tokens (one Raft commit
// each) against ephemeral ones (signed, no Raft write), on an in-process 3-node cluster with real
// disks, or on a running cluster given with --addr. Requests go round-robin to every node, so
// followers forward persisted creations to the leader as clients behind a load balancer would.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cairn bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	duration := fs.Duration("duration", 5*time.Second, "how long each mode runs")
	concurrencyList := fs.String("concurrency", "8,32", "comma-separated numbers of concurrent clients; each level is measured with both modes")
	rounds := fs.Int("rounds", 2, "alternating rounds of the two modes (the table sums them)")
	addrs := fs.String("addr", "", "comma-separated HTTP addresses of a running cluster (default: start an in-process 3-node cluster)")
	key := fs.String("key", "", "API key for --addr (default: the in-process cluster's root key)")
	logLevel := fs.String("log-level", "", "log level of the in-process cluster (default: silent)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run (cluster included) to this file")
	modes := fs.String("modes", "persisted,ephemeral", "which modes to run (for profiling one alone)")
	useTLS := fs.Bool("tls", false, "run the in-process cluster with HTTPS and mutual TLS on the cluster port")
	clientTLS := addClientTLSFlags(fs) // httpclient.go
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := applyEnv(fs); err != nil {
		return err
	}
	var levels []int
	for _, f := range strings.Split(*concurrencyList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return fmt.Errorf("--concurrency: %q is not a positive number", f)
		}
		levels = append(levels, n)
	}
	if *duration <= 0 || *rounds <= 0 {
		return errors.New("--duration and --rounds must be positive")
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	var endpoints []string
	if *addrs != "" {
		for _, a := range strings.Split(*addrs, ",") {
			endpoints = append(endpoints, strings.TrimSuffix(strings.TrimSpace(a), "/"))
		}
		if *key == "" {
			return errors.New("--key is required with --addr")
		}
	} else {
		logger := slog.New(slog.DiscardHandler)
		if *logLevel != "" {
			var err error
			if logger, err = newLogger(stderr, *logLevel, false); err != nil {
				return err
			}
		}
		dir, err := os.MkdirTemp("", "cairn-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		*key = core.NewSecret()
		dc := devClusterConfig{host: "127.0.0.1", dir: dir, rootKey: *key, maxFileSize: 1 << 20, logger: logger}
		if *useTLS {
			if dc.tls, err = makeDevTLS(dir); err != nil { // dev_tls.go
				return err
			}
			clientTLS.caCert = dc.tls.caFile
		}
		nodes, stop, err := startDevCluster(dc)
		if err != nil {
			return err
		}
		defer stop()
		if err := waitDevReady(ctx, nodes, 60*time.Second); err != nil {
			return err
		}
		for _, n := range nodes {
			endpoints = append(endpoints, dc.scheme()+"://"+n.HTTPAddr())
		}
	}
	client, err := clientTLS.httpClient(30 * time.Second)
	if err != nil {
		return err
	}
	tlsConfig, _ := clientTLS.tlsConfig()
	fileID, err := benchUpload(ctx, client, endpoints[0], *key)
	if err != nil {
		return fmt.Errorf("upload the benchmark file: %w", err)
	}
	var run []bool
	for _, m := range strings.Split(*modes, ",") {
		switch strings.TrimSpace(m) {
		case "persisted":
			run = append(run, false)
		case "ephemeral":
			run = append(run, true)
		default:
			return fmt.Errorf("--modes: unknown mode %q", m)
		}
	}
	fmt.Fprintf(stdout, "cairn bench: token creation through /api/v2 on %d nodes, %d x %s per mode and level\n\n",
		len(endpoints), *rounds, *duration)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "clients\tmode\trequests\terrors\ttokens/s\tp50\tp99\tephemeral/persisted\t")
	for _, clients := range levels {
		results := map[bool]*benchResult{false: {}, true: {}}
		// Modes alternate within a level, so that drift on a noisy machine hits both alike.
		for range *rounds {
			for _, ephemeral := range run {
				r := benchTokens(ctx, endpoints, tlsConfig, *key, fileID, ephemeral, clients, *duration)
				results[ephemeral].merge(r)
				if ctx.Err() != nil {
					return ctx.Err()
				}
			}
		}
		for _, ephemeral := range run {
			r := results[ephemeral]
			name, ratio := "persisted", ""
			if ephemeral {
				name = "ephemeral"
				if p := results[false].rate(); p > 0 {
					ratio = fmt.Sprintf("%.1fx", r.rate()/p)
				}
			}
			fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%.0f\t%s\t%s\t%s\t\n", clients, name, len(r.latencies), r.errors,
				r.rate(), r.percentile(0.50), r.percentile(0.99), ratio)
		}
	}
	return tw.Flush()
}

// benchResult collects one mode's successful latencies and error count.
type benchResult struct {
	latencies []time.Duration
	errors    int
	elapsed   time.Duration
}

func (r *benchResult) merge(o *benchResult) {
	r.latencies = append(r.latencies, o.latencies...)
	r.errors += o.errors
	r.elapsed += o.elapsed
}

func (r *benchResult) rate() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(len(r.latencies)) / r.elapsed.Seconds()
}

func (r *benchResult) percentile(p float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	s := slices.Clone(r.latencies)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))].Round(10 * time.Microsecond)
}

// benchTokens runs concurrency clients creating tokens for duration. Each client keeps one
// keep-alive connection per node and speaks HTTP/1.1 on it directly: net/http's Transport hands
// every request between goroutines, which on a 2-core machine costs more CPU than creating an
// ephemeral token and would hide the difference being measured.
func benchTokens(ctx context.Context, endpoints []string, tlsConfig *tls.Config, key, fileID string,
	ephemeral bool, concurrency int, duration time.Duration) *benchResult {
	body := fmt.Sprintf(`{"ephemeral":%t}`, ephemeral)
	ctx, cancel := context.WithTimeout(ctx, duration)
	defer cancel()
	deadline, _ := ctx.Deadline()
	var mu sync.Mutex
	total := &benchResult{}
	var wg sync.WaitGroup
	start := time.Now()
	for w := range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := &benchResult{}
			conns := make([]*benchConn, len(endpoints))
			defer func() {
				for _, c := range conns {
					if c != nil {
						c.conn.Close()
					}
				}
			}()
			for i := w; ctx.Err() == nil && time.Now().Before(deadline); i++ {
				n := i % len(endpoints)
				t0 := time.Now()
				err := benchPost(ctx, &conns[n], endpoints[n], tlsConfig, "/api/v2/Files/"+fileID+"/Token", key, body)
				switch {
				case err == nil:
					local.latencies = append(local.latencies, time.Since(t0))
				case time.Now().Before(deadline):
					// Failures at the very end are the deadline cutting a request short.
					local.errors++
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

// benchConn is one keep-alive HTTP/1.1 connection to a node.
type benchConn struct {
	conn net.Conn
	br   *bufio.Reader
}

// benchPost sends one POST on *c (dialling it first when needed, with TLS for an https://
// endpoint) and checks for 201. A failed connection is dropped and redialled on the next call.
func benchPost(ctx context.Context, c **benchConn, endpoint string, tlsConfig *tls.Config, path, key, body string) (err error) {
	if *c == nil {
		conn, err := benchDial(ctx, endpoint, tlsConfig)
		if err != nil {
			return err
		}
		*c = &benchConn{conn: conn, br: bufio.NewReader(conn)}
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
	req := "POST " + path + " HTTP/1.1\r\nHost: cairn\r\nX-API-KEY: " + key +
		"\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	if _, err := io.WriteString(cc.conn, req); err != nil {
		return err
	}
	resp, err := http.ReadResponse(cc.br, nil)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("status %s", resp.Status)
	}
	return nil
}

// benchDial opens one connection to endpoint: TCP for http://, TLS speaking HTTP/1.1 for https://.
func benchDial(ctx context.Context, endpoint string, tlsConfig *tls.Config) (net.Conn, error) {
	if host, ok := strings.CutPrefix(endpoint, "https://"); ok {
		cfg := tlsConfig.Clone()
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
