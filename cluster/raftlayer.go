package cluster

import (
	"context"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// RaftLayer implements raft.StreamLayer over the mux: Raft accepts from the mux's ConnRaft
// listener and dials peers with an authenticated ConnRaft handshake, so Raft shares the cluster
// port with RPC and every Raft byte crosses the Network.
type RaftLayer struct {
	ln        net.Listener
	advertise net.Addr
	nw        Network
	secret    []byte
}

var _ raft.StreamLayer = (*RaftLayer)(nil)

// NewRaftLayer returns a stream layer accepting on ln (the mux's ConnRaft listener) and
// advertising advertise to peers; a nil advertise means ln.Addr().
func NewRaftLayer(ln net.Listener, advertise net.Addr, nw Network, secret []byte) *RaftLayer {
	if advertise == nil {
		advertise = ln.Addr()
	}
	return &RaftLayer{ln: ln, advertise: advertise, nw: nw, secret: secret}
}

// Accept waits for the next authenticated Raft connection.
func (r *RaftLayer) Accept() (net.Conn, error) { return r.ln.Accept() }

// Close stops accepting Raft connections; the mux keeps serving RPC.
func (r *RaftLayer) Close() error { return r.ln.Close() }

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
	return DialCluster(ctx, r.nw, string(address), ConnRaft, r.secret)
}
