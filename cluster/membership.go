package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// NodeMeta is what a node tells the others about itself through memberlist (at most 512 bytes).
type NodeMeta struct {
	ID              string `json:"id"`
	ClusterAddr     string `json:"c"`
	HTTPAddr        string `json:"h"`
	Zone            string `json:"z,omitempty"`
	FreeBytes       uint64 `json:"f,omitempty"`
	AcceptsShards   bool   `json:"s,omitempty"`
	BootstrapExpect int    `json:"e,omitempty"`
	// Bootstrapped is true once the node belongs to a Raft cluster; a joining node with
	// --bootstrap-expect then waits to be added instead of bootstrapping a second cluster.
	Bootstrapped bool `json:"b,omitempty"`
	// Leaving is announced right before a graceful leave. memberlist reports a departure the same
	// way whether the node left or died, so this flag is how the others tell the two apart.
	Leaving bool `json:"l,omitempty"`
	// Full is set while the node's free space is under its reserve: it takes no new shards.
	Full bool `json:"x,omitempty"`
	// ProtocolMin and ProtocolMax are the fsm protocol versions the node speaks (see Protocols and
	// ProtocolGate). Builds from before they existed leave them out and speak protocol 1 only.
	ProtocolMin int `json:"pn,omitempty"`
	ProtocolMax int `json:"px,omitempty"`
	// Version is the node's build version (cairn version); empty from releases before v0.2, which
	// did not announce it. At most MaxVersionLen bytes, so the metadata stays within 512 bytes.
	Version string `json:"v,omitempty"`
}

// MaxVersionLen bounds NodeMeta.Version.
const MaxVersionLen = 64

// Member states as cairn reports them. memberlist does not report suspicion to its delegates, so
// a suspect member shows as alive until it is declared dead.
const (
	StateAlive = "alive"
	StateDead  = "dead"
	StateLeft  = "left"
)

// Member is one node as memberlist sees it.
type Member struct {
	Meta       NodeMeta
	State      string
	GossipAddr string
	// Since is when this node saw the member enter State.
	Since time.Time
	// Verified is set once the node at Meta.ClusterAddr proved, over the authenticated cluster
	// port, that it is the member Meta.ID (SetVerifier). Gossip alone proves only the gossip key,
	// which is not enough to become a Raft server, take shards or take over a member's place.
	Verified bool
}

// GossipTimings are memberlist's failure-detection knobs; zero values take memberlist's LAN defaults.
type GossipTimings struct {
	ProbeInterval       time.Duration
	ProbeTimeout        time.Duration
	GossipInterval      time.Duration
	SuspicionMult       int
	PushPullInterval    time.Duration
	GossipToTheDeadTime time.Duration
}

// MembershipConfig configures memberlist for one node.
type MembershipConfig struct {
	NodeID        string
	BindAddr      string // host:port for gossip UDP and TCP
	AdvertiseAddr string // "" = the bind address
	Network       Network
	// SecretKey encrypts and authenticates gossip (AES-GCM, 16/24/32 bytes). It is the initial
	// key: once KeyringFile exists, the keyring in it wins (keys rotated with KeyringAdmin).
	SecretKey []byte
	// KeyringFile persists the gossip keyring across restarts ("" = not persisted).
	KeyringFile string
	// Seeds are gossip addresses to join at start and to re-join periodically.
	Seeds []string
	// PeersFile keeps the members seen last (id and gossip address), so that a restarted node
	// joins every peer it knew at once, not only its seeds. "" keeps nothing.
	PeersFile string
	// KnownPeers, when set, names more gossip addresses worth joining (e.g. those of the Raft
	// configuration's servers); it is asked at every re-join.
	KnownPeers     func() []string
	RejoinInterval time.Duration
	Timings        GossipTimings
	// Meta returns this node's current metadata; it is called on every gossip of our state.
	Meta func() NodeMeta
	// Now is the wall clock whose offset to the peers' is measured (clock.go); nil is time.Now.
	Now func() time.Time
	// ClockVoters lists the Raft voters, whose clocks decide whether this node's is wrong
	// (ClockSkew); nil counts every measured peer.
	ClockVoters func() []string
	Logger      *slog.Logger
}

// Membership runs memberlist for one node and keeps a view of every member, failed ones included.
type Membership struct {
	cfg       MembershipConfig
	ml        *memberlist.Memberlist
	keyring   *localKeyring // keyring.go
	transport *GossipTransport
	localAddr string
	log       *slog.Logger
	// badPackets counts (and rate-limits the log lines of) packets memberlist could not decrypt
	// or decode.
	badPackets badPacketLog

	mu          sync.Mutex
	members     map[string]Member
	subscribers []chan struct{}
	// saved are the peers read from PeersFile at start, by id; members replace them as they appear.
	saved map[string]string
	dirty chan struct{} // a member changed: PeersFile is rewritten soon

	// rejoinNow wakes the re-join loop before its timer (RejoinWhenRaftReaches); raftRejoins
	// counts those wake-ups.
	rejoinNow   chan struct{}
	raftRejoins atomic.Uint64

	// verify proves a member's identity at its cluster address (SetVerifier); nil trusts gossip.
	// verified maps a member id to the cluster address it was proven at, and verifying to the
	// address a check is running for.
	verify    func(ctx context.Context, id, clusterAddr string) error
	verified  map[string]string
	verifying map[string]string
	// closed is set by Shutdown before it waits for the goroutines, so update starts no more;
	// stopCtx ends then too, cutting a verification in flight short.
	closed  bool
	stopCtx context.Context
	cancel  context.CancelFunc

	// clocks are the peers' newest clock offsets (clock.go), guarded by mu; clockVerdict is the
	// last ClockSkew answer.
	clocks       map[string]ClockOffset
	clockVerdict atomic.Pointer[clockVerdict]

	stop chan struct{}
	wg   sync.WaitGroup
}

// now is the clock compared with the peers'.
func (m *Membership) now() time.Time {
	if m.cfg.Now != nil {
		return m.cfg.Now()
	}
	return time.Now()
}

// BadPackets is how many packets or streams memberlist refused as undecryptable or malformed.
func (m *Membership) BadPackets() uint64 { return m.badPackets.Total() }

// RefusedStreams is how many inbound gossip streams were closed at once because the transport had
// as many open as it allows.
func (m *Membership) RefusedStreams() uint64 { return m.transport.RefusedStreams() }

// NewMembership starts memberlist. Call Start to join the seeds.
func NewMembership(cfg MembershipConfig) (*Membership, error) {
	if cfg.RejoinInterval <= 0 {
		cfg.RejoinInterval = 30 * time.Second
	}
	m := &Membership{cfg: cfg, log: cfg.Logger, members: make(map[string]Member), stop: make(chan struct{}),
		dirty: make(chan struct{}, 1), rejoinNow: make(chan struct{}, 1),
		verified: make(map[string]string), verifying: make(map[string]string)}
	m.stopCtx, m.cancel = context.WithCancel(context.Background())
	if cfg.PeersFile != "" {
		saved, err := readPeersFile(cfg.PeersFile)
		if err != nil {
			// Only a hint: the seeds and the Raft configuration still lead to the cluster.
			cfg.Logger.Warn("ignoring the saved gossip peers", "file", cfg.PeersFile, "err", err)
		}
		m.saved = saved
	}
	advertise := cfg.AdvertiseAddr
	if advertise == "" {
		advertise = cfg.BindAddr
	}
	tr, err := NewGossipTransport(cfg.Network, cfg.BindAddr, advertise, cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("gossip transport: %w", err)
	}
	m.transport = tr
	keyring, fromFile, err := openKeyring(cfg.KeyringFile, cfg.SecretKey)
	if err != nil {
		tr.Shutdown()
		return nil, err
	}
	if fromFile {
		cfg.Logger.Info("gossip keyring loaded", "file", cfg.KeyringFile, "keys", len(keyring.ring.GetKeys()))
	}
	m.keyring = keyring
	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.NodeID
	mc.Transport = tr
	mc.Delegate = metaDelegate{m}
	mc.Events = eventDelegate{m}
	mc.Ping = pingDelegate{m}
	mc.Keyring = keyring.ring
	mc.Logger = newStdLogger(cfg.Logger.With("component", "memberlist"), &m.badPackets)
	t := cfg.Timings
	setIf(&mc.ProbeInterval, t.ProbeInterval)
	setIf(&mc.ProbeTimeout, t.ProbeTimeout)
	setIf(&mc.GossipInterval, t.GossipInterval)
	setIf(&mc.PushPullInterval, t.PushPullInterval)
	setIf(&mc.GossipToTheDeadTime, t.GossipToTheDeadTime)
	if t.SuspicionMult > 0 {
		mc.SuspicionMult = t.SuspicionMult
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		tr.Shutdown()
		return nil, fmt.Errorf("start memberlist: %w", err)
	}
	m.ml = ml
	// Read once, now: LocalNode returns memberlist's live record, which UpdateNode rewrites without
	// a lock callers could take.
	m.localAddr = ml.LocalNode().Address()
	return m, nil
}

func setIf(dst *time.Duration, v time.Duration) {
	if v > 0 {
		*dst = v
	}
}

// Start joins every address it knows (failures are logged; the re-join loop keeps trying) and
// starts the periodic re-join that heals long partitions (memberlist forgets dead nodes after
// GossipToTheDeadTime and never re-contacts them by itself). The addresses are the seeds, the
// peers saved in PeersFile and KnownPeers. While some of them are not alive members the re-join
// runs fast (1 s, doubling up to RejoinInterval), so a node whose peers were not up yet when it
// started finds them within a second of their start instead of one RejoinInterval later.
func (m *Membership) Start() {
	pending := m.rejoin()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		wait := m.cfg.RejoinInterval
		if pending {
			wait = min(time.Second, m.cfg.RejoinInterval)
		}
		t := time.NewTimer(wait)
		defer t.Stop()
		for {
			woken := false
			select {
			case <-m.stop:
				return
			case <-t.C:
			case <-m.rejoinNow:
				woken = true
				t.Stop()
			}
			switch {
			case !m.rejoin():
				wait = m.cfg.RejoinInterval
			case woken:
				// A peer is reachable again: back to the fast pace until every known one is in.
				wait = min(time.Second, m.cfg.RejoinInterval)
			default:
				wait = min(2*wait, m.cfg.RejoinInterval)
			}
			t.Reset(wait)
		}
	}()
	if m.cfg.PeersFile != "" {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.savePeersLoop()
		}()
	}
}

// joinTargets are the known gossip addresses that are neither this node nor an alive member.
func (m *Membership) joinTargets() []string {
	alive := make(map[string]bool)
	known := make(map[string]bool)
	for _, mem := range m.Members() {
		known[mem.Meta.ID] = true
		if mem.State == StateAlive {
			alive[mem.GossipAddr] = true
		}
	}
	self := m.LocalGossipAddr()
	var targets []string
	add := func(addr string) {
		if addr != "" && addr != self && !alive[addr] && !slices.Contains(targets, addr) {
			targets = append(targets, addr)
		}
	}
	for _, s := range m.cfg.Seeds {
		add(s)
	}
	m.mu.Lock()
	for id, addr := range m.saved {
		if !known[id] && id != m.cfg.NodeID {
			add(addr)
		}
	}
	m.mu.Unlock()
	if m.cfg.KnownPeers != nil {
		for _, addr := range m.cfg.KnownPeers() {
			add(addr)
		}
	}
	return targets
}

// rejoin contacts the known addresses that are not alive members now, and reports whether some
// of them stay unreached.
func (m *Membership) rejoin() bool {
	targets := m.joinTargets()
	if len(targets) == 0 {
		return false
	}
	n, err := m.ml.Join(targets)
	if err != nil {
		m.log.Debug("gossip join incomplete", "joined", n, "targets", targets, "err", err)
	}
	return len(m.joinTargets()) > 0
}

// GossipAddrOf is the last gossip address known for member id: from the live view, else from the
// saved peers.
func (m *Membership) GossipAddrOf(id string) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if mem, ok := m.members[id]; ok {
		return mem.GossipAddr, true
	}
	addr, ok := m.saved[id]
	return addr, ok
}

// Join contacts extra gossip addresses now.
func (m *Membership) Join(addrs []string) (int, error) { return m.ml.Join(addrs) }

// Members returns every member known, including failed and departed ones, sorted by id.
func (m *Membership) Members() []Member {
	m.mu.Lock()
	out := make([]Member, 0, len(m.members))
	for _, mem := range m.members {
		out = append(out, mem)
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int {
		if a.Meta.ID < b.Meta.ID {
			return -1
		}
		if a.Meta.ID > b.Meta.ID {
			return 1
		}
		return 0
	})
	return out
}

// Member returns the member with id.
func (m *Membership) Member(id string) (Member, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mem, ok := m.members[id]
	return mem, ok
}

// Subscribe returns a channel that receives a (coalesced) signal after every membership change.
func (m *Membership) Subscribe() <-chan struct{} {
	ch := make(chan struct{}, 1)
	m.mu.Lock()
	m.subscribers = append(m.subscribers, ch)
	m.mu.Unlock()
	return ch
}

// Unsubscribe stops the signals of a channel Subscribe returned (a leader task's, at the end of its
// term).
func (m *Membership) Unsubscribe(ch <-chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.subscribers = slices.DeleteFunc(m.subscribers, func(c chan struct{}) bool { return c == ch })
}

// UpdateMeta re-announces this node's metadata (after Meta's answer changed).
func (m *Membership) UpdateMeta(timeout time.Duration) error { return m.ml.UpdateNode(timeout) }

// Leave announces a graceful departure.
func (m *Membership) Leave(timeout time.Duration) error { return m.ml.Leave(timeout) }

// Shutdown stops memberlist and the re-join loop.
func (m *Membership) Shutdown() error {
	select {
	case <-m.stop:
		return nil
	default:
	}
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	m.cancel()
	close(m.stop)
	m.wg.Wait()
	return m.ml.Shutdown()
}

// LocalGossipAddr is the address other nodes reach this node's gossip on.
func (m *Membership) LocalGossipAddr() string { return m.localAddr }

func (m *Membership) update(n *memberlist.Node, departed bool) {
	var meta NodeMeta
	if err := json.Unmarshal(n.Meta, &meta); err != nil || meta.ID != n.Name {
		m.log.Warn("ignoring member with unreadable metadata", "member", n.Name)
		return
	}
	state := StateAlive
	switch {
	case departed && meta.Leaving:
		state = StateLeft
	case departed:
		state = StateDead
	}
	m.mu.Lock()
	since := time.Now()
	if prev, ok := m.members[n.Name]; ok && prev.State == state {
		since = prev.Since
	}
	if departed {
		m.forgetClock(n.Name)
	}
	mem := Member{Meta: meta, State: state, GossipAddr: n.Address(), Since: since}
	mem.Verified = m.verifiedLocked(mem)
	m.members[n.Name] = mem
	m.startVerifyLocked(mem)
	m.mu.Unlock()
	m.changed()
}

// changed tells the peers file and the subscribers that a member changed.
func (m *Membership) changed() {
	select {
	case m.dirty <- struct{}{}:
	default:
	}
	m.mu.Lock()
	subs := slices.Clone(m.subscribers)
	m.mu.Unlock()
	for _, ch := range subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// SetVerifier makes membership prove every other member's identity before calling it Verified:
// verify must reach clusterAddr over the authenticated cluster port and return nil only if the
// node there is id. Without a verifier (tests of gossip alone) every member counts as verified.
// Call it before Start.
func (m *Membership) SetVerifier(verify func(ctx context.Context, id, clusterAddr string) error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.verify = verify
	for id, mem := range m.members {
		mem.Verified = m.verifiedLocked(mem)
		m.members[id] = mem
		m.startVerifyLocked(mem)
	}
}

// startVerifyLocked starts proving mem's identity unless it is proven, not alive, already being
// proven at its address, or membership is shutting down.
func (m *Membership) startVerifyLocked(mem Member) {
	if mem.Verified || mem.State != StateAlive || m.closed || m.verifying[mem.Meta.ID] == mem.Meta.ClusterAddr {
		return
	}
	m.verifying[mem.Meta.ID] = mem.Meta.ClusterAddr
	m.wg.Add(1)
	go m.verifyMember(mem.Meta.ID, mem.Meta.ClusterAddr, m.verify)
}

// verifiedLocked reports whether mem's identity at its cluster address is proven (or need not
// be: this node itself, or no verifier).
func (m *Membership) verifiedLocked(mem Member) bool {
	return m.verify == nil || mem.Meta.ID == m.cfg.NodeID || m.verified[mem.Meta.ID] == mem.Meta.ClusterAddr
}

// Verification retries: at once, then doubling up to maxVerifyWait while the member stays alive at
// that address.
const (
	firstVerifyWait = 500 * time.Millisecond
	maxVerifyWait   = 30 * time.Second
	verifyTimeout   = 5 * time.Second
)

// verifyMember proves member id at addr, retrying while gossip shows it alive there, and marks it
// Verified. It runs as one goroutine per (id, addr) that is not proven yet.
func (m *Membership) verifyMember(id, addr string, verify func(ctx context.Context, id, clusterAddr string) error) {
	defer m.wg.Done()
	defer func() {
		m.mu.Lock()
		if m.verifying[id] == addr {
			delete(m.verifying, id)
		}
		m.mu.Unlock()
	}()
	wait := firstVerifyWait
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(m.stopCtx, verifyTimeout)
		err := verify(ctx, id, addr)
		cancel()
		m.mu.Lock()
		mem, ok := m.members[id]
		current := ok && mem.Meta.ClusterAddr == addr
		if err == nil && current {
			m.verified[id] = addr
			mem.Verified = true
			m.members[id] = mem
		}
		alive := current && mem.State == StateAlive
		m.mu.Unlock()
		switch {
		case err == nil:
			if current {
				m.log.Info("member verified over the cluster port", "member", id, "addr", addr)
				m.changed()
			}
			return
		case !alive:
			return // gone, or announced elsewhere: update started a check for the new address
		}
		if attempt == 0 || wait == maxVerifyWait {
			m.log.Warn("member not verified: it stays out of raft and shard placement until it is", "member", id, "addr", addr, "err", err)
		}
		select {
		case <-m.stop:
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, maxVerifyWait)
	}
}

type eventDelegate struct{ m *Membership }

func (d eventDelegate) NotifyJoin(n *memberlist.Node)   { d.m.update(n, false) }
func (d eventDelegate) NotifyUpdate(n *memberlist.Node) { d.m.update(n, false) }
func (d eventDelegate) NotifyLeave(n *memberlist.Node)  { d.m.update(n, true) }

type metaDelegate struct{ m *Membership }

func (d metaDelegate) NodeMeta(limit int) []byte {
	b, err := json.Marshal(d.m.cfg.Meta())
	if err != nil || len(b) > limit {
		// A node that cannot describe itself must not join half-described; this only happens with
		// absurdly long addresses or zone names, which config validation rejects.
		panic(fmt.Sprintf("node metadata does not fit memberlist's %d bytes (%d): %v", limit, len(b), err))
	}
	return b
}
func (metaDelegate) NotifyMsg([]byte)                           {}
func (metaDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (metaDelegate) LocalState(join bool) []byte                { return nil }
func (metaDelegate) MergeRemoteState(buf []byte, join bool)     {}

// waitSignal waits for a membership signal, a tick, or the end of ctx.
func waitSignal(ctx context.Context, sig <-chan struct{}, tick <-chan time.Time) bool {
	select {
	case <-ctx.Done():
		return false
	case <-sig:
	case <-tick:
	}
	return true
}
