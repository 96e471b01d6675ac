package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// peersFileVersion is the format version of the saved peers file; every version ever written
// stays readable (peersfile_test.go holds a fixture of each).
const peersFileVersion = 1

// peersFile is what PeersFile holds: the members this node saw last.
type peersFile struct {
	Version int         `json:"version"`
	Peers   []savedPeer `json:"peers"`
}

type savedPeer struct {
	ID         string `json:"id"`
	GossipAddr string `json:"gossipAddr"`
}

// readPeersFile returns the saved peers by id; a missing file is no peers.
func readPeersFile(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var f peersFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if f.Version != peersFileVersion {
		return nil, fmt.Errorf("unknown version %d", f.Version)
	}
	out := make(map[string]string, len(f.Peers))
	for _, p := range f.Peers {
		if p.ID != "" && p.GossipAddr != "" {
			out[p.ID] = p.GossipAddr
		}
	}
	return out, nil
}

// writePeersFile replaces path atomically (temp file, fsync, rename). A lost write only costs a
// slower rejoin, but a torn file would cost the hint altogether.
func writePeersFile(path string, peers map[string]string) error {
	f := peersFile{Version: peersFileVersion, Peers: []savedPeer{}}
	for id, addr := range peers {
		f.Peers = append(f.Peers, savedPeer{ID: id, GossipAddr: addr})
	}
	slices.SortFunc(f.Peers, func(a, b savedPeer) int { return strings.Compare(a.ID, b.ID) })
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".peers-*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// savePeersLoop rewrites PeersFile after membership changes, at most once a second, and once
// more at shutdown. Members that left or died stay in it: they are the ones a restart must find.
func (m *Membership) savePeersLoop() {
	last := maps.Clone(m.saved)
	save := func() {
		m.mu.Lock()
		cur := maps.Clone(m.saved)
		if cur == nil {
			cur = map[string]string{}
		}
		for id, mem := range m.members {
			cur[id] = mem.GossipAddr
		}
		m.mu.Unlock()
		delete(cur, m.cfg.NodeID)
		if maps.Equal(cur, last) {
			return
		}
		if err := writePeersFile(m.cfg.PeersFile, cur); err != nil {
			m.log.Warn("cannot save the gossip peers", "file", m.cfg.PeersFile, "err", err)
			return
		}
		last = cur
	}
	for {
		select {
		case <-m.stop:
			save()
			return
		case <-m.dirty:
		}
		save()
		select {
		case <-m.stop:
			save()
			return
		case <-time.After(time.Second):
		}
	}
}
