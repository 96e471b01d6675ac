package cluster

import (
	"context"
	"net"
)

// Network is how a node opens every inter-node socket (Raft, internal RPC, gossip UDP and TCP).
// Nothing in a node calls package net directly for peer traffic, so that testcluster can substitute
// a fault-injecting implementation and a partition cuts all three planes at once.
type Network interface {
	// Listen opens a stream listener; network is "tcp".
	Listen(network, addr string) (net.Listener, error)
	// ListenPacket opens a packet socket; network is "udp".
	ListenPacket(network, addr string) (net.PacketConn, error)
	// DialContext opens a stream connection, bounded by ctx.
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// OSNetwork is the real Network: the operating system's sockets.
type OSNetwork struct{}

var _ Network = OSNetwork{}

// Listen implements Network with net.ListenConfig.
func (OSNetwork) Listen(network, addr string) (net.Listener, error) {
	var lc net.ListenConfig
	return lc.Listen(context.Background(), network, addr)
}

// ListenPacket implements Network with net.ListenConfig.
func (OSNetwork) ListenPacket(network, addr string) (net.PacketConn, error) {
	var lc net.ListenConfig
	return lc.ListenPacket(context.Background(), network, addr)
}

// DialContext implements Network with net.Dialer.
func (OSNetwork) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}
