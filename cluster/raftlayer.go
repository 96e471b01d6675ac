package cluster

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// RaftLayer implements raft.StreamLayer over the mux: Raft accepts from the mux's ConnRaft
// listener and dials peers with an authenticated ConnRaft handshake, so Raft shares the cluster
// port with RPC and every Raft byte crosses the Network.
//
// It tracks every connection it hands to Raft and closes them all on Close: raft's
// NetworkTransport closes neither its pooled outbound connections nor the inbound ones it serves,
// which would otherwise outlive a node's shutdown.
type RaftLayer struct {
	ln        net.Listener
	advertise net.Addr
	nw        Network
	security  Security

	mu     sync.Mutex
	closed bool
	conns  map[*raftConn]struct{}
}

// raftConn removes itself from the layer's set when Raft closes it.
type raftConn struct {
	net.Conn
	layer *RaftLayer
	once  sync.Once
}

func (c *raftConn) Close() error {
	c.once.Do(func() {
		c.layer.mu.Lock()
		delete(c.layer.conns, c)
		c.layer.mu.Unlock()
	})
	return c.Conn.Close()
}

// track registers conn, or closes it when the layer is already closed.
func (r *RaftLayer) track(conn net.Conn) (net.Conn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		conn.Close()
		return nil, net.ErrClosed
	}
	rc := &raftConn{Conn: conn, layer: r}
	r.conns[rc] = struct{}{}
	return rc, nil
}

var _ raft.StreamLayer = (*RaftLayer)(nil)

// NewRaftLayer returns a stream layer accepting on ln (the mux's ConnRaft listener) and
// advertising advertise to peers; a nil advertise means ln.Addr().
func NewRaftLayer(ln net.Listener, advertise net.Addr, nw Network, sec Security) *RaftLayer {
	if advertise == nil {
		advertise = ln.Addr()
	}
	return &RaftLayer{ln: ln, advertise: advertise, nw: nw, security: sec, conns: make(map[*raftConn]struct{})}
}

// Accept waits for the next authenticated Raft connection.
func (r *RaftLayer) Accept() (net.Conn, error) {
	conn, err := r.ln.Accept()
	if err != nil {
		return nil, err
	}
	return r.track(conn)
}

// Close stops accepting Raft connections and closes every open one; the mux keeps serving RPC.
func (r *RaftLayer) Close() error {
	r.mu.Lock()
	r.closed = true
	conns := make([]*raftConn, 0, len(r.conns))
	for c := range r.conns {
		conns = append(conns, c)
	}
	r.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	return r.ln.Close()
}

// Addr is the address peers use to reach this node's Raft.
func (r *RaftLayer) Addr() net.Addr { return r.advertise }

// Dial opens an authenticated Raft connection; timeout bounds the dial and the handshake (a
// non-positive timeout leaves only the handshake's own limit).
func (r *RaftLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	conn, err := DialCluster(ctx, r.nw, string(address), ConnRaft, r.security)
	if err != nil {
		return nil, err
	}
	return r.track(conn)
}
