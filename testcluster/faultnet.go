package testcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/cairn-dev/cairn/cluster"
)

// ErrPartitioned is returned by a dial across a partition, and by reads and writes on a connection
// whose ends a partition separated.
var ErrPartitioned = errors.New("testcluster: network partitioned")

// FaultNet is a loopback network shared by all nodes of an in-process cluster. Sockets are real
// loopback sockets; each node gets its own view (Node) so the fabric knows who sends, and a
// partition is enforced at the views: dials fail, packets vanish, and connections between separated
// nodes are closed. It is safe for concurrent use and runs no goroutines.
type FaultNet struct {
	mu sync.RWMutex
	// group maps a node to its partition group; nodes not named share group fnRestGroup. nil
	// means healed.
	group map[string]int
	// owners maps a socket address (see fnKey) to the node that owns it: listeners, packet sockets
	// and the local end of dialed connections. It is how an accepted connection or an incoming
	// packet is attributed to its sender.
	owners map[string]string
	conns  map[*fnConn]struct{}
}

const fnRestGroup = -1

// NewFaultNet returns a healed network.
func NewFaultNet() *FaultNet {
	return &FaultNet{owners: make(map[string]string), conns: make(map[*fnConn]struct{})}
}

// Node returns the view of the network through which node name opens all its sockets. The view
// records which listen addresses (tcp and udp) belong to name.
func (f *FaultNet) Node(name string) cluster.Network { return &fnView{f: f, name: name} }

// Partition splits the nodes into groups that cannot reach each other; nodes named in no group
// form one extra group together. Existing connections between groups are closed at once.
// A later Partition replaces the earlier one.
func (f *FaultNet) Partition(groups ...[]string) {
	f.mu.Lock()
	f.group = make(map[string]int)
	for i, g := range groups {
		for _, name := range g {
			f.group[name] = i
		}
	}
	var cut []*fnConn
	for c := range f.conns {
		if f.separatedLocked(c.self, c.peerLocked()) {
			cut = append(cut, c)
		}
	}
	f.mu.Unlock()
	for _, c := range cut {
		c.Close()
	}
}

// Heal removes any partition. Connections cut by it stay closed; nodes reconnect by themselves.
func (f *FaultNet) Heal() {
	f.mu.Lock()
	f.group = nil
	f.mu.Unlock()
}

// Isolate separates name from every other node.
func (f *FaultNet) Isolate(name string) { f.Partition([]string{name}) }

// separatedLocked reports whether a partition stands between nodes a and b. Unattributed
// sockets ("") are never cut: they belong to test clients outside the cluster.
func (f *FaultNet) separatedLocked(a, b string) bool {
	if f.group == nil || a == "" || b == "" || a == b {
		return false
	}
	ga, ok := f.group[a]
	if !ok {
		ga = fnRestGroup
	}
	gb, ok := f.group[b]
	if !ok {
		gb = fnRestGroup
	}
	return ga != gb
}

func (f *FaultNet) separated(a, b string) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.separatedLocked(a, b)
}

// fnKey names a socket address per protocol, with IPv4-in-IPv6 unmapped so that the listener's
// and the peer's spelling of one address agree.
func fnKey(proto string, ap netip.AddrPort) string {
	return proto + "/" + netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String()
}

func fnAddrPort(a net.Addr) (netip.AddrPort, bool) {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort(), true
	case *net.UDPAddr:
		return a.AddrPort(), true
	}
	return netip.AddrPort{}, false
}

// ownerLocked returns the node owning ap, also matching listeners bound to an unspecified address.
func (f *FaultNet) ownerLocked(proto string, ap netip.AddrPort) string {
	if name, ok := f.owners[fnKey(proto, ap)]; ok {
		return name
	}
	for _, any := range []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()} {
		if name, ok := f.owners[fnKey(proto, netip.AddrPortFrom(any, ap.Port()))]; ok {
			return name
		}
	}
	return ""
}

func (f *FaultNet) ownerOf(proto string, a net.Addr) string {
	ap, ok := fnAddrPort(a)
	if !ok {
		return ""
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.ownerLocked(proto, ap)
}

// register records name as the owner of a and returns the key to release later.
func (f *FaultNet) register(proto string, a net.Addr, name string) string {
	ap, ok := fnAddrPort(a)
	if !ok {
		return ""
	}
	key := fnKey(proto, ap)
	f.mu.Lock()
	f.owners[key] = name
	f.mu.Unlock()
	return key
}

// release forgets key unless another node has taken the address over since.
func (f *FaultNet) release(key, name string) {
	f.mu.Lock()
	if f.owners[key] == name {
		delete(f.owners, key)
	}
	f.mu.Unlock()
}

// fnView is one node's Network.
type fnView struct {
	f    *FaultNet
	name string
}

func (v *fnView) Listen(network, addr string) (net.Listener, error) {
	ln, err := cluster.OSNetwork{}.Listen(network, addr)
	if err != nil {
		return nil, err
	}
	return &fnListener{Listener: ln, v: v, key: v.f.register("tcp", ln.Addr(), v.name)}, nil
}

func (v *fnView) ListenPacket(network, addr string) (net.PacketConn, error) {
	pc, err := cluster.OSNetwork{}.ListenPacket(network, addr)
	if err != nil {
		return nil, err
	}
	return &fnPacketConn{PacketConn: pc, v: v, key: v.f.register("udp", pc.LocalAddr(), v.name)}, nil
}

func (v *fnView) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	f := v.f
	// Fail fast, like a dial into a black hole that the caller's timeout would end anyway.
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		f.mu.RLock()
		target := f.ownerLocked("tcp", ap)
		cut := f.separatedLocked(v.name, target)
		f.mu.RUnlock()
		if cut {
			return nil, fmt.Errorf("dial %s: %s cannot reach %s: %w", addr, v.name, target, ErrPartitioned)
		}
	}
	conn, err := cluster.OSNetwork{}.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	ap, _ := fnAddrPort(conn.RemoteAddr())
	local, _ := fnAddrPort(conn.LocalAddr())
	c := &fnConn{Conn: conn, f: f, self: v.name, localKey: fnKey("tcp", local)}
	// Checking the partition and registering happen under one lock, so a Partition either sees
	// this connection and cuts it, or this dial sees the Partition and fails.
	f.mu.Lock()
	c.peer = f.ownerLocked("tcp", ap)
	if f.separatedLocked(v.name, c.peer) {
		f.mu.Unlock()
		conn.Close()
		return nil, fmt.Errorf("dial %s: %s cannot reach %s: %w", addr, v.name, c.peer, ErrPartitioned)
	}
	f.owners[c.localKey] = v.name
	f.conns[c] = struct{}{}
	f.mu.Unlock()
	return c, nil
}

// fnListener attributes accepted connections to their dialer and tracks them.
type fnListener struct {
	net.Listener
	v   *fnView
	key string
}

func (l *fnListener) Accept() (net.Conn, error) {
	for {
		conn, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		f := l.v.f
		c := &fnConn{Conn: conn, f: f, self: l.v.name}
		f.mu.Lock()
		if f.separatedLocked(c.self, c.peerLocked()) {
			f.mu.Unlock()
			conn.Close()
			continue
		}
		f.conns[c] = struct{}{}
		f.mu.Unlock()
		return c, nil
	}
}

func (l *fnListener) Close() error {
	l.v.f.release(l.key, l.v.name)
	return l.Listener.Close()
}

// fnConn is a tracked stream connection of node self.
type fnConn struct {
	net.Conn
	f    *FaultNet
	self string
	// peer is the remote node of a dialed connection. An accepted connection resolves its peer
	// lazily from the remote address, because its dialer registers only after connect returns.
	peer      string
	localKey  string // owner entry of a dialed connection's local address
	closeOnce sync.Once
}

func (c *fnConn) peerLocked() string {
	if c.peer != "" {
		return c.peer
	}
	ap, ok := fnAddrPort(c.Conn.RemoteAddr())
	if !ok {
		return ""
	}
	return c.f.ownerLocked("tcp", ap)
}

func (c *fnConn) check() error {
	c.f.mu.RLock()
	peer := c.peerLocked()
	cut := c.f.separatedLocked(c.self, peer)
	c.f.mu.RUnlock()
	if cut {
		return fmt.Errorf("%s to %s: %w", c.self, peer, ErrPartitioned)
	}
	return nil
}

func (c *fnConn) Read(b []byte) (int, error) {
	if err := c.check(); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

func (c *fnConn) Write(b []byte) (int, error) {
	if err := c.check(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

func (c *fnConn) Close() error {
	err := net.ErrClosed
	c.closeOnce.Do(func() {
		c.f.mu.Lock()
		delete(c.f.conns, c)
		if c.localKey != "" && c.f.owners[c.localKey] == c.self {
			delete(c.f.owners, c.localKey)
		}
		c.f.mu.Unlock()
		err = c.Conn.Close()
	})
	return err
}

// fnPacketConn drops datagrams across a partition on both ends: on send, by destination, and on
// receive, by sender, so a packet already in flight when the partition starts is lost too.
type fnPacketConn struct {
	net.PacketConn
	v   *fnView
	key string
}

func (p *fnPacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if p.v.f.separated(p.v.name, p.v.f.ownerOf("udp", addr)) {
		return len(b), nil // a real network reports success for a datagram it loses
	}
	return p.PacketConn.WriteTo(b, addr)
}

func (p *fnPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, from, err := p.PacketConn.ReadFrom(b)
		if err != nil || !p.v.f.separated(p.v.name, p.v.f.ownerOf("udp", from)) {
			return n, from, err
		}
	}
}

// SetReadBuffer passes through to the OS socket so the gossip transport can size its window.
func (p *fnPacketConn) SetReadBuffer(n int) error {
	rb, ok := p.PacketConn.(interface{ SetReadBuffer(int) error })
	if !ok {
		return errors.ErrUnsupported
	}
	return rb.SetReadBuffer(n)
}

func (p *fnPacketConn) Close() error {
	p.v.f.release(p.key, p.v.name)
	return p.PacketConn.Close()
}
