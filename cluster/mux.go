package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// muxMaxPending caps concurrent handshakes so a connection flood costs bounded goroutines;
	// connections beyond it are rejected at once.
	muxMaxPending = 1024
	// muxMaxPendingPerSource caps them per remote IP once half of muxMaxPending are taken, so that
	// one host's silent connections (each held for the handshake timeout) cannot take every slot
	// and lock the real peers out. Below half there is no per-IP cap: a peer's burst of real dials
	// (hundreds of shard reads at once, or several nodes behind one address) finishes its
	// handshakes in milliseconds and must not be refused.
	muxMaxPendingPerSource = 64
	// muxLogEvery rate-limits rejection logs: a scanner or a misconfigured peer must not flood them.
	muxLogEvery = time.Second
)

// Mux accepts connections on the cluster port, authenticates each with the handshake, and hands it
// to the listener of its kind. One port serves Raft and RPC, as in Consul and rqlite. Garbage, a
// wrong secret or a slow client gets the connection closed, a counter incremented and a
// rate-limited debug log; never a crash or a leak.
type Mux struct {
	// HandshakeTimeout bounds each incoming handshake (default 5 s). Set it before Serve.
	HandshakeTimeout time.Duration

	ln       net.Listener
	security Security
	logger   *slog.Logger
	subs     map[byte]*muxListener

	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
	rejected  atomic.Uint64
	byReason  map[string]*atomic.Uint64 // fixed keys (RejectReasons), so read without a lock

	mu      sync.Mutex
	pending map[net.Conn]struct{} // connections still in the handshake, closed by Close
	// pendingFrom counts pending by remote IP (muxMaxPendingPerSource).
	pendingFrom map[string]int
	lastLog     time.Time
	quiet       uint64 // rejections not logged since lastLog
}

// NewMux returns a Mux over ln. The secret must be at least 16 bytes, and TLS (when set) needs a
// CA and a certificate; Serve fails otherwise.
func NewMux(ln net.Listener, sec Security, logger *slog.Logger) *Mux {
	m := &Mux{
		HandshakeTimeout: hsDefaultTimeout,
		ln:               ln,
		security:         sec,
		logger:           logger,
		done:             make(chan struct{}),
		pending:          make(map[net.Conn]struct{}),
		pendingFrom:      make(map[string]int),
		byReason:         make(map[string]*atomic.Uint64, len(RejectReasons)),
	}
	for _, r := range RejectReasons {
		m.byReason[r] = new(atomic.Uint64)
	}
	m.subs = map[byte]*muxListener{
		ConnRaft: m.newListener(),
		ConnRPC:  m.newListener(),
	}
	return m
}

// Listener returns the listener that receives authenticated connections of kind (ConnRaft or
// ConnRPC). Its Addr is the cluster address. It panics on any other kind: that is a wiring bug.
func (m *Mux) Listener(kind byte) net.Listener {
	l, ok := m.subs[kind]
	if !ok {
		panic(fmt.Sprintf("cluster: mux has no listener for kind %q", kind))
	}
	return l
}

// RejectedConns is the number of connections closed because their handshake failed.
func (m *Mux) RejectedConns() uint64 { return m.rejected.Load() }

// Rejected is the number of connections refused for reason (one of RejectReasons).
func (m *Mux) Rejected(reason string) uint64 {
	if c, ok := m.byReason[reason]; ok {
		return c.Load()
	}
	return 0
}

// Serve accepts connections until Close, then returns nil.
func (m *Mux) Serve() error {
	if err := m.security.validate(); err != nil {
		return err
	}
	var delay time.Duration
	for {
		conn, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.done:
				return nil
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("cluster: mux listener closed: %w", err)
			}
			// Transient failures such as EMFILE: back off like net/http instead of spinning.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			m.logger.Warn("cluster accept failed", "err", err, "retry_in", delay)
			t := time.NewTimer(delay)
			select {
			case <-m.done:
				t.Stop()
				return nil
			case <-t.C:
			}
			continue
		}
		delay = 0
		switch m.track(conn) {
		case muxTracked:
			go m.handle(conn)
		case muxFull:
			m.reject(conn, RejectOverload, errors.New("too many pending handshakes"))
		case muxClosed:
			conn.Close()
			return nil
		}
	}
}

type muxTrackResult int

const (
	muxTracked muxTrackResult = iota
	muxFull
	muxClosed
)

// track registers conn as pending and counts its goroutine in wg. Both happen under mu, which
// Close also holds to close done, so wg.Wait in Close never races with a late wg.Add.
func (m *Mux) track(conn net.Conn) muxTrackResult {
	m.mu.Lock()
	defer m.mu.Unlock()
	select {
	case <-m.done:
		return muxClosed
	default:
	}
	src := remoteHost(conn)
	if len(m.pending) >= muxMaxPending ||
		(len(m.pending) >= muxMaxPending/2 && m.pendingFrom[src] >= muxMaxPendingPerSource) {
		return muxFull
	}
	m.pending[conn] = struct{}{}
	m.pendingFrom[src]++
	m.wg.Add(1)
	return muxTracked
}

func (m *Mux) untrack(conn net.Conn) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.pending[conn]; !ok {
		return
	}
	delete(m.pending, conn)
	src := remoteHost(conn)
	if m.pendingFrom[src]--; m.pendingFrom[src] <= 0 {
		delete(m.pendingFrom, src)
	}
}

// remoteHost is the IP a connection comes from, or its whole address when it has no port.
func remoteHost(conn net.Conn) string {
	ra := conn.RemoteAddr()
	if ra == nil {
		return ""
	}
	addr := ra.String()
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

// handle runs the handshakes of one connection under one deadline: TLS (when on), then HMAC. The
// raw connection stays in pending throughout, so Close interrupts either step.
func (m *Mux) handle(raw net.Conn) {
	defer m.wg.Done()
	conn := raw
	reason := RejectHandshake
	err := raw.SetDeadline(time.Now().Add(m.HandshakeTimeout))
	if err == nil && m.security.TLS != nil {
		tc := tls.Server(raw, m.security.TLS.serverConfig())
		if err = tc.Handshake(); err != nil {
			reason, err = classifyTLSError(err), fmt.Errorf("tls: %w", err)
		}
		conn = tc
	}
	var kind byte
	if err == nil {
		var binding []byte
		if binding, err = channelBinding(conn); err == nil {
			kind, err = hsServer(conn, m.security.Secret, binding)
		}
	}
	if err == nil {
		err = conn.SetDeadline(time.Time{})
	}
	m.untrack(raw)
	if err != nil {
		m.reject(conn, reason, err)
		return
	}
	m.subs[kind].deliver(conn)
}

func (m *Mux) reject(conn net.Conn, reason string, err error) {
	conn.Close()
	m.rejected.Add(1)
	m.byReason[reason].Add(1)
	m.mu.Lock()
	now := time.Now()
	if now.Sub(m.lastLog) < muxLogEvery {
		m.quiet++
		m.mu.Unlock()
		return
	}
	suppressed := m.quiet
	m.lastLog, m.quiet = now, 0
	m.mu.Unlock()
	level := slog.LevelDebug
	if reason == RejectUnknownCA || reason == RejectExpired || reason == RejectWrongRole {
		// A certificate problem is a misconfigured peer or an intruder, not line noise.
		level = slog.LevelWarn
	}
	m.logger.Log(context.Background(), level, "cluster connection rejected", "remote", conn.RemoteAddr().String(),
		"reason", reason, "err", err, "suppressed", suppressed)
}

// Close stops Serve, closes the sub-listeners and every connection still in its handshake, and
// waits for the handshake goroutines to finish.
func (m *Mux) Close() error {
	var err error
	m.closeOnce.Do(func() {
		m.mu.Lock()
		close(m.done)
		for conn := range m.pending {
			conn.Close()
		}
		m.mu.Unlock()
		err = m.ln.Close()
		for _, l := range m.subs {
			l.Close()
		}
		m.wg.Wait()
	})
	return err
}

// muxListener is the net.Listener of one connection kind.
type muxListener struct {
	m         *Mux
	conns     chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
}

func (m *Mux) newListener() *muxListener {
	return &muxListener{m: m, conns: make(chan net.Conn), closed: make(chan struct{})}
}

// deliver hands conn to Accept, or closes it when nobody will accept it any more.
func (l *muxListener) deliver(conn net.Conn) {
	select {
	case l.conns <- conn:
	case <-l.closed:
		conn.Close()
	case <-l.m.done:
		conn.Close()
	}
}

func (l *muxListener) Accept() (net.Conn, error) {
	select {
	case conn := <-l.conns:
		return conn, nil
	case <-l.closed:
		return nil, net.ErrClosed
	case <-l.m.done:
		return nil, net.ErrClosed
	}
}

// Close stops this kind only; the mux keeps serving the other.
func (l *muxListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

func (l *muxListener) Addr() net.Addr { return l.m.ln.Addr() }
