package cluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/erasure"

	"github.com/cairn-dev/cairn/internal/testutil"
)

// rpcTestShards is a map-backed ShardService that records aborted puts.
type rpcTestShards struct {
	mu      sync.Mutex
	data    map[erasure.ShardID][]byte
	aborted []erasure.ShardID
	calls   atomic.Int64
}

func newRPCTestShards() *rpcTestShards {
	return &rpcTestShards{data: make(map[erasure.ShardID][]byte)}
}

func (s *rpcTestShards) PutShard(_ context.Context, id erasure.ShardID, body io.Reader) error {
	s.calls.Add(1)
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, body); err != nil {
		s.mu.Lock()
		s.aborted = append(s.aborted, id)
		s.mu.Unlock()
		return fmt.Errorf("aborted: %w", err)
	}
	s.mu.Lock()
	s.data[id] = buf.Bytes()
	s.mu.Unlock()
	return nil
}

func (s *rpcTestShards) OpenShard(_ context.Context, id erasure.ShardID, off, n int64) (io.ReadCloser, error) {
	s.calls.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.data[id]
	if !ok {
		return nil, erasure.ErrShardNotFound
	}
	if off > int64(len(b))-n {
		return nil, erasure.ErrInvalidRange
	}
	return withTestHeader(bytes.NewReader(b[off : off+n])), nil
}

// rpcTestHeader stands in for the shard header erasure.ShardStore.OpenFrames puts before the
// frames; RPC carries it as opaque bytes.
var rpcTestHeader = bytes.Repeat([]byte{'h'}, erasure.ShardHeaderLen)

func withTestHeader(r io.Reader) io.ReadCloser {
	return io.NopCloser(io.MultiReader(bytes.NewReader(rpcTestHeader), r))
}

func (s *rpcTestShards) DeleteShard(_ context.Context, id erasure.ShardID) error {
	s.calls.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.data[id]; !ok {
		return erasure.ErrShardNotFound
	}
	delete(s.data, id)
	return nil
}

func (s *rpcTestShards) StatShard(_ context.Context, id erasure.ShardID) (erasure.ShardInfo, error) {
	s.calls.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.data[id]
	if !ok {
		return erasure.ShardInfo{}, erasure.ErrShardNotFound
	}
	return erasure.ShardInfo{ID: id, Size: int64(len(b)), ModTime: time.Unix(1700000000, 0).UTC()}, nil
}

func (s *rpcTestShards) abortedIDs() []erasure.ShardID {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]erasure.ShardID(nil), s.aborted...)
}

// rpcTestLeader answers with fixed values, or err when set.
type rpcTestLeader struct {
	err     error
	applied atomic.Int64
}

func (l *rpcTestLeader) ApplyForwarded(_ context.Context, cmd []byte) (uint64, string, error) {
	if l.err != nil {
		return 0, "", l.err
	}
	l.applied.Add(1)
	return uint64(len(cmd)), "conflict", nil
}

func (l *rpcTestLeader) ReadIndex(context.Context) (uint64, error) {
	if l.err != nil {
		return 0, l.err
	}
	return 42, nil
}

// rpcTestServe runs an RPCServer behind a real Mux on 127.0.0.1 and returns the cluster address.
func rpcTestServe(t testing.TB, shards ShardService, leader LeaderService) string {
	t.Helper()
	m := muxTestServe(t, muxTestSecret, 0)
	s := NewRPCServer(shards, leader, transportTestLogger())
	served := make(chan error, 1)
	go func() { served <- s.Serve(m.Listener(ConnRPC)) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("rpc shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("rpc serve: %v", err)
		}
	})
	return m.Listener(ConnRPC).Addr().String()
}

func rpcTestClient(t testing.TB, nw Network, secret []byte) *RPCClient {
	c := NewRPCClient(nw, Security{Secret: secret}, transportTestLogger())
	t.Cleanup(c.Close)
	return c
}

func rpcTestCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var rpcTestID = erasure.ShardID{File: "FILabc", Segment: 1, Index: 2}

func TestRPCShardRoundTrip(t *testing.T) {
	shards := newRPCTestShards()
	addr := rpcTestServe(t, shards, &rpcTestLeader{})
	c := rpcTestClient(t, OSNetwork{}, muxTestSecret)
	ctx := rpcTestCtx(t)
	data := []byte("0123456789abcdefghij")

	if err := c.PutShard(ctx, addr, rpcTestID, bytes.NewReader(data)); err != nil {
		t.Fatalf("PutShard: %v", err)
	}
	info, err := c.StatShard(ctx, addr, rpcTestID)
	if err != nil {
		t.Fatalf("StatShard: %v", err)
	}
	if info.ID != rpcTestID || info.Size != int64(len(data)) || !info.ModTime.Equal(time.Unix(1700000000, 0)) {
		t.Fatalf("StatShard = %+v", info)
	}
	ranges := []struct {
		name    string
		off, n  int64
		want    string
		wantErr error
	}{
		{"whole", 0, 20, string(data), nil},
		{"middle", 5, 3, "567", nil},
		{"empty", 20, 0, "", nil},
		{"past the end", 15, 10, "", erasure.ErrInvalidRange},
		{"negative offset", -1, 3, "", ErrRemote},
	}
	for _, r := range ranges {
		t.Run(r.name, func(t *testing.T) {
			rc, err := c.OpenShard(ctx, addr, rpcTestID, r.off, r.n)
			if r.wantErr != nil {
				if !errors.Is(err, r.wantErr) {
					t.Fatalf("err = %v, want %v", err, r.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			got, err := io.ReadAll(rc)
			if err == nil && !bytes.HasPrefix(got, rpcTestHeader) {
				t.Fatalf("stream does not start with the shard header: %q", got)
			}
			got = bytes.TrimPrefix(got, rpcTestHeader)
			if err != nil || string(got) != r.want {
				t.Fatalf("read %q, %v; want %q", got, err, r.want)
			}
		})
	}
	if err := c.DeleteShard(ctx, addr, rpcTestID); err != nil {
		t.Fatalf("DeleteShard: %v", err)
	}
	// Not-found crosses the wire for every shard call.
	notFound := map[string]error{
		"stat":   func() error { _, err := c.StatShard(ctx, addr, rpcTestID); return err }(),
		"open":   func() error { _, err := c.OpenShard(ctx, addr, rpcTestID, 0, 1); return err }(),
		"delete": c.DeleteShard(ctx, addr, rpcTestID),
	}
	for call, err := range notFound {
		if !errors.Is(err, erasure.ErrShardNotFound) {
			t.Errorf("%s after delete: %v, want ErrShardNotFound", call, err)
		}
	}
}

func TestRPCLeaderCalls(t *testing.T) {
	tests := []struct {
		name      string
		leaderErr error
		wantErr   error
	}{
		{"ok", nil, nil},
		{"not leader", fmt.Errorf("raft: %w", ErrNotLeader), ErrNotLeader},
		{"other failure", errors.New("disk on fire"), ErrRemote},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := rpcTestServe(t, newRPCTestShards(), &rpcTestLeader{err: tt.leaderErr})
			c := rpcTestClient(t, OSNetwork{}, muxTestSecret)
			ctx := rpcTestCtx(t)
			index, code, err := c.ApplyForwarded(ctx, addr, []byte("seven!!"))
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("ApplyForwarded err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr == nil && (index != 7 || code != "conflict") {
				t.Fatalf("ApplyForwarded = %d, %q", index, code)
			}
			ri, err := c.ReadIndex(ctx, addr)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("ReadIndex err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr == nil && ri != 42 {
				t.Fatalf("ReadIndex = %d", ri)
			}
		})
	}
}

// rpcTestGatedReader yields size pseudo-random bytes but stops after gateAt bytes until gate is
// closed: proof that the other side consumed data before the rest was even produced.
type rpcTestGatedReader struct {
	src          io.Reader
	left, gateAt int64
	gate         <-chan struct{}
}

func newRPCTestGatedReader(seed uint64, size, gateAt int64, gate <-chan struct{}) *rpcTestGatedReader {
	var s [32]byte
	s[0] = byte(seed)
	return &rpcTestGatedReader{src: rand.NewChaCha8(s), left: size, gateAt: gateAt, gate: gate}
}

func (r *rpcTestGatedReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	if r.gate != nil {
		if r.gateAt == 0 {
			select {
			case <-r.gate:
				r.gate = nil
			case <-time.After(10 * time.Second):
				return 0, errors.New("gate never opened: the other side did not stream")
			}
		} else {
			p = p[:min(int64(len(p)), r.gateAt)]
		}
	}
	p = p[:min(int64(len(p)), r.left)]
	n, _ := r.src.Read(p)
	r.left -= int64(n)
	if r.gate != nil {
		r.gateAt -= int64(n)
	}
	return n, nil
}

// rpcTestStreamShards hashes puts instead of keeping them and serves opens from a gated
// generator, so neither side ever holds a whole shard.
type rpcTestStreamShards struct {
	rpcTestShards
	gotFirst   chan struct{} // closed by PutShard after the first MiB arrived
	readerGate chan struct{} // closed by the test once the client read the first MiB
	putSum     chan [sha256.Size]byte
}

func (s *rpcTestStreamShards) PutShard(_ context.Context, _ erasure.ShardID, body io.Reader) error {
	h := sha256.New()
	if _, err := io.CopyN(h, body, 1<<20); err != nil {
		return err
	}
	close(s.gotFirst)
	if _, err := io.Copy(h, body); err != nil {
		return err
	}
	s.putSum <- [sha256.Size]byte(h.Sum(nil))
	return nil
}

func (s *rpcTestStreamShards) OpenShard(_ context.Context, _ erasure.ShardID, off, n int64) (io.ReadCloser, error) {
	return withTestHeader(newRPCTestGatedReader(2, n, 1<<20, s.readerGate)), nil
}

func TestRPCStreamsLargeShard(t *testing.T) {
	const size = 20 << 20
	shards := &rpcTestStreamShards{
		gotFirst:   make(chan struct{}),
		readerGate: make(chan struct{}),
		putSum:     make(chan [sha256.Size]byte, 1),
	}
	addr := rpcTestServe(t, shards, &rpcTestLeader{})
	c := rpcTestClient(t, OSNetwork{}, muxTestSecret)
	ctx := rpcTestCtx(t)

	want := sha256.New()
	io.Copy(want, newRPCTestGatedReader(1, size, 0, nil))
	if err := c.PutShard(ctx, addr, rpcTestID, newRPCTestGatedReader(1, size, 1<<20, shards.gotFirst)); err != nil {
		t.Fatalf("PutShard: %v", err)
	}
	if got := <-shards.putSum; got != [sha256.Size]byte(want.Sum(nil)) {
		t.Fatal("server received different bytes")
	}

	rc, err := c.OpenShard(ctx, addr, rpcTestID, 0, size)
	if err != nil {
		t.Fatalf("OpenShard: %v", err)
	}
	defer rc.Close()
	if _, err := io.CopyN(io.Discard, rc, erasure.ShardHeaderLen); err != nil {
		t.Fatal(err)
	}
	got := sha256.New()
	if _, err := io.CopyN(got, rc, 1<<20); err != nil {
		t.Fatal(err)
	}
	close(shards.readerGate)
	if n, err := io.Copy(got, rc); err != nil || n != size-1<<20 {
		t.Fatalf("read rest: %d, %v", n, err)
	}
	want.Reset()
	io.Copy(want, newRPCTestGatedReader(2, size, 0, nil))
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatal("client received different bytes")
	}
}

// rpcTestBrokenReader yields some bytes, then fails like a dying upstream.
type rpcTestBrokenReader struct{ left int }

func (r *rpcTestBrokenReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, errors.New("upstream died")
	}
	n := min(len(p), r.left)
	clear(p[:n])
	r.left -= n
	return n, nil
}

func TestRPCBrokenPutAborts(t *testing.T) {
	shards := newRPCTestShards()
	addr := rpcTestServe(t, shards, &rpcTestLeader{})
	c := rpcTestClient(t, OSNetwork{}, muxTestSecret)
	ctx := rpcTestCtx(t)
	if err := c.PutShard(ctx, addr, rpcTestID, &rpcTestBrokenReader{left: 1 << 20}); err == nil {
		t.Fatal("PutShard succeeded with a broken body")
	}
	testutil.WaitFor(t, 10*time.Second, "server to abort the shard", func() bool {
		return len(shards.abortedIDs()) == 1
	})
	if _, err := c.StatShard(ctx, addr, rpcTestID); !errors.Is(err, erasure.ErrShardNotFound) {
		t.Fatalf("partial shard visible: %v", err)
	}
}

func TestRPCWrongSecretCannotCall(t *testing.T) {
	shards := newRPCTestShards()
	leader := &rpcTestLeader{}
	addr := rpcTestServe(t, shards, leader)
	c := rpcTestClient(t, OSNetwork{}, muxTestSecret2)
	ctx := rpcTestCtx(t)
	calls := map[string]error{
		"put": c.PutShard(ctx, addr, rpcTestID, strings.NewReader("x")),
		"open": func() error {
			_, err := c.OpenShard(ctx, addr, rpcTestID, 0, 1)
			return err
		}(),
		"delete": c.DeleteShard(ctx, addr, rpcTestID),
		"stat":   func() error { _, err := c.StatShard(ctx, addr, rpcTestID); return err }(),
		"apply":  func() error { _, _, err := c.ApplyForwarded(ctx, addr, []byte("x")); return err }(),
		"readindex": func() error {
			_, err := c.ReadIndex(ctx, addr)
			return err
		}(),
	}
	for name, err := range calls {
		if !errors.Is(err, ErrAuthFailed) {
			t.Errorf("%s: err = %v, want ErrAuthFailed", name, err)
		}
	}
	if n := shards.calls.Load() + leader.applied.Load(); n != 0 {
		t.Fatalf("%d calls reached the services", n)
	}
}

// rpcTestRawClient sends hand-made requests over an authenticated connection.
func rpcTestRawClient(t *testing.T) *http.Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
		return DialCluster(ctx, OSNetwork{}, addr, ConnRPC, Security{Secret: muxTestSecret})
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func TestRPCServerValidatesInput(t *testing.T) {
	shards := newRPCTestShards()
	leader := &rpcTestLeader{}
	addr := rpcTestServe(t, shards, leader)
	hc := rpcTestRawClient(t)
	tests := []struct {
		name   string
		method string
		path   string
		body   string
		want   int
	}{
		{"id with slash escape", "GET", "/internal/v1/shards/..%2F..%2Fetc.0.0?off=0&n=1", "", 400},
		{"id not three parts", "GET", "/internal/v1/shards/abc.1?off=0&n=1", "", 400},
		{"id negative", "DELETE", "/internal/v1/shards/abc.-1.0", "", 400},
		{"id too long", "PUT", "/internal/v1/shards/" + strings.Repeat("a", 65) + ".0.0", "x", 400},
		{"off missing", "GET", "/internal/v1/shards/abc.0.0?n=1", "", 400},
		{"n negative", "GET", "/internal/v1/shards/abc.0.0?off=0&n=-1", "", 400},
		{"off not a number", "GET", "/internal/v1/shards/abc.0.0?off=x&n=1", "", 400},
		{"apply garbage", "POST", "/internal/v1/apply", "{{{", 400},
		{"apply unknown field", "POST", "/internal/v1/apply", `{"cmd":"eA==","x":1}`, 400},
		{"apply empty cmd", "POST", "/internal/v1/apply", `{"cmd":""}`, 400},
		{"apply too large", "POST", "/internal/v1/apply", `{"cmd":"` + strings.Repeat("A", rpcMaxJSONBody) + `"}`, 400},
		{"wrong method", "POST", "/internal/v1/readindex", "", 405},
		{"unknown route", "GET", "/internal/v1/nothing", "", 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(rpcTestCtx(t), tt.method, "http://"+addr+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.want)
			}
		})
	}
	if n := shards.calls.Load() + leader.applied.Load(); n != 0 {
		t.Fatalf("%d invalid calls reached the services", n)
	}
}

// rpcTestPoisonNet counts dials and can turn every connection opened so far into a dead peer
// that swallows the next request and then resets, as a restarted node's stale connection does.
type rpcTestPoisonNet struct {
	OSNetwork
	dials atomic.Int64
	mu    sync.Mutex
	conns []*rpcTestPoisonConn
}

func (n *rpcTestPoisonNet) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := n.OSNetwork.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	n.dials.Add(1)
	pc := &rpcTestPoisonConn{Conn: c}
	n.mu.Lock()
	n.conns = append(n.conns, pc)
	n.mu.Unlock()
	return pc, nil
}

func (n *rpcTestPoisonNet) poisonAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, c := range n.conns {
		c.poisoned.Store(true)
	}
}

type rpcTestPoisonConn struct {
	net.Conn
	poisoned atomic.Bool
}

func (c *rpcTestPoisonConn) Write(p []byte) (int, error) {
	if c.poisoned.Load() {
		c.Conn.Close() // the pending read now fails: the request "was sent" but no answer comes
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func TestRPCRetriesDeadPooledConn(t *testing.T) {
	tests := []struct {
		name      string
		call      func(ctx context.Context, c *RPCClient, addr string) error
		wantRetry bool
	}{
		{"stat", func(ctx context.Context, c *RPCClient, addr string) error {
			_, err := c.StatShard(ctx, addr, rpcTestID)
			return err
		}, true},
		{"open", func(ctx context.Context, c *RPCClient, addr string) error {
			rc, err := c.OpenShard(ctx, addr, rpcTestID, 0, 1)
			if err == nil {
				rc.Close()
			}
			return err
		}, true},
		{"delete", func(ctx context.Context, c *RPCClient, addr string) error {
			return c.DeleteShard(ctx, addr, rpcTestID)
		}, true},
		{"readindex", func(ctx context.Context, c *RPCClient, addr string) error {
			_, err := c.ReadIndex(ctx, addr)
			return err
		}, true},
		{"apply is not retried", func(ctx context.Context, c *RPCClient, addr string) error {
			_, _, err := c.ApplyForwarded(ctx, addr, []byte("x"))
			return err
		}, false},
		// A shard put is not retried either, not even with a body that could be rewound: the
		// request may have reached the peer, and the uploader, not the transport, decides what a
		// lost shard costs (core commits the segment degraded or fails it; DESIGN.md).
		{"put is not retried", func(ctx context.Context, c *RPCClient, addr string) error {
			return c.PutShard(ctx, addr, rpcTestID, bytes.NewReader([]byte("y")))
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			shards := newRPCTestShards()
			shards.data[rpcTestID] = []byte("x")
			leader := &rpcTestLeader{}
			addr := rpcTestServe(t, shards, leader)
			nw := &rpcTestPoisonNet{}
			c := rpcTestClient(t, nw, muxTestSecret)
			ctx := rpcTestCtx(t)
			// Warm the pool with one connection, then kill it behind the client's back. Shard
			// reads have a pool of their own (rpc_shardget.go), warmed by a read.
			warm := func() error { _, err := c.ReadIndex(ctx, addr); return err }
			if tt.name == "open" {
				warm = func() error { return tt.call(ctx, c, addr) }
			}
			if err := warm(); err != nil {
				t.Fatal(err)
			}
			nw.poisonAll()
			err := tt.call(ctx, c, addr)
			if tt.wantRetry {
				if err != nil {
					t.Fatalf("call on a dead pooled connection: %v", err)
				}
				if d := nw.dials.Load(); d != 2 {
					t.Fatalf("dials = %d, want 2 (pool + fresh)", d)
				}
				return
			}
			if err == nil {
				t.Fatal("non-idempotent call succeeded on a dead connection")
			}
			if d := nw.dials.Load(); d != 1 {
				t.Fatalf("dials = %d, want 1 (no retry on a fresh connection)", d)
			}
			if n := leader.applied.Load(); n != 0 {
				t.Fatalf("apply reached the leader %d times", n)
			}
			shards.mu.Lock()
			got := shards.data[rpcTestID]
			shards.mu.Unlock()
			if string(got) != "x" {
				t.Fatalf("the shard holds %q, want the put never to have reached the server", got)
			}
		})
	}
}

func TestRPCShutdownLeavesNoGoroutines(t *testing.T) {
	base := runtime.NumGoroutine()
	t.Run("calls", func(t *testing.T) {
		addr := rpcTestServe(t, newRPCTestShards(), &rpcTestLeader{})
		c := rpcTestClient(t, OSNetwork{}, muxTestSecret)
		ctx := rpcTestCtx(t)
		for range 3 {
			if err := c.PutShard(ctx, addr, rpcTestID, strings.NewReader("abc")); err != nil {
				t.Fatal(err)
			}
			if _, err := c.ReadIndex(ctx, addr); err != nil {
				t.Fatal(err)
			}
		}
	})
	testutil.WaitFor(t, 10*time.Second, "goroutines to return to baseline", func() bool {
		return runtime.NumGoroutine() <= base
	})
}

// FuzzRPCServerRequest throws arbitrary requests at the internal routes: no panic, and only the
// statuses the protocol defines.
func FuzzRPCServerRequest(f *testing.F) {
	f.Add("GET", "/internal/v1/shards/FILabc.1.2", "off=0&n=1", []byte(nil))
	f.Add("PUT", "/internal/v1/shards/FILabc.1.2", "", []byte("data"))
	f.Add("POST", "/internal/v1/apply", "", []byte(`{"cmd":"eA=="}`))
	f.Add("GET", "/internal/v1/shards/FILabc.1.2/stat", "", []byte(nil))
	f.Add("DELETE", "/internal/v1/shards/a.0.0", "", []byte(nil))
	f.Add("GET", "/internal/v1/readindex", "", []byte(nil))
	shards := newRPCTestShards()
	s := NewRPCServer(shards, &rpcTestLeader{}, transportTestLogger())
	// 409: a read without h=1 (a protocol-1 reader) of a shard that an earlier input wrote as v2
	// is refused on purpose (TestRPCShardReadByProtocol1Reader); the inputs share one store.
	allowed := map[int]bool{200: true, 204: true, 301: true, 307: true, 308: true, 400: true, 404: true, 405: true, 409: true, 416: true}
	f.Fuzz(func(t *testing.T, method, path, query string, body []byte) {
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		req, err := http.NewRequest(method, "http://node"+path, bytes.NewReader(body))
		if err != nil {
			return // not a request a client could send
		}
		req.URL.RawQuery = query
		rec := httptest.NewRecorder()
		s.srv.Handler.ServeHTTP(rec, req)
		if !allowed[rec.Code] {
			t.Fatalf("%s %s?%s: status %d: %s", method, path, query, rec.Code, rec.Body)
		}
	})
}

func BenchmarkRPCStat(b *testing.B) {
	shards := newRPCTestShards()
	shards.data[rpcTestID] = []byte("x")
	addr := rpcTestServe(b, shards, &rpcTestLeader{})
	c := rpcTestClient(b, OSNetwork{}, muxTestSecret)
	ctx := context.Background()
	for b.Loop() {
		if _, err := c.StatShard(ctx, addr, rpcTestID); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRPCPutShard1MiB(b *testing.B) {
	addr := rpcTestServe(b, newRPCTestShards(), &rpcTestLeader{})
	c := rpcTestClient(b, OSNetwork{}, muxTestSecret)
	data := make([]byte, 1<<20)
	ctx := context.Background()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if err := c.PutShard(ctx, addr, rpcTestID, bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
}

// legacyShards serves each stored shard behind the legacy (v1) header, as erasure.ShardStore does
// for a v1 shard file, or behind rpcTestHeader (standing in for a v2 header) when v2 is set.
type legacyShards struct {
	*rpcTestShards
	v2 bool
}

func (s legacyShards) OpenShard(_ context.Context, id erasure.ShardID, off, n int64) (io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.data[id][off : off+n]
	header := erasure.LegacyShardHeader()
	if s.v2 {
		header = rpcTestHeader
	}
	return io.NopCloser(io.MultiReader(bytes.NewReader(header), bytes.NewReader(b))), nil
}

// TestRPCShardReadByProtocol1Reader: a v0.1.0 reader asks for a shard without the h=1 parameter
// and expects raw frames. A v1 shard is served without its header and with the frames' length; a
// v2 shard is refused (409), since that reader could not check its frames.
func TestRPCShardReadByProtocol1Reader(t *testing.T) {
	frames := []byte("frames-of-a-v1-shard")
	for _, v2 := range []bool{false, true} {
		shards := newRPCTestShards()
		shards.data[rpcTestID] = frames
		addr := rpcTestServe(t, legacyShards{rpcTestShards: shards, v2: v2}, &rpcTestLeader{})
		c := rpcTestClient(t, OSNetwork{}, muxTestSecret)
		resp, err := c.call(rpcTestCtx(t), http.MethodGet, addr, rpcShardPath(rpcTestID)+"?off=7&n=6", nil, "", true)
		if v2 {
			if err == nil {
				resp.Body.Close()
				t.Fatal("a v2 shard was served to a protocol-1 reader")
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(got) != "of-a-v" || resp.ContentLength != 6 {
			t.Fatalf("protocol-1 read = %q (Content-Length %d), %v; want the raw frames %q", got, resp.ContentLength, err, "of-a-v")
		}
		// A reader of today gets the header in front.
		rc, err := c.OpenShard(rpcTestCtx(t), addr, rpcTestID, 7, 6)
		if err != nil {
			t.Fatal(err)
		}
		got, err = io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, append(erasure.LegacyShardHeader(), "of-a-v"...)) {
			t.Fatalf("current read = %q, %v; want the legacy header then the frames", got, err)
		}
	}
}
