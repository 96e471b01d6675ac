package cluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/hashicorp/raft"

	"github.com/cairn-dev/cairn/fsm"
)

// RaftPeersFile is the name, inside DATA_DIR/raft, of the configuration a recovering node adopts: the
// peers.json of hashicorp/raft (a JSON array of {"id", "address", "non_voter"}), as Consul and
// Nomad read it.
const RaftPeersFile = "peers.json"

// recoveredSuffix is appended to peers.json once it has been applied, so that the next start does
// not apply it again and the operator can still see what was applied.
const recoveredSuffix = ".recovered"

// ErrNoRaftState refuses recovery on a data dir that never held Raft state: there is nothing to
// recover, and recovering there would quietly start an empty cluster.
var ErrNoRaftState = errors.New("no raft state to recover")

// recoverCluster replaces the Raft configuration stored in dir with the one in dir/peers.json,
// through raft.RecoverCluster, before Raft starts. Every entry in the local log is treated as
// committed (the survivors' logs are all that is left of the old quorum). The FSM RecoverCluster
// replays into is a throwaway: raft.NewRaft restores the real one from the snapshot it writes.
func recoverCluster(conf *raft.Config, dir string, hadState bool, logs raft.LogStore, stable raft.StableStore,
	snaps raft.SnapshotStore, trans raft.Transport) (raft.Configuration, error) {
	peersPath := filepath.Join(dir, RaftPeersFile)
	if !hadState {
		return raft.Configuration{}, fmt.Errorf("--recover: %s holds %w (a new node joins with --join instead)", dir, ErrNoRaftState)
	}
	if _, err := os.Stat(peersPath); err != nil {
		return raft.Configuration{}, fmt.Errorf("--recover needs %s listing the surviving servers: %w", peersPath, err)
	}
	configuration, err := raft.ReadConfigJSON(peersPath)
	if err != nil {
		return raft.Configuration{}, fmt.Errorf("--recover: read %s: %w", peersPath, err)
	}
	self := slices.IndexFunc(configuration.Servers, func(s raft.Server) bool { return s.ID == conf.LocalID })
	if self < 0 || configuration.Servers[self].Suffrage != raft.Voter {
		return raft.Configuration{}, fmt.Errorf("--recover: %s must list this node (%s) as a voter", peersPath, conf.LocalID)
	}
	if err := recoverWithScratchFSM(conf, dir, logs, stable, snaps, trans, configuration); err != nil {
		return raft.Configuration{}, err
	}
	if err := os.Rename(peersPath, peersPath+recoveredSuffix); err != nil {
		return raft.Configuration{}, fmt.Errorf("--recover: applied %s but could not rename it: %w", peersPath, err)
	}
	return configuration, nil
}

// recoverWithScratchFSM runs raft.RecoverCluster with a throwaway FSM in a temporary directory
// inside dir (the same disk), removed afterwards. It does not fsync: nothing reads it after the
// snapshot RecoverCluster writes from it.
func recoverWithScratchFSM(conf *raft.Config, dir string, logs raft.LogStore, stable raft.StableStore,
	snaps raft.SnapshotStore, trans raft.Transport, configuration raft.Configuration) error {
	scratchDir, err := os.MkdirTemp(dir, "recover-fsm-")
	if err != nil {
		return fmt.Errorf("--recover: %w", err)
	}
	defer os.RemoveAll(scratchDir)
	scratch, err := fsm.New(scratchDir, fsm.Options{NoSync: true})
	if err != nil {
		return fmt.Errorf("--recover: %w", err)
	}
	defer scratch.Close()
	if err := raft.RecoverCluster(conf, NewRaftFSM(scratch), logs, stable, snaps, trans, configuration); err != nil {
		return fmt.Errorf("--recover: %w", err)
	}
	return nil
}
