package node

import (
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairn-dev/cairn/cluster"
	"github.com/cairn-dev/cairn/core"
	"github.com/cairn-dev/cairn/erasure"
	"github.com/cairn-dev/cairn/fsm"
)

// Config is everything one node needs. DefaultConfig fills the defaults; the CLI maps flags and
// environment variables onto it and tests build it directly.
type Config struct {
	NodeID  string
	DataDir string

	HTTPAddr    string // public API and ops endpoints
	ClusterAddr string // Raft + internal RPC, one port
	GossipAddr  string // memberlist, UDP and TCP
	// Advertise* are the addresses other nodes and clients use when the bind address is not
	// reachable as is (0.0.0.0, NAT). Empty: the bind address (with the real port when it was 0).
	AdvertiseHTTP    string
	AdvertiseCluster string
	AdvertiseGossip  string

	Join            []string // gossip addresses of other nodes
	BootstrapExpect int
	Erasure         erasure.Geometry
	// WriteQuorum overrides the default write quorum (k, or k+1 when k == m) when > 0.
	WriteQuorum int
	Zone        string

	MaxFileSize          int64
	RootKey              string
	AllowAnonymousUpload bool
	// ClusterSecret authenticates nodes to each other (cluster port handshake and gossip
	// encryption). Empty: derived from RootKey, so nodes started with the same root key trust each
	// other.
	ClusterSecret string
	// TLS turns on HTTPS and, with a CA, mutual TLS on the cluster port (node/tls.go).
	TLS TLSConfig
	// EnableDebug serves /debug/pprof on the HTTP port, to API keys with MANAGE_CLUSTER.
	EnableDebug bool

	BlockSize        int // data bytes per erasure block
	BlocksPerSegment int // blocks per segment; a segment's shards share one placement
	MaxVoters        int

	RaftTimings cluster.RaftTimings
	// RaftMultiplier scales Raft's heartbeat, election and leader-lease timeouts (RaftTimings, or
	// hashicorp/raft's 1 s / 1 s / 500 ms defaults) together, like Consul's raft_multiplier. Higher
	// keeps a CPU-starved leader in place; lower fails over faster. 1..10; 0 means 1.
	RaftMultiplier    int
	GossipTimings     cluster.GossipTimings
	RejoinInterval    time.Duration
	ReconcileInterval time.Duration
	MetaInterval      time.Duration // how often free space and state are re-announced
	ShutdownTimeout   time.Duration
	// DrainDelay is how long a graceful shutdown answers /readyz 503 while it still serves every
	// request, before it stops accepting: long enough for a load balancer's health check to take
	// the node out of rotation (check interval times fall count). 0 skips the drain.
	DrainDelay time.Duration
	// MinFree is the free-space reserve: below it the node takes no new shards and tells the others
	// so through gossip, so placement avoids it.
	MinFree int64
	// StateCacheSize is the block cache of the metadata state store (pebble, fsm/DESIGN.md): the
	// bytes of hot metadata blocks kept in memory beside the OS page cache.
	StateCacheSize int64
	// RepairDelay is how long a node must be unreachable before its shards are rebuilt elsewhere.
	RepairDelay time.Duration
	// RepairRate limits the bytes per second repair writes (0: unlimited).
	RepairRate int64
	// RepairInterval is the pause between the leader's repair passes.
	RepairInterval time.Duration
	// ExpiryInterval is how often the leader removes expired files and tokens through Raft.
	ExpiryInterval time.Duration

	// GCInterval is the pause between garbage-collection passes over the local shard store.
	GCInterval time.Duration
	// GCGracePeriod is how long an unreferenced shard is kept after it was written. An upload
	// writes its shards before its Raft commit, so the longest upload must take less than this.
	GCGracePeriod time.Duration
	// ScrubCycle is the period in which every local shard is re-verified once; passes are paced
	// to spread over it.
	ScrubCycle time.Duration
	// ScrubRate caps the bytes per second the scrubber reads.
	ScrubRate int64

	// SmallShardMax is the largest shard kept as a record in a volume file, group-committed with
	// the other small shards written at the same time; larger shards are files of their own. 0
	// keeps every shard in a file. At most 64 KiB.
	SmallShardMax int64
	// VolumeSize is the size at which a volume file takes no new records (1 MiB to 3 GiB).
	VolumeSize int64
	// GroupCommitWait is the longest a group commit of small shards waits for more records while
	// they arrive closer together than that (0 to 100 ms; 0 never waits).
	GroupCommitWait time.Duration
	// CompactionRate caps the bytes per second volume compaction reads (and writes), run after
	// each GC pass.
	CompactionRate int64

	// Autopilot (node/autopilot.go). CleanupDeadServers lets the leader remove servers that have
	// been dead for DeadServerCleanupAfter from Raft; never a majority at once, never below
	// BootstrapExpect voters. LastContactThreshold, MaxTrailingLogs and ServerStabilizationTime
	// judge a server healthy (AutopilotHealth). AutopilotInterval is how often health is
	// refreshed and dead servers are looked for.
	CleanupDeadServers      bool
	DeadServerCleanupAfter  time.Duration
	LastContactThreshold    time.Duration
	MaxTrailingLogs         uint64
	ServerStabilizationTime time.Duration
	AutopilotInterval       time.Duration

	// MaxConcurrentUploads caps the uploads this node receives at once (both APIs together); the
	// next one answers 503 with Retry-After. Each upload holds a few erasure blocks of memory.
	MaxConcurrentUploads int
	// UploadIdleTimeout aborts an upload whose body sends nothing for this long; its shards are
	// removed. Every other request body (token, settings, admin, snapshot) has the same idle
	// deadline, since the server has no ReadTimeout.
	UploadIdleTimeout time.Duration
	// DownloadStallTimeout cuts off a download whose client takes nothing (64 KiB) for this long,
	// releasing its request and the shard streams it holds on other nodes. 0: never.
	DownloadStallTimeout time.Duration

	// LeaderWait is how long a request waits for a usable Raft leader before it fails with 503,
	// and how long a ready node stays ready through an election. 0: derived from the Raft
	// timings (leaderWait), so that it covers a failover.
	LeaderWait time.Duration
	// ShardStallTimeout is how long a shard stream to or from a peer (open, read, write, the
	// durable ack) may make no progress before the peer is given up: reads go on from parity,
	// uploads with the write quorum.
	ShardStallTimeout time.Duration
	// MaxClockOffset is how far this node's wall clock may be from those of a majority of its
	// peers (measured on gossip probes) before it refuses proposals and reads and says not ready
	// (clock_skew); the leader also refuses commands stamped further ahead of its own clock than
	// this. 0 turns both checks off.
	MaxClockOffset time.Duration
	// Clock is the wall clock that commands are stamped with, tokens expire by and peers' clocks
	// are compared with; nil is time.Now (tests skew one node's).
	Clock func() time.Time
	// SnapshotThreshold: Raft log entries between snapshots (0 = raft's default).
	SnapshotThreshold uint64
	TrailingLogs      uint64
	// SnapshotInterval is how often Raft checks whether to snapshot (0 = raft's default, 2 min).
	SnapshotInterval time.Duration

	// Version and Revision label cairn_build_info (cmd/cairn passes its build's). Version is also
	// announced in gossip and /v1/status; empty announces nothing, as releases before v0.2 did.
	Version  string
	Revision string
	// Recover replaces the Raft configuration with the one in DataDir/raft/peers.json before Raft
	// starts (hashicorp/raft RecoverCluster): the way back from a permanently lost quorum.
	Recover bool

	// Network opens every inter-node socket; nil means the operating system's.
	Network  cluster.Network
	Registry *prometheus.Registry // nil: a fresh registry per node
	Logger   *slog.Logger
}

// Defaults, in one place.
const (
	DefaultMaxFileSize      = 8 << 20
	DefaultBlockSize        = 1 << 20
	DefaultBlocksPerSegment = 64
	DefaultMaxVoters        = 5
	// DefaultDrainDelay covers HAProxy's default check (inter 2s, fall 3: 6 s) with room for a
	// check in flight; raise it for slower checks (Kubernetes' default readiness probe needs 30 s).
	DefaultDrainDelay = 10 * time.Second
	// DefaultMaxClockOffset is --max-clock-offset's default: far above what NTP keeps a LAN's
	// clocks to (milliseconds), far below the times that matter (token lifetimes, the 15-minute
	// de-duplication window).
	DefaultMaxClockOffset = 5 * time.Second
	// DefaultRaftMultiplier is --raft-multiplier's default (see docs/operations.md).
	DefaultRaftMultiplier = 2
	// DefaultMaxConcurrentUploads is the per-node upload cap (--max-concurrent-uploads).
	DefaultMaxConcurrentUploads = 64
)

// DefaultConfig returns a configuration with every default filled in.
func DefaultConfig() Config {
	return Config{
		HTTPAddr:          "127.0.0.1:8080",
		ClusterAddr:       "127.0.0.1:7000",
		GossipAddr:        "127.0.0.1:7946",
		Erasure:           erasure.Geometry{Data: 2, Parity: 1},
		MaxFileSize:       DefaultMaxFileSize,
		BlockSize:         DefaultBlockSize,
		BlocksPerSegment:  DefaultBlocksPerSegment,
		MaxVoters:         DefaultMaxVoters,
		RejoinInterval:    30 * time.Second,
		ReconcileInterval: 5 * time.Second,
		MetaInterval:      10 * time.Second,
		ShutdownTimeout:   30 * time.Second,
		DrainDelay:        DefaultDrainDelay,
		// Followers learn a new commit index on the next append; raft's 50 ms default would add up
		// to 50 ms to every write forwarded through a follower (which waits to apply its own write).
		RaftTimings: cluster.RaftTimings{CommitTimeout: 5 * time.Millisecond},
		// Starved of CPU for a second, a leader keeps its place (docs/operations.md has the figures).
		RaftMultiplier: DefaultRaftMultiplier,
		LeaderWait:     0,
		// Uploads: at 1 MiB blocks and 2+1, one upload holds about 10 MiB at most, so 64 bound a
		// node's upload memory near 640 MiB; 30 s without a byte is a dead client, not a slow one.
		MaxConcurrentUploads: DefaultMaxConcurrentUploads,
		UploadIdleTimeout:    30 * time.Second,
		DownloadStallTimeout: time.Minute,
		// A peer silent for as long as a request may wait for a leader is gone for this request.
		ShardStallTimeout: 5 * time.Second,
		MaxClockOffset:    DefaultMaxClockOffset,
		ExpiryInterval:    10 * time.Second,
		RepairDelay:       10 * time.Minute,
		MinFree:           256 << 20,
		StateCacheSize:    fsm.DefaultCacheBytes,
		RepairRate:        64 << 20,
		RepairInterval:    30 * time.Second,
		// Autopilot: Consul's health thresholds; dead servers go with the repair delay.
		CleanupDeadServers:      true,
		DeadServerCleanupAfter:  10 * time.Minute,
		LastContactThreshold:    200 * time.Millisecond,
		MaxTrailingLogs:         250,
		ServerStabilizationTime: 10 * time.Second,
		AutopilotInterval:       2 * time.Second,
		// GC and scrub.
		GCInterval:    10 * time.Minute,
		GCGracePeriod: time.Hour,
		ScrubCycle:    7 * 24 * time.Hour,
		ScrubRate:     32 << 20,
		// Small shards: erasure.DefaultStoreOptions.
		SmallShardMax:   int64(erasure.DefaultStoreOptions().SmallShardMax),
		VolumeSize:      erasure.DefaultStoreOptions().VolumeSize,
		GroupCommitWait: erasure.DefaultStoreOptions().GroupCommitWait,
		CompactionRate:  32 << 20,
	}
}

// Validate reports every configuration problem at once, in the flags' own words and always in the
// same order (the order of the checks below). The result is nil or an errors.Join of one error per
// problem, so a caller can print them one per line (errors.Unwrap as interface{ Unwrap() []error }).
func (c *Config) Validate() error {
	var errs []error
	if !core.ValidNodeID(c.NodeID) {
		errs = append(errs, errors.New("--node-id must be "+core.NodeIDRule))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir is required"))
	}
	// A slice, not a map: the problems come out in the same order every time.
	for _, a := range []struct{ flag, addr string }{
		{"--http-addr", c.HTTPAddr}, {"--cluster-addr", c.ClusterAddr}, {"--gossip-addr", c.GossipAddr},
	} {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", a.flag, a.addr, err))
		}
	}
	if err := c.Erasure.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("--erasure: %w", err))
	}
	if c.BootstrapExpect < 0 {
		errs = append(errs, errors.New("--bootstrap-expect must not be negative"))
	}
	if c.BootstrapExpect > 0 && c.RootKey == "" {
		errs = append(errs, errors.New("--root-key is required with --bootstrap-expect (the first leader records it)"))
	}
	if c.RootKey != "" && len(c.RootKey) < 16 {
		errs = append(errs, errors.New("--root-key must be at least 16 characters"))
	}
	if c.ClusterSecret == "" && c.RootKey == "" {
		errs = append(errs, errors.New("--cluster-secret (or --root-key, from which it is derived) is required to authenticate nodes"))
	}
	if c.ClusterSecret != "" && len(c.ClusterSecret) < 16 {
		errs = append(errs, errors.New("--cluster-secret must be at least 16 characters"))
	}
	if c.MaxFileSize <= 0 {
		errs = append(errs, errors.New("--max-file-size must be positive"))
	}
	if c.BlockSize < 64 || c.BlockSize > 64<<20 {
		errs = append(errs, errors.New("block size must be between 64 B and 64 MiB"))
	}
	if c.BlocksPerSegment < 1 {
		errs = append(errs, errors.New("blocks per segment must be at least 1"))
	}
	if c.WriteQuorum < 0 || (c.WriteQuorum > 0 && (c.WriteQuorum < c.Erasure.Data || c.WriteQuorum > c.Erasure.Total())) {
		errs = append(errs, fmt.Errorf("--write-quorum must be between k=%d and k+m=%d", c.Erasure.Data, c.Erasure.Total()))
	}
	if c.ShardStallTimeout < 0 {
		errs = append(errs, errors.New("--shard-stall-timeout must not be negative"))
	}
	if c.MaxClockOffset < 0 {
		errs = append(errs, errors.New("--max-clock-offset must not be negative (0 turns the clock check off)"))
	}
	if c.RaftMultiplier < 0 || c.RaftMultiplier > 10 {
		errs = append(errs, errors.New("--raft-multiplier must be between 1 and 10"))
	}
	if c.MaxConcurrentUploads < 0 || c.UploadIdleTimeout < 0 || c.DownloadStallTimeout < 0 {
		errs = append(errs, errors.New("--max-concurrent-uploads, --upload-idle-timeout and --download-stall-timeout must not be negative (0: no bound)"))
	}
	if c.MinFree < 0 {
		errs = append(errs, errors.New("--min-free must not be negative"))
	}
	if c.StateCacheSize < 1<<20 {
		errs = append(errs, errors.New("--state-cache-size must be at least 1 MiB"))
	}
	if c.RepairDelay < 0 || c.RepairRate < 0 || c.RepairInterval <= 0 {
		errs = append(errs, errors.New("--repair-delay and --repair-rate must not be negative, the repair interval must be positive"))
	}
	// Autopilot.
	if c.DeadServerCleanupAfter < 0 || c.ServerStabilizationTime < 0 {
		errs = append(errs, errors.New("the dead-server cleanup delay and server stabilization time must not be negative"))
	}
	if c.LastContactThreshold <= 0 || c.MaxTrailingLogs == 0 || c.AutopilotInterval <= 0 {
		errs = append(errs, errors.New("the autopilot last-contact threshold, max trailing logs and interval must be positive"))
	}
	// GC and scrub.
	if c.GCInterval <= 0 || c.GCGracePeriod <= 0 {
		errs = append(errs, errors.New("--gc-interval and --gc-grace-period must be positive (the grace period must exceed the longest upload)"))
	}
	if c.ScrubCycle <= 0 || c.ScrubRate <= 0 {
		errs = append(errs, errors.New("--scrub-cycle and --scrub-rate must be positive"))
	}
	if err := c.storeOptions(nil).Validate(); err != nil {
		errs = append(errs, fmt.Errorf("--small-shard-max, --volume-size, --group-commit-wait: %w", err))
	}
	if c.CompactionRate <= 0 {
		errs = append(errs, errors.New("--compaction-rate must be positive"))
	}
	if c.ExpiryInterval <= 0 {
		errs = append(errs, errors.New("expiry interval must be positive"))
	}
	if c.DrainDelay < 0 {
		errs = append(errs, errors.New("--drain-delay must not be negative"))
	}
	if c.MaxVoters < 1 {
		errs = append(errs, errors.New("max voters must be at least 1"))
	}
	if len(c.Zone) > 64 {
		errs = append(errs, errors.New("--zone must be at most 64 characters"))
	}
	errs = append(errs, c.TLS.validate()...) // node/tls.go
	return errors.Join(errs...)
}

// raftTimings are the Raft timings with the multiplier applied.
// storeOptions are the shard store's settings.
func (c *Config) storeOptions(log *slog.Logger) erasure.StoreOptions {
	return erasure.StoreOptions{
		SmallShardMax: int(min(c.SmallShardMax, 1<<31)), VolumeSize: c.VolumeSize,
		GroupCommitWait: c.GroupCommitWait, Logger: log,
	}
}

// leaderWait is LeaderWait, or when it is 0 the time a failover can take with these Raft timings,
// and at least cluster.DefaultLeaderWait. hashicorp/raft's followers notice a dead leader after a
// randomised heartbeat timeout of up to twice HeartbeatTimeout, and a candidate whose pre-vote a
// peer still refuses (it heard the old leader more recently) waits an election timeout before
// the next round: 2 × heartbeat + election + 1 s of margin, 7 s at the default multiplier of 2
// (Consul holds an RPC 7 s for a leader too). A fixed 5 s was shorter than a failover in the
// worst case: a node stayed ready and its requests failed with 503 just before the new leader
// was elected (TestE2EReadyAfterRestart, 4.7 s from the kill to the new leader).
func (c *Config) leaderWait() time.Duration {
	if c.LeaderWait > 0 {
		return c.LeaderWait
	}
	t := c.raftTimings()
	heartbeat, election := t.HeartbeatTimeout, t.ElectionTimeout
	if heartbeat == 0 {
		heartbeat = raftDefaultTimeout
	}
	if election == 0 {
		election = raftDefaultTimeout
	}
	if t.Multiplier > 1 {
		heartbeat *= time.Duration(t.Multiplier)
		election *= time.Duration(t.Multiplier)
	}
	return max(cluster.DefaultLeaderWait, 2*heartbeat+election+time.Second)
}

// raftDefaultTimeout is hashicorp/raft's default heartbeat and election timeout.
const raftDefaultTimeout = time.Second

func (c *Config) raftTimings() cluster.RaftTimings {
	t := c.RaftTimings
	t.Multiplier = c.RaftMultiplier
	return t
}

// derivedSecret derives a purpose-bound 32-byte key from the cluster secret.
func (c *Config) derivedSecret(purpose string) []byte {
	base := c.ClusterSecret
	salt := "cairn cluster secret"
	if base == "" {
		base = c.RootKey
		salt = "cairn root key"
	}
	key, err := hkdf.Key(sha256.New, []byte(base), []byte(salt), purpose, 32)
	if err != nil {
		panic("hkdf: " + err.Error()) // only fails for absurd lengths
	}
	return key
}

// ParseSize parses a byte size such as 8MiB, 1GiB, 500KB or 1048576.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
		{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1},
	}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			mult = u.mult
			t = strings.TrimSpace(strings.TrimSuffix(t, u.suffix))
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("size %q: want a non-negative integer with an optional unit (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)", s)
	}
	if n > 0 && mult > (1<<62)/n {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return n * mult, nil
}

// FormatSize renders n in the largest binary unit that divides it exactly (8MiB, 1536KiB, 1000B),
// so that ParseSize(FormatSize(n)) == n: flag defaults and printed configurations use it.
func FormatSize(n int64) string {
	if n == 0 {
		return "0"
	}
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}

// secretConfigFields are the Config fields Redacted never shows.
var secretConfigFields = map[string]bool{"RootKey": true, "ClusterSecret": true}

// Redacted is the configuration as plain values for an operator to read (cairn debug, the debug
// config route): every field but the runtime hooks (Network, Registry, Logger), durations and sizes
// as text, and the secrets replaced by "<redacted>" when set. Fields added to Config show up
// without a change here; a new secret must be added to secretConfigFields.
func (c *Config) Redacted() map[string]any {
	return redactedStruct(reflect.ValueOf(*c))
}

func redactedStruct(v reflect.Value) map[string]any {
	out := map[string]any{}
	t := v.Type()
	for i := range t.NumField() {
		f, fv := t.Field(i), v.Field(i)
		if !f.IsExported() {
			continue
		}
		switch fv.Kind() {
		case reflect.Interface, reflect.Pointer, reflect.Func, reflect.Chan:
			continue
		}
		switch {
		case secretConfigFields[f.Name]:
			if fv.String() != "" {
				out[f.Name] = "<redacted>"
			} else {
				out[f.Name] = ""
			}
		case fv.Type() == reflect.TypeFor[time.Duration]():
			out[f.Name] = time.Duration(fv.Int()).String()
		case fv.Type().Implements(reflect.TypeFor[fmt.Stringer]()):
			out[f.Name] = fv.Interface().(fmt.Stringer).String()
		case fv.Kind() == reflect.Struct:
			out[f.Name] = redactedStruct(fv)
		default:
			out[f.Name] = fv.Interface()
		}
	}
	return out
}
