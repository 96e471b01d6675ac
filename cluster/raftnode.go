package cluster

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// RaftTimings are Raft's clocks. Zero values take hashicorp/raft's defaults.
type RaftTimings struct {
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	// Multiplier scales the heartbeat, election and leader-lease timeouts together (after the
	// defaults are filled in), as Consul's raft_multiplier does: a loaded or slow machine needs
	// longer ones, or a leader that is merely starved of CPU for a moment steps down. 0 or 1: as
	// given. CommitTimeout is a batching delay, not a failure detector, and is not scaled.
	Multiplier int
}

// scale applies the multiplier to conf's failure-detection timeouts.
func (t RaftTimings) scale(conf *raft.Config) {
	if t.Multiplier <= 1 {
		return
	}
	m := time.Duration(t.Multiplier)
	conf.HeartbeatTimeout *= m
	conf.ElectionTimeout *= m
	conf.LeaderLeaseTimeout *= m
}

// RaftOptions configures one node's Raft.
type RaftOptions struct {
	NodeID  string
	DataDir string // raft.db and snapshots live in DataDir
	Layer   *RaftLayer
	// FSM keeps its state on disk and knows the last index it applied (fsm.FSM): a restart that
	// finds the store at or past the newest snapshot skips restoring it and replays only the log.
	FSM     StateMachine
	Timings RaftTimings
	// SnapshotThreshold and TrailingLogs: zero takes the defaults (8192 and 10240).
	SnapshotThreshold uint64
	TrailingLogs      uint64
	SnapshotInterval  time.Duration
	// Recover adopts DataDir/raft/peers.json as the Raft configuration before starting
	// (recover.go): the way back from a permanently lost quorum.
	Recover bool
	// LogStallTimeout is how long a Raft log write may stay in flight before this node stops
	// sending heartbeats and replication, so a leader whose disk hangs gives up the lead
	// (raftTransport); 0 means the larger of DefaultLogStallTimeout and 2.5 heartbeat timeouts.
	LogStallTimeout time.Duration
	Logger          *slog.Logger
}

// StateMachine is the FSM Raft drives: batching, and durable up to AppliedIndex.
type StateMachine interface {
	raft.BatchingFSM
	AppliedIndex() uint64
}

// RaftNode is a started Raft with the stores it owns.
type RaftNode struct {
	Raft      *raft.Raft
	Transport *raft.NetworkTransport
	transport *raftTransport // what Raft sends through: Transport with stalled-log fencing
	store     *trackedStore
	// HadState reports whether the data dir held Raft state when the node started.
	HadState bool
}

// StartRaft opens the stores (bbolt with fsync on; NoFreelistSync is safe), a log cache and a file
// snapshot store, and starts Raft on the given stream layer.
func StartRaft(opts RaftOptions) (*RaftNode, error) {
	dir := filepath.Join(opts.DataDir, "raft")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("raft dir: %w", err)
	}
	bolt, err := raftboltdb.New(raftboltdb.Options{
		Path:        filepath.Join(dir, "raft.db"),
		BoltOptions: &bbolt.Options{Timeout: time.Second, NoFreelistSync: true},
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open raft store %s: locked by another process (is another cairn agent using this data dir?)", filepath.Join(dir, "raft.db"))
	}
	if err != nil {
		return nil, fmt.Errorf("open raft store: %w", err)
	}
	store := &trackedStore{BoltStore: bolt, logger: opts.Logger.With("component", "raft-log")}
	cache, err := raft.NewLogCache(512, store)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("raft log cache: %w", err)
	}
	hlog := NewHCLogger(opts.Logger, "raft")
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, hlog)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("raft snapshot store: %w", err)
	}
	hadState, err := raft.HasExistingState(cache, store, snaps)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("inspect raft state: %w", err)
	}
	transport := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  opts.Layer,
		MaxPool: 3,
		Timeout: 10 * time.Second,
		Logger:  hlog,
	})
	conf := raft.DefaultConfig()
	conf.LocalID = raft.ServerID(opts.NodeID)
	conf.Logger = hlog
	conf.BatchApplyCh = true
	t := opts.Timings
	setIf(&conf.HeartbeatTimeout, t.HeartbeatTimeout)
	setIf(&conf.ElectionTimeout, t.ElectionTimeout)
	setIf(&conf.LeaderLeaseTimeout, t.LeaderLeaseTimeout)
	setIf(&conf.CommitTimeout, t.CommitTimeout)
	t.scale(conf)
	setIf(&conf.SnapshotInterval, opts.SnapshotInterval)
	if opts.SnapshotThreshold > 0 {
		conf.SnapshotThreshold = opts.SnapshotThreshold
	}
	if opts.TrailingLogs > 0 {
		conf.TrailingLogs = opts.TrailingLogs
	}
	if err := raft.ValidateConfig(conf); err != nil {
		transport.Close()
		store.Close()
		return nil, fmt.Errorf("raft config: %w", err)
	}
	if opts.Recover {
		configuration, err := recoverCluster(conf, dir, hadState, cache, store, snaps, transport)
		if err != nil {
			transport.Close()
			store.Close()
			return nil, err
		}
		opts.Logger.Warn("raft configuration replaced from peers.json; every local log entry now counts as committed",
			"servers", len(configuration.Servers))
	}
	if err := skipRestoreIfCurrent(conf, opts.FSM, store, snaps, opts.Logger); err != nil {
		transport.Close()
		store.Close()
		return nil, err
	}
	stallAfter := opts.LogStallTimeout
	if stallAfter <= 0 {
		stallAfter = defaultLogStallTimeout(conf.HeartbeatTimeout)
	}
	fenced := &raftTransport{NetworkTransport: transport, log: store, stallAfter: stallAfter, now: time.Now}
	r, err := raft.NewRaft(conf, opts.FSM, cache, store, snaps, fenced)
	if err != nil {
		transport.Close()
		store.Close()
		return nil, fmt.Errorf("start raft: %w", err)
	}
	return &RaftNode{Raft: r, Transport: transport, transport: fenced, store: store, HadState: hadState}, nil
}

// skipRestoreIfCurrent sets NoSnapshotRestoreOnStart when the FSM's store already holds the
// newest snapshot's state (its applied index is at or past the snapshot's): raft then replays the
// log after the snapshot, and the FSM skips what it applied before. A store behind the snapshot
// (missing, emptied, or older because the log was compacted past it) gets the snapshot restored.
// A store ahead of every index raft knows belongs to another log and is refused.
func skipRestoreIfCurrent(conf *raft.Config, f StateMachine, logs raft.LogStore, snaps raft.SnapshotStore, logger *slog.Logger) error {
	list, err := snaps.List()
	if err != nil {
		return fmt.Errorf("list raft snapshots: %w", err)
	}
	var snapIndex uint64
	if len(list) > 0 {
		snapIndex = list[0].Index // newest first
	}
	last, err := logs.LastIndex()
	if err != nil {
		return fmt.Errorf("read raft log: %w", err)
	}
	applied := f.AppliedIndex()
	if applied > max(last, snapIndex) {
		return fmt.Errorf("the state store has applied index %d, past everything the raft dir holds (last log index %d, snapshot %d): the data dir mixes two histories; move the state store aside to rebuild it",
			applied, last, snapIndex)
	}
	conf.NoSnapshotRestoreOnStart = applied >= snapIndex
	if len(list) > 0 {
		logger.Info("raft start", "state_applied_index", applied, "snapshot_index", snapIndex,
			"restore_snapshot", !conf.NoSnapshotRestoreOnStart)
	}
	return nil
}

// raftTransport is the network transport without pipelined replication, and with a leader's
// heartbeats withheld while its own log cannot be written.
//
// No pipeline: hashicorp/raft's pipeline can deadlock (v1.8.0, MaxRPCsInFlight 2, so its channels
// are unbuffered): when a follower's answer ends pipelineDecode (a newer term, or a failed
// append), the send loop may pick one more send, which parks on the pipeline's in-progress channel
// while the decoder parks on the done channel nobody reads; pipeline.Close is deferred in that very
// loop. The leader then never replicates to that follower again, and Raft's Shutdown waits forever
// (seen here as an agent that hung on SIGTERM after losing leadership; Grafana Pyroscope hit the
// same and disabled the pipeline too, grafana/pyroscope#5518). Without it, raft sends one
// AppendEntries at a time per follower, batched up to MaxAppendEntries.
//
// Withheld heartbeats: hashicorp/raft sends heartbeats from their own goroutines, apart from the
// leader loop that appends to the log. A leader whose disk hangs (writes that block, not fail)
// therefore stops committing but goes on heartbeating, so its followers never time out and the
// cluster stalls for as long as the disk does (hashicorp/raft#503). While a log write has been in
// flight for stallAfter, every AppendEntries and InstallSnapshot this node would send fails here
// instead: the followers stop hearing from it, elect another leader after their heartbeat
// timeout, and the cluster goes on without it. The stalled node's own Raft stays blocked in its
// write; once the disk returns, it hears of the newer term and follows. Disk latency thus counts
// toward a leader's liveness, as it does in etcd, where the same loop writes and heartbeats.
type raftTransport struct {
	*raft.NetworkTransport
	log        *trackedStore // whose write in flight is timed; it logs the fence's start and end
	stallAfter time.Duration
	now        func() time.Time // time.Now; tests move it

	withheld atomic.Uint64 // RPCs not sent because of a stalled log write
}

// DefaultLogStallTimeout is RaftOptions.LogStallTimeout's least default: a Raft log write that has
// not returned after this long makes the node stop heartbeating as leader, so that another node
// leads.
const DefaultLogStallTimeout = 5 * time.Second

// defaultLogStallTimeout is RaftOptions.LogStallTimeout's default for a heartbeat timeout: the
// larger of DefaultLogStallTimeout and 2.5 heartbeat timeouts, so that an operator who lengthens
// the failure detector (--raft-multiplier) to ride out a slow machine also lets slow writes last
// longer before they cost the lead. At cairn's default multiplier (2 s heartbeat timeout) it is 5 s.
func defaultLogStallTimeout(heartbeatTimeout time.Duration) time.Duration {
	return max(DefaultLogStallTimeout, heartbeatTimeout*5/2)
}

// errLogWriteStalled is what a withheld RPC fails with.
var errLogWriteStalled = errors.New("not sent: this node's raft log write has stalled, so it must not hold leadership")

// AppendEntriesPipeline tells raft to use plain AppendEntries RPCs.
func (*raftTransport) AppendEntriesPipeline(raft.ServerID, raft.ServerAddress) (raft.AppendPipeline, error) {
	return nil, raft.ErrPipelineReplicationNotSupported
}

// AppendEntries sends one AppendEntries RPC (replication or a heartbeat) unless the local log has
// stalled.
func (t *raftTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if err := t.withhold(); err != nil {
		return err
	}
	return t.NetworkTransport.AppendEntries(id, target, args, resp)
}

// InstallSnapshot sends a snapshot unless the local log has stalled (it too renews the leader's
// contact with the follower).
func (t *raftTransport) InstallSnapshot(id raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	if err := t.withhold(); err != nil {
		return err
	}
	return t.NetworkTransport.InstallSnapshot(id, target, args, resp, data)
}

// withhold is errLogWriteStalled while the local log write in flight is older than stallAfter.
func (t *raftTransport) withhold() error {
	stalled, stop := t.log.fence(t.now(), t.stallAfter)
	if !stop {
		return nil
	}
	t.withheld.Add(1)
	return fmt.Errorf("%w (a write has been in flight for %s)", errLogWriteStalled, stalled.Round(time.Millisecond))
}

// WithheldRPCs counts the AppendEntries and InstallSnapshot RPCs this node did not send because
// its Raft log write had stalled.
func (n *RaftNode) WithheldRPCs() uint64 { return n.transport.withheld.Load() }

// LogStallTimeout is how long a log write may stay in flight before the node withholds its RPCs.
func (n *RaftNode) LogStallTimeout() time.Duration { return n.transport.stallAfter }

// Shutdown stops Raft and closes its stores.
func (n *RaftNode) Shutdown() error {
	err := n.Raft.Shutdown().Error()
	return errors.Join(err, n.Transport.Close(), n.store.Close())
}

// Servers returns Raft's current configuration, or nil when it cannot be read.
func (n *RaftNode) Servers() []raft.Server {
	f := n.Raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	return f.Configuration().Servers
}
