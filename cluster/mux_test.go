package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/internal/testutil"
)

var (
	muxTestSecret  = []byte("0123456789abcdef-cluster-secret")
	muxTestSecret2 = []byte("fedcba9876543210-other-secret!!")
)

// transportTestLogger logs at debug level into the void, so that the logging paths run.
func transportTestLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// muxTestServe starts a Mux on a loopback port and closes it at cleanup.
func muxTestServe(t testing.TB, secret []byte, handshakeTimeout time.Duration) *Mux {
	return muxTestServeSecurity(t, Security{Secret: secret}, handshakeTimeout)
}

// muxTestServeSecurity starts a Mux with sec on a loopback port and closes it at cleanup.
func muxTestServeSecurity(t testing.TB, sec Security, handshakeTimeout time.Duration) *Mux {
	t.Helper()
	ln, err := OSNetwork{}.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := NewMux(ln, sec, transportTestLogger())
	if handshakeTimeout > 0 {
		m.HandshakeTimeout = handshakeTimeout
	}
	served := make(chan error, 1)
	go func() { served <- m.Serve() }()
	t.Cleanup(func() {
		m.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return m
}

// muxTestAccept accepts one connection from l, or fails the test after a deadline.
func muxTestAccept(t *testing.T, l net.Listener) net.Conn {
	t.Helper()
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		ch <- result{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("accept: %v", r.err)
		}
		t.Cleanup(func() { r.c.Close() })
		return r.c
	case <-time.After(10 * time.Second):
		t.Fatal("no connection delivered")
		return nil
	}
}

func TestMuxHandshake(t *testing.T) {
	tests := []struct {
		name         string
		kind         byte
		clientSecret []byte
		wantErr      error
	}{
		{"raft right secret", ConnRaft, muxTestSecret, nil},
		{"rpc right secret", ConnRPC, muxTestSecret, nil},
		{"raft wrong secret", ConnRaft, muxTestSecret2, ErrAuthFailed},
		{"rpc wrong secret", ConnRPC, muxTestSecret2, ErrAuthFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := muxTestServe(t, muxTestSecret, 0)
			addr := m.Listener(tt.kind).Addr().String()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			conn, err := DialCluster(ctx, OSNetwork{}, addr, tt.kind, Security{Secret: tt.clientSecret})
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("DialCluster err = %v, want %v", err, tt.wantErr)
				}
				// The client gives up on the server's proof, so the server sees no proof: rejected.
				testutil.WaitFor(t, 10*time.Second, "server-side rejection", func() bool { return m.RejectedConns() == 1 })
				return
			}
			if err != nil {
				t.Fatalf("DialCluster: %v", err)
			}
			defer conn.Close()
			srv := muxTestAccept(t, m.Listener(tt.kind))
			if _, err := conn.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4)
			if _, err := io.ReadFull(srv, buf); err != nil || string(buf) != "ping" {
				t.Fatalf("server read %q, %v", buf, err)
			}
			if _, err := srv.Write([]byte("pong")); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "pong" {
				t.Fatalf("client read %q, %v", buf, err)
			}
			if n := m.RejectedConns(); n != 0 {
				t.Fatalf("RejectedConns = %d, want 0", n)
			}
		})
	}
}

func TestMuxRejectsBadClients(t *testing.T) {
	random := func(n int) []byte {
		b := make([]byte, n)
		rand.Read(b)
		return b
	}
	validHello := func(kind byte) []byte {
		return append(append([]byte(hsMagic), kind), random(hsNonceLen)...)
	}
	tests := []struct {
		name string
		send []byte // written right after connecting; then the client stays silent
	}{
		{"random garbage", random(hsHelloLen)},
		{"short write then silence", []byte("CAI")},
		{"nothing at all", nil},
		{"huge blob", random(8 << 20)},
		{"http request", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
		{"old protocol version", append([]byte("CAIRN\x00R"), random(hsNonceLen)...)},
		{"unknown kind", validHello('Z')},
		{"forged proof", append(validHello(ConnRPC), random(hsMACLen)...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := muxTestServe(t, muxTestSecret, 200*time.Millisecond)
			conn, err := net.Dial("tcp", m.Listener(ConnRPC).Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			go conn.Write(tt.send) // a huge blob blocks once the server stops reading
			// The server must hang up; whatever it sent before (a challenge) is not an ack.
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := io.ReadAll(conn)
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
				t.Fatal("server did not close the connection")
			}
			if len(got) > hsNonceLen+hsMACLen {
				t.Fatalf("server sent %d bytes to a bad client", len(got))
			}
			testutil.WaitFor(t, 10*time.Second, "rejection count", func() bool { return m.RejectedConns() == 1 })
		})
	}
}

func TestMuxListenerCloseIsPerKind(t *testing.T) {
	m := muxTestServe(t, muxTestSecret, 0)
	if err := m.Listener(ConnRaft).Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Listener(ConnRaft).Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept on closed kind: %v, want net.ErrClosed", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	conn, err := DialCluster(ctx, OSNetwork{}, m.Listener(ConnRPC).Addr().String(), ConnRPC, Security{Secret: muxTestSecret})
	if err != nil {
		t.Fatalf("RPC still served: %v", err)
	}
	conn.Close()
	muxTestAccept(t, m.Listener(ConnRPC))
}

func TestMuxCloseLeavesNoGoroutines(t *testing.T) {
	base := runtime.NumGoroutine()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := NewMux(ln, Security{Secret: muxTestSecret}, transportTestLogger())
	served := make(chan error, 1)
	go func() { served <- m.Serve() }()
	addr := ln.Addr().String()

	// Silent clients stuck in the handshake, and an authenticated one nobody accepts.
	var clients []net.Conn
	for range 5 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	authed, err := DialCluster(ctx, OSNetwork{}, addr, ConnRaft, Security{Secret: muxTestSecret})
	if err != nil {
		t.Fatal(err)
	}
	clients = append(clients, authed)
	testutil.WaitFor(t, 10*time.Second, "handshakes to start", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return len(m.pending) == 5
	})

	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	for _, c := range clients {
		c.Close()
	}
	testutil.WaitFor(t, 10*time.Second, "goroutines to return to baseline", func() bool {
		return runtime.NumGoroutine() <= base
	})
}

func TestDialClusterErrors(t *testing.T) {
	// A server that accepts and never answers: the dial must end with the caller's context.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	tests := []struct {
		name    string
		kind    byte
		secret  []byte
		timeout time.Duration
		wantErr error
	}{
		{"silent server", ConnRPC, muxTestSecret, 100 * time.Millisecond, context.DeadlineExceeded},
		{"short secret", ConnRPC, []byte("short"), time.Second, nil},
		{"unknown kind", 'Z', muxTestSecret, time.Second, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), tt.timeout)
			defer cancel()
			conn, err := DialCluster(ctx, OSNetwork{}, ln.Addr().String(), tt.kind, Security{Secret: tt.secret})
			if err == nil {
				conn.Close()
				t.Fatal("DialCluster succeeded")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestMuxServeRefusesShortSecret(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := NewMux(ln, Security{Secret: []byte("too short")}, transportTestLogger())
	t.Cleanup(func() { m.Close() })
	if err := m.Serve(); err == nil {
		t.Fatal("Serve accepted a 9-byte secret")
	}
}

// FuzzHandshakeServer feeds arbitrary client bytes to the server side: it must never panic, and
// never accept a client that does not know the secret.
func FuzzHandshakeServer(f *testing.F) {
	hello := append(append([]byte(hsMagic), ConnRaft), bytes.Repeat([]byte{7}, hsNonceLen)...)
	f.Add(hello)
	f.Add(append(hello, bytes.Repeat([]byte{1}, hsMACLen)...))
	f.Add([]byte("CAIRN\x01H"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		srv, cli := net.Pipe()
		defer srv.Close()
		go func() {
			defer cli.Close()
			go io.Copy(io.Discard, cli)
			cli.Write(in)
		}()
		srv.SetDeadline(time.Now().Add(time.Second))
		if _, err := hsServer(srv, muxTestSecret, nil); err == nil {
			t.Fatalf("handshake accepted %x", in)
		}
	})
}

func BenchmarkDialCluster(b *testing.B) {
	m := muxTestServe(b, muxTestSecret, 0)
	addr := m.Listener(ConnRPC).Addr().String()
	closeAccepted(m.Listener(ConnRPC))
	ctx := context.Background()
	for b.Loop() {
		c, err := DialCluster(ctx, OSNetwork{}, addr, ConnRPC, Security{Secret: muxTestSecret})
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

// TestMuxFloodFromOneHostLeavesRoomForPeers: silent connections hold a handshake slot for the
// whole handshake timeout. Once half the slots are taken, one host gets no more than
// muxMaxPendingPerSource; the rest are refused at once as overload, and a peer on another address
// that holds the secret still gets in. Before, 1,024 silent connections from one client refused
// 46 of 47 real dials (helper-45).
func TestMuxFloodFromOneHostLeavesRoomForPeers(t *testing.T) {
	m := muxTestServe(t, muxTestSecret, time.Minute) // the flood holds its slots for the whole test
	addr := m.Listener(ConnRPC).Addr().String()
	closeAccepted(m.Listener(ConnRPC))
	flooder := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.94")}}
	const extra = 10
	for range muxMaxPending/2 + extra {
		c, err := flooder.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	testutil.WaitFor(t, 10*time.Second, "the flood past half the slots refused", func() bool {
		return m.Rejected(RejectOverload) == extra
	})
	for i := range 3 {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		conn, err := DialCluster(ctx, OSNetwork{}, addr, ConnRPC, Security{Secret: muxTestSecret})
		cancel()
		if err != nil {
			t.Fatalf("peer dial %d during the flood: %v", i, err)
		}
		conn.Close()
	}
	if got := m.Rejected(RejectOverload); got != extra {
		t.Fatalf("%d overload refusals, want only the flood's %d", got, extra)
	}
}

// TestMuxBurstOfRealDialsFromOneHost: a peer opening many cluster connections at once (hundreds of
// shard reads in parallel, or several nodes behind one address) is never refused while the port
// is not under a flood: the per-IP cap applies only once half the slots are taken. With the cap
// always on, 90-136 of 200 such dials were refused (helper-47).
func TestMuxBurstOfRealDialsFromOneHost(t *testing.T) {
	m := muxTestServe(t, muxTestSecret, 0)
	addr := m.Listener(ConnRPC).Addr().String()
	closeAccepted(m.Listener(ConnRPC))
	const dials = 200
	start := make(chan struct{})
	errs := make(chan error, dials)
	var wg sync.WaitGroup
	for range dials {
		wg.Go(func() {
			<-start
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			c, err := DialCluster(ctx, OSNetwork{}, addr, ConnRPC, Security{Secret: muxTestSecret})
			if err == nil {
				c.Close()
			}
			errs <- err
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a real dial of a burst of %d failed: %v (%d refused as overload)", dials, err, m.Rejected(RejectOverload))
		}
	}
}

// closeAccepted accepts and closes every connection ln delivers, until it is closed: a listener
// whose callers only care that the handshake got through.
func closeAccepted(ln net.Listener) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}
