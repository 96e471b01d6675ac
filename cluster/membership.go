package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
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
}

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
	Seeds          []string
	RejoinInterval time.Duration
	Timings        GossipTimings
	// Meta returns this node's current metadata; it is called on every gossip of our state.
	Meta   func() NodeMeta
	Logger *slog.Logger
}

// Membership runs memberlist for one node and keeps a view of every member, failed ones included.
type Membership struct {
	cfg       MembershipConfig
	ml        *memberlist.Memberlist
	keyring   *localKeyring // keyring.go
	transport *GossipTransport
	localAddr string
	log       *slog.Logger

	mu          sync.Mutex
	members     map[string]Member
	subscribers []chan struct{}

	stop chan struct{}
	wg   sync.WaitGroup
}

// NewMembership starts memberlist. Call Start to join the seeds.
func NewMembership(cfg MembershipConfig) (*Membership, error) {
	if cfg.RejoinInterval <= 0 {
		cfg.RejoinInterval = 30 * time.Second
	}
	m := &Membership{cfg: cfg, log: cfg.Logger, members: make(map[string]Member), stop: make(chan struct{})}
	advertise := cfg.AdvertiseAddr
	if advertise == "" {
		advertise = cfg.BindAddr
	}
	tr, err := NewGossipTransport(cfg.Network, cfg.BindAddr, advertise, cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("gossip transport on %s: %w", cfg.BindAddr, err)
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
	mc.Keyring = keyring.ring
	mc.Logger = newStdLogger(cfg.Logger.With("component", "memberlist"))
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

// Start joins the seeds (failures are logged; the re-join loop keeps trying) and starts the
// periodic re-join that heals long partitions (memberlist forgets dead nodes after
// GossipToTheDeadTime and never re-contacts them by itself).
func (m *Membership) Start() {
	m.rejoin()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(m.cfg.RejoinInterval)
		defer t.Stop()
		for {
			select {
			case <-m.stop:
				return
			case <-t.C:
				m.rejoin()
			}
		}
	}()
}

// rejoin contacts the seeds that are not alive members now.
func (m *Membership) rejoin() {
	alive := make(map[string]bool)
	for _, mem := range m.Members() {
		if mem.State == StateAlive {
			alive[mem.GossipAddr] = true
		}
	}
	var targets []string
	for _, s := range m.cfg.Seeds {
		if !alive[s] && s != m.LocalGossipAddr() {
			targets = append(targets, s)
		}
	}
	if len(targets) == 0 {
		return
	}
	if n, err := m.ml.Join(targets); err != nil {
		m.log.Debug("gossip join incomplete", "joined", n, "seeds", targets, "err", err)
	}
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
	m.members[n.Name] = Member{Meta: meta, State: state, GossipAddr: n.Address(), Since: since}
	subs := slices.Clone(m.subscribers)
	m.mu.Unlock()
	for _, ch := range subs {
		select {
		case ch <- struct{}{}:
		default:
		}
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
