package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	autopilot "github.com/hashicorp/raft-autopilot"
)

// AutopilotConfig configures the leader's autopilot. Zero durations are not defaulted here: node
// owns the defaults (Consul's) and validates them.
type AutopilotConfig struct {
	Self    string
	Node    *RaftNode
	Members *Membership
	// Stats fetches other servers' Raft progress (RPCClient.RaftStats).
	Stats RaftStatsFetcher
	// CleanupDeadServers lets autopilot remove servers that have been dead for
	// DeadServerCleanupAfter. It never removes a majority of the voters at once, never leaves fewer
	// than MinQuorum voters, and never touches members that left (the Reconciler removes those).
	CleanupDeadServers     bool
	DeadServerCleanupAfter time.Duration
	// LastContactThreshold, MaxTrailingLogs and ServerStabilizationTime judge a server healthy.
	LastContactThreshold    time.Duration
	MaxTrailingLogs         uint64
	ServerStabilizationTime time.Duration
	MinQuorum               int
	// Interval is how often server health is refreshed and dead servers are looked for
	// (Consul: 2 s).
	Interval time.Duration
	Logger   *slog.Logger
}

// RaftStatsFetcher asks another node for its Raft progress; *RPCClient implements it.
type RaftStatsFetcher interface {
	RaftStats(ctx context.Context, addr string) (autopilot.ServerStats, error)
}

// memberLister is the part of Membership autopilot reads.
type memberLister interface {
	Members() []Member
}

// AutopilotHealth is the leader's last view of the servers' health.
type AutopilotHealth struct {
	// Healthy is true when every server in the Raft configuration is alive, in contact and caught
	// up.
	Healthy bool
	// FailureTolerance is how many more voters may fail without losing quorum.
	FailureTolerance int
	Voters           []string
	Unhealthy        []string
	// Followers is each other server's replication progress, by id.
	Followers []FollowerProgress
	// CleanupPasses counts the dead-server cleanup passes of this leadership term, so an operator
	// (or a test) can see that cleanup ran and chose to keep a dead server.
	CleanupPasses uint64
}

// FollowerProgress is how far one server trails the leader, as autopilot last saw it.
type FollowerProgress struct {
	ID string
	// TrailingLogs is the leader's last log index minus the server's.
	TrailingLogs uint64
	// LastContact is the time since the server last heard from the leader; negative when unknown
	// (never, or its stats could not be fetched).
	LastContact time.Duration
	Healthy     bool
}

// Autopilot runs hashicorp/raft-autopilot on the Raft leader: it removes servers that have been
// dead for a while without risking quorum, and keeps a health view. It complements the
// Reconciler, which stays the only one to add, promote and remove departed or decommissioned
// servers, so the two never act on the same server:
//   - autopilot's promoter never promotes or demotes: the Reconciler adds alive members as voters
//     up to MaxVoters and promotes a non-voter when a voter slot frees up (two promoters could
//     overshoot MaxVoters between them);
//   - autopilot removes failed servers only; it never removes a member that left (the Reconciler's
//     job) nor a server it does not know (every Raft server is reported to it, so none are stale);
//   - a dead server that comes back is alive again and the Reconciler re-adds it.
type Autopilot struct {
	ap       *autopilot.Autopilot
	raft     autopilot.Raft
	d        *autopilotDelegate
	interval time.Duration
}

// NewAutopilot prepares autopilot; Run starts it.
func NewAutopilot(cfg AutopilotConfig) *Autopilot {
	return newAutopilot(cfg, cfg.Node.Raft, cfg.Members)
}

func newAutopilot(cfg AutopilotConfig, r autopilot.Raft, members memberLister) *Autopilot {
	if cfg.Interval <= 0 {
		cfg.Interval = autopilot.DefaultUpdateInterval
	}
	d := &autopilotDelegate{
		self:    raft.ServerID(cfg.Self),
		raft:    r,
		members: members,
		stats:   cfg.Stats,
		conf: autopilot.Config{
			CleanupDeadServers:      cfg.CleanupDeadServers,
			LastContactThreshold:    cfg.LastContactThreshold,
			MaxTrailingLogs:         cfg.MaxTrailingLogs,
			MinQuorum:               uint(max(cfg.MinQuorum, 1)),
			ServerStabilizationTime: cfg.ServerStabilizationTime,
		},
		cleanupAfter: cfg.DeadServerCleanupAfter,
		now:          time.Now,
		log:          cfg.Logger,
		missingSince: make(map[raft.ServerID]time.Time),
	}
	ap := autopilot.New(r, d,
		autopilot.WithLogger(NewHCLogger(cfg.Logger, "autopilot")),
		autopilot.WithPromoter(&cleanupPromoter{d: d}),
		autopilot.WithUpdateInterval(cfg.Interval),
		// Promotions are not ours to make (cleanupPromoter), so the reconcile tick only repeats
		// the cleanup that step already asks for every interval.
		autopilot.WithReconcileInterval(5*cfg.Interval),
	)
	return &Autopilot{ap: ap, raft: r, d: d, interval: cfg.Interval}
}

// Run keeps autopilot running while this node leads and stopped otherwise, as the library asks
// (only one instance may act in a cluster), until ctx ends; then it stops it and waits.
func (a *Autopilot) Run(ctx context.Context, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(a.interval)
		defer tick.Stop()
		for {
			a.step(ctx)
			select {
			case <-ctx.Done():
				<-a.ap.Stop()
				a.d.endTerm()
				return
			case <-tick.C:
			}
		}
	}()
}

func (a *Autopilot) step(ctx context.Context) {
	status, _ := a.ap.IsRunning()
	switch leader := a.raft.State() == raft.Leader; {
	case leader && status == autopilot.NotRunning:
		a.d.endTerm() // a new term starts from a clean slate
		a.ap.Start(ctx)
	case leader:
		// Dead servers become removable when their time is up, not on a membership event, so
		// look every interval instead of only on autopilot's slower reconcile tick.
		a.ap.RemoveDeadServers()
	case status != autopilot.NotRunning:
		<-a.ap.Stop()
		a.d.endTerm()
	}
}

// Health returns the leader's last health view; false on followers and before the first update.
func (a *Autopilot) Health() (AutopilotHealth, bool) {
	a.d.mu.Lock()
	defer a.d.mu.Unlock()
	h := a.d.health
	h.Voters = slices.Clone(h.Voters)
	h.Unhealthy = slices.Clone(h.Unhealthy)
	h.Followers = slices.Clone(h.Followers)
	h.CleanupPasses = a.d.passes
	return h, a.d.hasHealth
}

// LocalRaftStats reports r's own progress in autopilot's terms, for RPCServer.ServeRaftStats.
func LocalRaftStats(r *raft.Raft) func() (autopilot.ServerStats, error) {
	return func() (autopilot.ServerStats, error) { return parseRaftStats(r.Stats()) }
}

// parseRaftStats reads raft.Stats(): last_contact is "0" on the leader, "never" before any
// contact, else a duration.
func parseRaftStats(stats map[string]string) (autopilot.ServerStats, error) {
	var out autopilot.ServerStats
	if lc := stats["last_contact"]; lc == "never" {
		out.LastContact = -1
	} else {
		d, err := time.ParseDuration(lc)
		if err != nil {
			return out, fmt.Errorf("raft stats: last_contact %q: %w", lc, err)
		}
		out.LastContact = d
	}
	var err error
	if out.LastTerm, err = strconv.ParseUint(stats["last_log_term"], 10, 64); err != nil {
		return out, fmt.Errorf("raft stats: last_log_term: %w", err)
	}
	if out.LastIndex, err = strconv.ParseUint(stats["last_log_index"], 10, 64); err != nil {
		return out, fmt.Errorf("raft stats: last_log_index: %w", err)
	}
	return out, nil
}

// autopilotDelegate is autopilot's ApplicationIntegration over our membership and Raft.
type autopilotDelegate struct {
	self         raft.ServerID
	raft         autopilot.Raft
	members      memberLister
	stats        RaftStatsFetcher
	conf         autopilot.Config
	cleanupAfter time.Duration
	now          func() time.Time
	log          *slog.Logger

	mu sync.Mutex
	// downSince is when each server autopilot was last told about stopped being alive; servers
	// gossip does not know take missingSince, kept across calls.
	downSince    map[raft.ServerID]time.Time
	missingSince map[raft.ServerID]time.Time
	health       AutopilotHealth
	hasHealth    bool
	passes       uint64
}

// AutopilotConfig is autopilot's configuration; it never changes at run time.
func (d *autopilotDelegate) AutopilotConfig() *autopilot.Config {
	c := d.conf
	return &c
}

// KnownServers reports every member gossip knows plus every Raft server it does not. The latter
// count as failed since the first time they were seen missing, rather than as "stale" servers the
// library would remove at once: a freshly elected leader may simply not have heard of a peer yet.
// Only current voters are reported as potential voters, so autopilot's "never remove a majority"
// and MinQuorum rules count Raft's actual voters.
func (d *autopilotDelegate) KnownServers() map[raft.ServerID]*autopilot.Server {
	var servers []raft.Server
	if f := d.raft.GetConfiguration(); f.Error() == nil {
		servers = f.Configuration().Servers
	}
	voter := make(map[raft.ServerID]bool, len(servers))
	for _, s := range servers {
		voter[s.ID] = s.Suffrage == raft.Voter
	}
	out := make(map[raft.ServerID]*autopilot.Server)
	down := make(map[raft.ServerID]time.Time)
	for _, m := range d.members.Members() {
		id := raft.ServerID(m.Meta.ID)
		srv := &autopilot.Server{
			ID: id, Name: m.Meta.ID, Address: raft.ServerAddress(m.Meta.ClusterAddr), NodeStatus: nodeStatus(m.State),
		}
		if voter[id] {
			srv.NodeType = autopilot.NodeVoter
		}
		if m.State != StateAlive {
			down[id] = m.Since
		}
		out[id] = srv
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	missing := make(map[raft.ServerID]time.Time)
	for _, s := range servers {
		if _, known := out[s.ID]; known {
			continue
		}
		since, ok := d.missingSince[s.ID]
		if !ok {
			since = d.now()
		}
		missing[s.ID], down[s.ID] = since, since
		srv := &autopilot.Server{ID: s.ID, Name: string(s.ID), Address: s.Address, NodeStatus: autopilot.NodeFailed}
		if voter[s.ID] {
			srv.NodeType = autopilot.NodeVoter
		}
		out[s.ID] = srv
	}
	d.missingSince, d.downSince = missing, down
	return out
}

func nodeStatus(state string) autopilot.NodeStatus {
	switch state {
	case StateAlive:
		return autopilot.NodeAlive
	case StateDead:
		return autopilot.NodeFailed
	case StateLeft:
		return autopilot.NodeLeft
	}
	return autopilot.NodeUnknown
}

// FetchServerStats reads this node's progress locally and asks the other alive servers over RPC,
// in parallel, within ctx (half of autopilot's update interval). A server that does not answer
// gets no stats and so counts as unhealthy. Failed servers are not asked: they are unhealthy
// anyway, and dialling them would only wait out the deadline.
func (d *autopilotDelegate) FetchServerStats(ctx context.Context, servers map[raft.ServerID]*autopilot.Server) map[raft.ServerID]*autopilot.ServerStats {
	out := make(map[raft.ServerID]*autopilot.ServerStats, len(servers))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for id, srv := range servers {
		if id == d.self {
			if st, err := parseRaftStats(d.raft.Stats()); err == nil {
				mu.Lock()
				out[id] = &st
				mu.Unlock()
			}
			continue
		}
		if srv.NodeStatus != autopilot.NodeAlive {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := d.stats.RaftStats(ctx, string(srv.Address))
			if err != nil {
				d.log.Debug("raft stats unavailable", "server", id, "err", err)
				return
			}
			mu.Lock()
			out[id] = &st
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// NotifyState keeps a summary of the latest state for Health.
func (d *autopilotDelegate) NotifyState(s *autopilot.State) {
	h := AutopilotHealth{Healthy: s.Healthy, FailureTolerance: s.FailureTolerance}
	for _, id := range s.Voters {
		h.Voters = append(h.Voters, string(id))
	}
	var leaderIndex uint64
	if l := s.Servers[s.Leader]; l != nil {
		leaderIndex = l.Stats.LastIndex
	}
	for _, id := range slices.Sorted(maps.Keys(s.Servers)) {
		srv := s.Servers[id]
		if !srv.Health.Healthy {
			h.Unhealthy = append(h.Unhealthy, string(id))
		}
		if id == s.Leader {
			continue
		}
		fp := FollowerProgress{ID: string(id), LastContact: srv.Stats.LastContact, Healthy: srv.Health.Healthy}
		if leaderIndex > srv.Stats.LastIndex {
			fp.TrailingLogs = leaderIndex - srv.Stats.LastIndex
		}
		h.Followers = append(h.Followers, fp)
	}
	d.mu.Lock()
	d.health, d.hasHealth = h, true
	d.mu.Unlock()
}

// RemoveFailedServer removes a server autopilot judged safe to remove. It runs on autopilot's own
// goroutine and waits for the configuration change, which commits within a heartbeat or fails
// once leadership is lost, so no extra goroutine is needed.
func (d *autopilotDelegate) RemoveFailedServer(srv *autopilot.Server) {
	if err := d.raft.RemoveServer(srv.ID, 0, 0).Error(); err != nil {
		d.log.Warn("removing dead raft server failed", "server", srv.ID, "err", err)
		return
	}
	d.log.Info("removed dead raft server", "server", srv.ID, "dead_for", d.now().Sub(d.downAt(srv.ID)).Round(time.Second))
}

func (d *autopilotDelegate) downAt(id raft.ServerID) time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.downSince[id]
}

// removable keeps the failed servers that have been down for at least cleanupAfter.
func (d *autopilotDelegate) removable(servers []*autopilot.Server) []*autopilot.Server {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*autopilot.Server
	for _, s := range servers {
		since, down := d.downSince[s.ID]
		if s.NodeStatus == autopilot.NodeFailed && down && d.now().Sub(since) >= d.cleanupAfter {
			out = append(out, s)
		}
	}
	return out
}

// endTerm forgets what a leadership term learnt: health, counters, and since when servers were
// missing (another leader may have heard from them since).
func (d *autopilotDelegate) endTerm() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.health, d.hasHealth, d.passes = AutopilotHealth{}, false, 0
	d.missingSince = make(map[raft.ServerID]time.Time)
}

// cleanupPromoter is autopilot's StablePromoter that leaves suffrage to the Reconciler and lets
// only servers dead for the cleanup delay be removed.
type cleanupPromoter struct {
	autopilot.StablePromoter
	d *autopilotDelegate
}

// CalculatePromotionsAndDemotions changes nothing: the Reconciler owns suffrage.
func (*cleanupPromoter) CalculatePromotionsAndDemotions(*autopilot.Config, *autopilot.State) autopilot.RaftChanges {
	return autopilot.RaftChanges{}
}

// FilterFailedServerRemovals keeps failed servers dead for the cleanup delay, and no stale ones
// (KnownServers reports every Raft server, so there are none to begin with).
func (p *cleanupPromoter) FilterFailedServerRemovals(_ *autopilot.Config, _ *autopilot.State, failed *autopilot.FailedServers) *autopilot.FailedServers {
	p.d.mu.Lock()
	p.d.passes++
	p.d.mu.Unlock()
	return &autopilot.FailedServers{
		FailedVoters:    p.d.removable(failed.FailedVoters),
		FailedNonVoters: p.d.removable(failed.FailedNonVoters),
	}
}
