package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	snapshot "github.com/hashicorp/raft-snapshot"

	"github.com/cairn-dev/cairn/cluster"
	"github.com/cairn-dev/cairn/cluster/clusterapi"
	"github.com/cairn-dev/cairn/core"
	"github.com/cairn-dev/cairn/erasure"
	"github.com/cairn-dev/cairn/fsm"
)

// Snapshots for disaster recovery. The archive is hashicorp/raft-snapshot's, as Consul writes it:
// a gzipped tar of meta.json (Raft's snapshot metadata), state.bin (the FSM's snapshot stream) and
// SHA256SUMS. cairn adds the library's optional SHA256SUMS.sealed member, through its Sealer hook,
// to carry a small manifest (which cairn version saved it, which cluster it belongs to, and the
// sums once more). Nothing else about the format is cairn's own.

// snapshotManifestFormat is the version of the manifest in SHA256SUMS.sealed.
const snapshotManifestFormat = 1

// maxUnreadableListed bounds the file ids a restore report lists.
const maxUnreadableListed = 100

// snapshotManifest is the content of SHA256SUMS.sealed.
type snapshotManifest struct {
	Format       int    `json:"format"`
	CairnVersion string `json:"cairnVersion"`
	ClusterID    string `json:"clusterId"`
	SHA256Sums   string `json:"sha256sums"`
}

// manifestSealer is the raft-snapshot Sealer that writes and reads the manifest. Open returns the
// sums the manifest carries, which the library then checks against the archive's members.
type manifestSealer struct {
	out snapshotManifest // what Seal writes
	in  snapshotManifest // what Open read
}

func (m *manifestSealer) Seal(_ context.Context, sums []byte) ([]byte, error) {
	out := m.out
	out.Format = snapshotManifestFormat
	out.SHA256Sums = string(sums)
	return json.Marshal(out)
}

func (m *manifestSealer) Open(_ context.Context, sealed []byte) ([]byte, error) {
	if len(sealed) == 0 {
		return nil, errors.New("no cairn manifest (SHA256SUMS.sealed): not an archive saved by cairn snapshot save")
	}
	dec := json.NewDecoder(bytes.NewReader(sealed))
	dec.DisallowUnknownFields()
	var in snapshotManifest
	if err := dec.Decode(&in); err != nil {
		return nil, fmt.Errorf("cairn manifest: %w", err)
	}
	if in.Format != snapshotManifestFormat {
		return nil, fmt.Errorf("cairn manifest format %d, this build reads %d", in.Format, snapshotManifestFormat)
	}
	m.in = in
	return []byte(in.SHA256Sums), nil
}

// leaderAddr is the cluster address of the Raft leader, for forwarding.
func (n *Node) leaderAddr() (string, error) {
	addr, _ := n.raft.Raft.LeaderWithID()
	if addr == "" {
		return "", fmt.Errorf("%w: %w", core.ErrUnavailable, clusterapi.ErrNoLeader)
	}
	return string(addr), nil
}

// SaveSnapshot streams a point-in-time snapshot archive of the metadata into w (MANAGE_CLUSTER). The
// leader takes it (a follower forwards the call); memory stays flat because Raft persists the
// state to its snapshot store first and the archive streams from there.
func (n *Node) SaveSnapshot(ctx context.Context, p core.Principal, w io.Writer) error {
	if err := n.service.Authorize(p, core.PermManageCluster); err != nil {
		return err
	}
	return n.saveSnapshot(ctx, w)
}

func (n *Node) saveSnapshot(ctx context.Context, w io.Writer) error {
	if !n.IsLeader() {
		addr, err := n.leaderAddr()
		if err != nil {
			return err
		}
		return n.rpcClient.SaveSnapshot(ctx, addr, w)
	}
	cfg, ok := n.fsm.Config()
	if !ok {
		return fmt.Errorf("%w: cluster not initialised yet", core.ErrUnavailable)
	}
	sealer := &manifestSealer{out: snapshotManifest{CairnVersion: n.cfg.Version, ClusterID: cfg.ClusterID}}
	if err := snapshot.Write(cluster.NewHCLogger(n.log, "snapshot"), n.raft.Raft, sealer, w); err != nil {
		return fmt.Errorf("save snapshot: %w", err)
	}
	return nil
}

// InspectSnapshot verifies an archive (gzip stream, SHA-256 sums, manifest, and a full decode of
// the state as a restore would do it) and describes it (MANAGE_CLUSTER). It runs on the node
// called and changes nothing. An archive of another cluster is refused unless allowOtherCluster.
func (n *Node) InspectSnapshot(ctx context.Context, p core.Principal, body io.Reader, allowOtherCluster bool) (core.SnapshotInfo, error) {
	if err := n.service.Authorize(p, core.PermManageCluster); err != nil {
		return core.SnapshotInfo{}, err
	}
	a, err := n.readArchive(body)
	if err != nil {
		return core.SnapshotInfo{}, err
	}
	defer a.close()
	if err := n.checkSnapshotCluster(a.info, allowOtherCluster); err != nil {
		return core.SnapshotInfo{}, err
	}
	return a.info, nil
}

// RestoreSnapshot replaces the whole metadata state of every node with the archive's, through
// Raft's Restore on the leader (MANAGE_CLUSTER; a follower forwards the call). The archive is
// fully received and verified before Raft sees it; anything wrong with it leaves the state as it
// was. One restore runs at a time on the leader. After the restore, the report counts the files
// whose shards are no longer there to read.
func (n *Node) RestoreSnapshot(ctx context.Context, p core.Principal, body io.Reader, allowOtherCluster bool) (core.RestoreReport, error) {
	if err := n.service.Authorize(p, core.PermManageCluster); err != nil {
		return core.RestoreReport{}, err
	}
	return n.restoreSnapshot(ctx, body, allowOtherCluster)
}

func (n *Node) restoreSnapshot(ctx context.Context, body io.Reader, allowOtherCluster bool) (core.RestoreReport, error) {
	if !n.IsLeader() {
		addr, err := n.leaderAddr()
		if err != nil {
			return core.RestoreReport{}, err
		}
		var rep core.RestoreReport
		if err := n.rpcClient.RestoreSnapshot(ctx, addr, body, allowOtherCluster, &rep); err != nil {
			return core.RestoreReport{}, snapshotRPCError(err)
		}
		return rep, nil
	}
	if !n.restoring.CompareAndSwap(false, true) {
		return core.RestoreReport{}, fmt.Errorf("%w: another restore is running on the leader", core.ErrSnapshotConflict)
	}
	defer n.restoring.Store(false)
	a, err := n.readArchive(body)
	if err != nil {
		return core.RestoreReport{}, err
	}
	defer a.close()
	if err := n.checkSnapshotCluster(a.info, allowOtherCluster); err != nil {
		return core.RestoreReport{}, err
	}
	// Raft's user restore installs the state on this node before any follower has it. A leader
	// cut off from its quorum would install it alone, and if it then crashed, it came back with
	// a log gap no leader repairs (helper-44). So it confirms it still leads, with a quorum's
	// answer, right before; receiving and checking the archive may have taken minutes.
	if err := n.raft.Raft.VerifyLeader().Error(); err != nil {
		return core.RestoreReport{}, fmt.Errorf("%w: no longer the leader with a quorum: %w", core.ErrUnavailable, err)
	}
	if err := n.raft.Raft.Restore(&a.meta, a.state, 0); err != nil {
		return core.RestoreReport{}, fmt.Errorf("%w: raft restore: %w", core.ErrUnavailable, err)
	}
	// Raft does not tell the FSM the index it restored at, so the FSM's applied index is the
	// snapshot's own until the next command. A barrier moves it on every node, so that read
	// indexes taken after the restore can be waited for at once.
	if err := n.consensus.Barrier(ctx); err != nil {
		return core.RestoreReport{}, fmt.Errorf("%w: barrier after restore: %w", core.ErrUnavailable, err)
	}
	rep := core.RestoreReport{Snapshot: a.info, RestoredIndex: n.fsm.AppliedIndex(), UnreadableFileIDs: []string{}}
	rep.UnreadableFiles, rep.UnreadableFileIDs = n.unreadableFiles(ctx)
	n.log.Warn("metadata restored from a snapshot", "snapshot_index", a.info.Index, "restored_index", rep.RestoredIndex,
		"files", a.info.Files, "unreadable_files", rep.UnreadableFiles)
	return rep, nil
}

// snapshotRPCError maps a forwarded call's failure: the leader's refusals keep their sentinel,
// anything else means the leader could not be reached or failed.
func snapshotRPCError(err error) error {
	if errors.Is(err, core.ErrInvalidSnapshot) || errors.Is(err, core.ErrSnapshotConflict) {
		return err
	}
	return fmt.Errorf("%w: %w", core.ErrUnavailable, err)
}

// checkSnapshotCluster refuses an archive of another cluster: restoring it would replace this
// cluster's id, keys and files with a stranger's. Rebuilding a lost cluster from its backup is
// the case for allowOtherCluster.
func (n *Node) checkSnapshotCluster(info core.SnapshotInfo, allowOtherCluster bool) error {
	cfg, ok := n.fsm.Config()
	if allowOtherCluster || !ok || cfg.ClusterID == info.ClusterID {
		return nil
	}
	return fmt.Errorf("%w: the snapshot belongs to cluster %s, this is cluster %s (restore it into a rebuilt cluster with --allow-other-cluster)",
		core.ErrSnapshotConflict, info.ClusterID, cfg.ClusterID)
}

// archive is a received, verified snapshot: its Raft metadata and its state in a temporary file.
type archive struct {
	info    core.SnapshotInfo
	meta    raft.SnapshotMeta
	state   *os.File
	cleanup []func()
}

func (a *archive) close() {
	for i := len(a.cleanup) - 1; i >= 0; i-- {
		a.cleanup[i]()
	}
}

// readArchive spools the archive to disk (so memory stays flat), verifies the whole gzip stream
// and the SHA-256 sums (raft-snapshot's Verify), reads it again with the manifest, and decodes the
// state exactly as the FSM's Restore would. Errors wrap core.ErrInvalidSnapshot, except failures
// of this node's own disk.
func (n *Node) readArchive(body io.Reader) (_ *archive, err error) {
	a := &archive{}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	raw, err := os.CreateTemp(n.cfg.DataDir, "snapshot-upload-*.tmp")
	if err != nil {
		return nil, fmt.Errorf("spool snapshot: %w", err)
	}
	a.cleanup = append(a.cleanup, func() { raw.Close(); os.Remove(raw.Name()) })
	if _, err := io.Copy(raw, body); err != nil {
		return nil, fmt.Errorf("receive snapshot: %w", err)
	}
	if _, err := raw.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("spool snapshot: %w", err)
	}
	if _, err := snapshot.Verify(raw); err != nil {
		return nil, fmt.Errorf("%w: %w", core.ErrInvalidSnapshot, err)
	}
	if _, err := raw.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("spool snapshot: %w", err)
	}
	// raft-snapshot decompresses the state into the system's temp directory ($TMPDIR), not the
	// data dir, and says why it failed only in text. A temp directory that cannot take a file is
	// this node's failure, not the archive's, so it is tried first.
	if err := probeTempDir(); err != nil {
		return nil, err
	}
	sealer := &manifestSealer{}
	state, cleanup, err := snapshot.WriteToTempFileWithSealer(cluster.NewHCLogger(n.log, "snapshot"), raw, &a.meta, sealer)
	if err != nil {
		if perr := probeTempDir(); perr != nil { // it filled up while the state was written
			return nil, fmt.Errorf("%w (%v)", perr, err)
		}
		return nil, fmt.Errorf("%w: %w", core.ErrInvalidSnapshot, err)
	}
	a.state = state
	a.cleanup = append(a.cleanup, cleanup)
	sum, err := fsm.InspectSnapshotIn(n.cfg.DataDir, state)
	if errors.Is(err, fsm.ErrInvalidSnapshot) {
		return nil, fmt.Errorf("%w: %w", core.ErrInvalidSnapshot, err)
	} else if err != nil {
		return nil, fmt.Errorf("%w: decode the snapshot state in %s: %w", core.ErrUnavailable, n.cfg.DataDir, err)
	}
	if sealer.in.ClusterID != sum.ClusterID {
		return nil, fmt.Errorf("%w: the manifest names cluster %q but the state is of cluster %q",
			core.ErrInvalidSnapshot, sealer.in.ClusterID, sum.ClusterID)
	}
	// Raft installs a user snapshot at max(its last index, meta.Index)+1, and the FSM takes its
	// applied index from the state's own header. A header past meta.Index (meta.json and state.bin
	// are two files of the archive, and its sums are no signature) made the FSM skip every later
	// entry, each then failing with a nil result: every write failed on every node, and no node
	// could restart (helper-44). A genuine archive's state is taken at or before its Raft index.
	if sum.AppliedIndex > a.meta.Index {
		return nil, fmt.Errorf("%w: the state says it applied index %d, past the snapshot's raft index %d",
			core.ErrInvalidSnapshot, sum.AppliedIndex, a.meta.Index)
	}
	// Raft adds one to the index without a bound: the largest uint64 wrapped to 0 and wedged the
	// leader (helper-44). No real log comes near maxArchiveIndex.
	if a.meta.Index > maxArchiveIndex || a.meta.Term > maxArchiveIndex {
		return nil, fmt.Errorf("%w: raft index %d or term %d is beyond any real log (%d)",
			core.ErrInvalidSnapshot, a.meta.Index, a.meta.Term, uint64(maxArchiveIndex))
	}
	// The state's clock never goes back, and de-duplication keeps every request row younger than
	// it by the window: a clock years ahead would keep every later row for ever (the metadata
	// store would grow without bound). A genuine archive's clock is a proposer's wall clock at
	// its last command, so it is not ahead of this node's by more than their skew.
	if ahead := time.Until(sum.Clock); ahead > maxArchiveClockAhead {
		return nil, fmt.Errorf("%w: the state's clock %s is %s ahead of this node's; no cluster's clocks are that far apart (check this node's clock if the archive is genuine)",
			core.ErrInvalidSnapshot, sum.Clock.UTC().Format(time.RFC3339), ahead.Round(time.Second))
	}
	if _, err := state.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("rewind snapshot state: %w", err)
	}
	a.info = core.SnapshotInfo{
		Index: a.meta.Index, Term: a.meta.Term, Size: a.meta.Size, CairnVersion: sealer.in.CairnVersion,
		ClusterID: sum.ClusterID, Files: sum.Files, Tokens: sum.Tokens, APIKeys: sum.APIKeys,
	}
	return a, nil
}

// maxArchiveClockAhead bounds how far an archive's clock may be ahead of the restoring node's.
const maxArchiveClockAhead = 24 * time.Hour

// maxArchiveIndex bounds an archive's Raft index and term: 2^53, which a cluster committing a
// million entries a second reaches in 285 years.
const maxArchiveIndex = 1 << 53

// probeTempDir checks that the system's temp directory takes a file, as raft-snapshot's
// decompression needs.
func probeTempDir() error {
	f, err := os.CreateTemp("", "cairn-snapshot-probe-")
	if err == nil {
		_, err = f.Write(make([]byte, 4096))
		err = errors.Join(err, f.Close(), os.Remove(f.Name()))
	}
	if err != nil {
		return fmt.Errorf("%w: this node's temp directory %s cannot take the snapshot's state (set TMPDIR to a directory with room): %w",
			core.ErrUnavailable, os.TempDir(), err)
	}
	return nil
}

// unreadableFiles counts the files of the current state with a segment that has fewer than k of
// its shards where the layout puts them (stat on every shard, 16 at a time).
func (n *Node) unreadableFiles(ctx context.Context) (int, []string) {
	var files []fsm.File
	n.fsm.Files(func(f fsm.File) bool { files = append(files, f); return true })
	var (
		mu  sync.Mutex
		ids []string
		cnt int
		wg  sync.WaitGroup
	)
	slots := make(chan struct{}, 16)
	for _, f := range files {
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			if n.fileReadable(ctx, f) {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			cnt++
			if len(ids) < maxUnreadableListed {
				ids = append(ids, f.ID)
			}
		}()
	}
	wg.Wait()
	if ids == nil {
		ids = []string{}
	}
	return cnt, ids
}

func (n *Node) fileReadable(ctx context.Context, f fsm.File) bool {
	for si, seg := range f.Layout.Segments {
		present := 0
		for idx, nodeID := range seg.Nodes {
			if nodeID != "" && n.statShard(ctx, nodeID, erasure.ShardID{File: f.ID, Segment: si, Index: idx}) == nil {
				present++
			}
		}
		if present < f.Layout.Geometry.Data {
			return false
		}
	}
	return true
}

func (n *Node) statShard(ctx context.Context, nodeID string, id erasure.ShardID) error {
	if nodeID == n.cfg.NodeID {
		_, err := n.shards.Stat(id)
		return err
	}
	addr, err := (&shardRouter{node: n}).addr(nodeID)
	if err != nil {
		return err
	}
	_, err = n.rpcClient.StatShard(ctx, addr, id)
	return err
}

// snapshotEndpoint is the leader side of forwarded snapshot calls (cluster.SnapshotEndpoint).
type snapshotEndpoint struct{ n *Node }

func (e snapshotEndpoint) SaveSnapshot(ctx context.Context, w io.Writer) error {
	if !e.n.IsLeader() {
		return cluster.ErrNotLeader
	}
	return e.n.saveSnapshot(ctx, w)
}

func (e snapshotEndpoint) RestoreSnapshot(ctx context.Context, body io.Reader, allowOtherCluster bool) (any, error) {
	if !e.n.IsLeader() {
		return nil, cluster.ErrNotLeader
	}
	return e.n.restoreSnapshot(ctx, body, allowOtherCluster)
}
