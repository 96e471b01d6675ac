package cluster

import (
	"io"
	"net"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/cairn-dev/cairn/internal/testutil"
)

func TestGossipTransportJoin(t *testing.T) {
	base := runtime.NumGoroutine()
	var lists []*memberlist.Memberlist
	for i := range 3 {
		tr, err := NewGossipTransport(OSNetwork{}, "127.0.0.1:0", "", transportTestLogger())
		if err != nil {
			t.Fatal(err)
		}
		ml, err := memberlist.Create(testutil.GossipConfig("g"+strconv.Itoa(i), tr))
		if err != nil {
			tr.Shutdown()
			t.Fatal(err)
		}
		lists = append(lists, ml)
	}
	seed := lists[0].LocalNode().Address()
	for _, ml := range lists[1:] {
		testutil.WaitFor(t, 10*time.Second, "join", func() bool {
			_, err := ml.Join([]string{seed})
			return err == nil
		})
	}
	for i, ml := range lists {
		testutil.WaitFor(t, 10*time.Second, "node "+strconv.Itoa(i)+" to see 3 members", func() bool {
			return ml.NumMembers() == 3
		})
	}
	for _, ml := range lists {
		if err := ml.Shutdown(); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, 10*time.Second, "goroutines to return to baseline", func() bool {
		return runtime.NumGoroutine() <= base
	})
}

func TestGossipTransportAddresses(t *testing.T) {
	tests := []struct {
		name      string
		bind      string
		advertise string
		wantIP    string
		wantPort  int // 0: the bound port
		wantErr   bool
	}{
		{"bound address", "127.0.0.1:0", "", "127.0.0.1", 0, false},
		{"explicit advertise", "127.0.0.1:0", "10.1.2.3:7946", "10.1.2.3", 7946, false},
		{"advertise ip with bound port", "127.0.0.1:0", "10.1.2.3:0", "10.1.2.3", 0, false},
		{"advertise not an ip", "127.0.0.1:0", "example.com:1", "", 0, true},
		{"advertise without port", "127.0.0.1:0", "10.1.2.3", "", 0, true},
		{"bind without port", "127.0.0.1", "", "", 0, true},
		{"bind bad port", "127.0.0.1:http", "", "", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := NewGossipTransport(OSNetwork{}, tt.bind, tt.advertise, transportTestLogger())
			if tt.wantErr {
				if err == nil {
					tr.Shutdown()
					t.Fatal("want error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { tr.Shutdown() })
			bound := tr.tcp.Addr().(*net.TCPAddr).Port
			if udp := tr.udp.LocalAddr().(*net.UDPAddr).Port; udp != bound {
				t.Fatalf("udp port %d != tcp port %d", udp, bound)
			}
			ip, port, err := tr.FinalAdvertiseAddr("", 0)
			if err != nil {
				t.Fatal(err)
			}
			want := tt.wantPort
			if want == 0 {
				want = bound
			}
			if ip.String() != tt.wantIP || port != want {
				t.Fatalf("advertise %s:%d, want %s:%d", ip, port, tt.wantIP, want)
			}
			// memberlist's own AdvertiseAddr wins.
			if ip, port, err := tr.FinalAdvertiseAddr("192.0.2.1", 99); err != nil || ip.String() != "192.0.2.1" || port != 99 {
				t.Fatalf("override gave %s:%d, %v", ip, port, err)
			}
		})
	}
}

func TestGossipTransportRetriesTakenUDPPort(t *testing.T) {
	// Occupy the UDP twin of the next TCP port the OS hands out to a fake Network.
	nw := &gossipTestTakenNet{}
	tr, err := NewGossipTransport(nw, "127.0.0.1:0", "", transportTestLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Shutdown() })
	if nw.udpFailures != 1 {
		t.Fatalf("udp failures = %d, want 1", nw.udpFailures)
	}
}

// gossipTestTakenNet refuses the first UDP listen, as if the TCP port's UDP twin were taken.
type gossipTestTakenNet struct {
	OSNetwork
	udpFailures int
}

func (n *gossipTestTakenNet) ListenPacket(network, addr string) (net.PacketConn, error) {
	if n.udpFailures == 0 {
		n.udpFailures++
		return nil, &net.OpError{Op: "listen", Net: network, Err: io.ErrUnexpectedEOF}
	}
	return n.OSNetwork.ListenPacket(network, addr)
}

// TestGossipStreamFloodIsBounded: memberlist holds a goroutine and a descriptor per inbound
// stream for up to its 10 s timeout, and the gossip port is open to anyone who reaches it. One
// host's silent connections get at most half the slots; beyond that they are closed at once and
// counted (before, 3,000 of them held 3,000 descriptors, helper-45), and a real member on another
// address still joins while they hold theirs (with one cap for all, it could not, helper-47).
// Once they go, their slots come back.
func TestGossipStreamFloodIsBounded(t *testing.T) {
	var lists []*memberlist.Memberlist
	var victim *GossipTransport
	for i := range 2 {
		tr, err := NewGossipTransport(OSNetwork{}, "127.0.0.1:0", "", transportTestLogger())
		if err != nil {
			t.Fatal(err)
		}
		cfg := testutil.GossipConfig("g"+strconv.Itoa(i), tr)
		cfg.TCPTimeout = time.Minute // the silent streams hold their slots for the whole test
		ml, err := memberlist.Create(cfg)
		if err != nil {
			tr.Shutdown()
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ml.Shutdown() })
		lists = append(lists, ml)
		if i == 0 {
			victim = tr
		}
	}
	addr := lists[0].LocalNode().Address()
	flooder := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.95")}}
	const flood = maxGossipStreams + 50
	var conns []net.Conn
	for range flood {
		c, err := flooder.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial %d: %v", len(conns), err)
		}
		conns = append(conns, c)
	}
	testutil.WaitFor(t, 10*time.Second, "the connections past the flooder's share refused", func() bool {
		return victim.RefusedStreams() == flood-maxGossipStreams/2
	})
	if got := victim.OpenStreams(); got != maxGossipStreams/2 {
		t.Fatalf("%d streams hold a slot, want %d", got, maxGossipStreams/2)
	}
	testutil.WaitFor(t, 10*time.Second, "a real member joins during the flood", func() bool {
		_, err := lists[1].Join([]string{addr})
		return err == nil && lists[0].NumMembers() == 2
	})
	for _, c := range conns {
		c.Close()
	}
	testutil.WaitFor(t, 15*time.Second, "the flood's slots given back", func() bool { return victim.OpenStreams() <= 1 })
}
