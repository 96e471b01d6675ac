package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-sockaddr"
	"github.com/hashicorp/memberlist"
)

const (
	// gossipPacketBuf is the largest UDP datagram; memberlist never sends more.
	gossipPacketBuf = 65536
	// gossipRecvBuf is the receive window memberlist's own transport asks for, so bursts of
	// gossip are not dropped by the kernel.
	gossipRecvBuf = 2 << 20
	// gossipPortTries bounds the search for a port free for both TCP and UDP when binding port 0.
	gossipPortTries = 10
)

// GossipTransport implements memberlist.Transport on a UDP PacketConn and a TCP listener obtained
// from a Network, so that partitions also cut gossip. It mirrors memberlist's NetTransport except
// that every socket comes from the Network and its goroutines stop on Shutdown even when memberlist
// has stopped reading.
type GossipTransport struct {
	nw        Network
	logger    *slog.Logger
	udp       net.PacketConn
	tcp       net.Listener
	advertise *net.TCPAddr

	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	// openStreams counts the inbound streams memberlist has open, in all and by remote IP
	// (takeStreamSlot); refusedStreams counts the ones closed at once for lack of a slot.
	streamsMu      sync.Mutex
	openStreams    int
	streamsFrom    map[string]int
	refusedStreams atomic.Uint64
	done           chan struct{}
	stopOnce       sync.Once
	wg             sync.WaitGroup
}

var _ memberlist.Transport = (*GossipTransport)(nil)

// NewGossipTransport binds UDP and TCP on the same bindAddr ("host:port"; port 0 picks a port
// free for both) and starts receiving. advertise ("ip:port") is what peers are told; empty means
// the bound address, or a private IP when bound to an unspecified address; port 0 means the bound
// port.
func NewGossipTransport(nw Network, bindAddr string, advertise string, logger *slog.Logger) (*GossipTransport, error) {
	host, portStr, err := net.SplitHostPort(bindAddr)
	if err != nil {
		return nil, fmt.Errorf("cluster: gossip bind address %q: %w", bindAddr, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("cluster: gossip bind port %q: %w", bindAddr, err)
	}
	t := &GossipTransport{
		nw:          nw,
		logger:      logger,
		packetCh:    make(chan *memberlist.Packet),
		streamCh:    make(chan net.Conn),
		streamsFrom: make(map[string]int),
		done:        make(chan struct{}),
	}
	if err := t.bind(host, int(port)); err != nil {
		return nil, err
	}
	if t.advertise, err = gossipAdvertise(advertise, host, t.tcp.Addr()); err != nil {
		t.udp.Close()
		t.tcp.Close()
		return nil, err
	}
	gossipSetRecvBuf(t.udp)
	t.wg.Go(t.receivePackets)
	t.wg.Go(t.acceptStreams)
	return t, nil
}

// bind opens the TCP listener and the UDP socket on one port. With port 0 the OS picks the TCP
// port, whose UDP twin may be taken; then it tries again with a new port.
func (t *GossipTransport) bind(host string, port int) error {
	tries := 1
	if port == 0 {
		tries = gossipPortTries
	}
	var err error
	for range tries {
		var tcp net.Listener
		tcp, err = t.nw.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return fmt.Errorf("cluster: gossip tcp listen: %w", err)
		}
		bound := tcp.Addr().(*net.TCPAddr).Port
		var udp net.PacketConn
		udp, err = t.nw.ListenPacket("udp", net.JoinHostPort(host, strconv.Itoa(bound)))
		if err == nil {
			t.tcp, t.udp = tcp, udp
			return nil
		}
		tcp.Close()
	}
	return fmt.Errorf("cluster: gossip udp listen: %w", err)
}

// gossipSetRecvBuf asks for a large receive window, backing off until the OS accepts a size. It is
// best effort: a Network's PacketConn need not support it.
func gossipSetRecvBuf(pc net.PacketConn) {
	rb, ok := pc.(interface{ SetReadBuffer(int) error })
	if !ok {
		return
	}
	for size := gossipRecvBuf; size > 0; size /= 2 {
		if rb.SetReadBuffer(size) == nil {
			return
		}
	}
}

func gossipAdvertise(advertise, bindHost string, bound net.Addr) (*net.TCPAddr, error) {
	boundPort := bound.(*net.TCPAddr).Port
	if advertise == "" {
		ip := bound.(*net.TCPAddr).IP
		if ip.IsUnspecified() || bindHost == "" {
			priv, err := sockaddr.GetPrivateIP()
			if err != nil || priv == "" {
				return nil, fmt.Errorf("cluster: gossip bound to %s and no private IP found; set an advertise address", bound)
			}
			ip = net.ParseIP(priv)
		}
		return &net.TCPAddr{IP: ip, Port: boundPort}, nil
	}
	host, portStr, err := net.SplitHostPort(advertise)
	if err != nil {
		return nil, fmt.Errorf("cluster: gossip advertise address %q: %w", advertise, err)
	}
	ip := net.ParseIP(host)
	port, err := strconv.ParseUint(portStr, 10, 16)
	if ip == nil || err != nil {
		return nil, fmt.Errorf("cluster: gossip advertise address %q: want ip:port", advertise)
	}
	if port == 0 {
		port = uint64(boundPort)
	}
	return &net.TCPAddr{IP: ip, Port: int(port)}, nil
}

// FinalAdvertiseAddr implements memberlist.Transport: memberlist's own AdvertiseAddr/Port win when
// set, otherwise the transport's advertise address.
func (t *GossipTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if ip == "" {
		adv := t.advertise.IP
		if v4 := adv.To4(); v4 != nil {
			adv = v4
		}
		return adv, t.advertise.Port, nil
	}
	parsed := net.ParseIP(ip)
	if parsed == nil {
		return nil, 0, fmt.Errorf("cluster: gossip advertise address %q is not an IP", ip)
	}
	if v4 := parsed.To4(); v4 != nil {
		parsed = v4
	}
	return parsed, port, nil
}

// WriteTo implements memberlist.Transport: one UDP datagram.
func (t *GossipTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	udpAddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return time.Time{}, err
	}
	// memberlist takes the send time for RTT: take it right after the write.
	_, err = t.udp.WriteTo(b, udpAddr)
	return time.Now(), err
}

// PacketCh implements memberlist.Transport.
func (t *GossipTransport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

// DialTimeout implements memberlist.Transport through the Network.
func (t *GossipTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return t.nw.DialContext(ctx, "tcp", addr)
}

// StreamCh implements memberlist.Transport.
func (t *GossipTransport) StreamCh() <-chan net.Conn { return t.streamCh }

// Shutdown implements memberlist.Transport: it closes both sockets and waits for the receive
// goroutines. It is safe to call more than once.
func (t *GossipTransport) Shutdown() error {
	t.stopOnce.Do(func() {
		close(t.done)
		t.udp.Close()
		t.tcp.Close()
		t.wg.Wait()
	})
	return nil
}

func (t *GossipTransport) receivePackets() {
	for {
		buf := make([]byte, gossipPacketBuf)
		n, from, err := t.udp.ReadFrom(buf)
		ts := time.Now()
		if err != nil {
			if t.stopping() || errors.Is(err, net.ErrClosed) {
				return
			}
			t.logger.Warn("gossip udp read failed", "err", err)
			continue
		}
		if n < 1 {
			continue
		}
		select {
		case t.packetCh <- &memberlist.Packet{Buf: buf[:n], From: from, Timestamp: ts}:
		case <-t.done:
			return
		}
	}
}

func (t *GossipTransport) acceptStreams() {
	var delay time.Duration
	for {
		conn, err := t.tcp.Accept()
		if err != nil {
			if t.stopping() || errors.Is(err, net.ErrClosed) {
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			t.logger.Warn("gossip tcp accept failed", "err", err, "retry_in", delay)
			timer := time.NewTimer(delay)
			select {
			case <-t.done:
				timer.Stop()
				return
			case <-timer.C:
			}
			continue
		}
		delay = 0
		src := remoteHost(conn)
		if !t.takeStreamSlot(src) {
			// memberlist keeps a goroutine and a descriptor per stream for up to its 10 s
			// timeout, so silent connections without the gossip key would otherwise pile up
			// without bound (helper-45: 3,000 of them, 3,000 descriptors).
			t.refusedStreams.Add(1)
			conn.Close()
			continue
		}
		select {
		case t.streamCh <- &gossipStream{Conn: conn, release: func() { t.releaseStreamSlot(src) }}:
		case <-t.done:
			conn.Close()
			return
		}
	}
}

// maxGossipStreams bounds the inbound gossip streams open at once. memberlist opens one per
// push-pull (every 30 s per peer, a few milliseconds each) and per fallback probe, so a few
// hundred leave room for clusters far larger than cairn's voter counts. Once half are taken, one
// remote IP may hold at most maxGossipStreamsPerSource, so a single host re-opening silent
// connections cannot take every slot and stop every join (helper-47).
const (
	maxGossipStreams          = 256
	maxGossipStreamsPerSource = 16
)

// takeStreamSlot reserves a slot for a stream from src, or reports that there is none for it.
func (t *GossipTransport) takeStreamSlot(src string) bool {
	t.streamsMu.Lock()
	defer t.streamsMu.Unlock()
	if t.openStreams >= maxGossipStreams ||
		(t.openStreams >= maxGossipStreams/2 && t.streamsFrom[src] >= maxGossipStreamsPerSource) {
		return false
	}
	t.openStreams++
	t.streamsFrom[src]++
	return true
}

func (t *GossipTransport) releaseStreamSlot(src string) {
	t.streamsMu.Lock()
	defer t.streamsMu.Unlock()
	t.openStreams--
	if t.streamsFrom[src]--; t.streamsFrom[src] <= 0 {
		delete(t.streamsFrom, src)
	}
}

// OpenStreams is how many inbound streams hold a slot.
func (t *GossipTransport) OpenStreams() int {
	t.streamsMu.Lock()
	defer t.streamsMu.Unlock()
	return t.openStreams
}

// RefusedStreams counts inbound gossip streams closed at once because maxGossipStreams were open.
func (t *GossipTransport) RefusedStreams() uint64 { return t.refusedStreams.Load() }

// gossipStream gives its slot back when memberlist closes it.
type gossipStream struct {
	net.Conn
	release func()
	once    sync.Once
}

func (c *gossipStream) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

func (t *GossipTransport) stopping() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}
