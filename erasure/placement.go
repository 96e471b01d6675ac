package erasure

import (
	"cmp"
	"hash/fnv"
	"slices"
)

// Candidate is a node that may hold shards, with the failure domain it sits in. An empty Zone is a
// zone of its own like any other, so a cluster without zones is one zone and placement is plain
// rendezvous hashing.
type Candidate struct {
	NodeID string
	Zone   string
}

// Place returns up to n distinct node ids for key, chosen by rendezvous (highest-random-weight)
// hashing over candidates, spread across zones: it takes the best node of each zone in turn (zones
// ordered by their best remaining score) before a second node from any zone. Deterministic for the
// same inputs regardless of candidate order. Returns fewer than n when there are fewer candidates.
//
// Rendezvous hashing means removing a node only moves the keys that had it: every other node's
// score for a key is unchanged, so the same nodes win.
func Place(key string, candidates []Candidate, n int) []string {
	if n <= 0 || len(candidates) == 0 {
		return nil
	}
	type scored struct {
		id, zone string
		score    uint64
	}
	nodes := make([]scored, 0, len(candidates))
	for _, c := range candidates {
		nodes = append(nodes, scored{id: c.NodeID, zone: c.Zone, score: rendezvousScore(key, c.NodeID)})
	}
	// Best score first; ties (and duplicate ids listed under two zones) broken by id then zone so
	// that the result never depends on the candidates' order.
	slices.SortFunc(nodes, func(a, b scored) int {
		return cmp.Or(cmp.Compare(b.score, a.score), cmp.Compare(a.id, b.id), cmp.Compare(a.zone, b.zone))
	})
	nodes = slices.CompactFunc(nodes, func(a, b scored) bool { return a.id == b.id })

	// Group by zone keeping the score order; zones are ordered by their best node.
	var zones [][]scored
	zoneIdx := make(map[string]int)
	for _, nd := range nodes {
		zi, ok := zoneIdx[nd.zone]
		if !ok {
			zi = len(zones)
			zoneIdx[nd.zone] = zi
			zones = append(zones, nil)
		}
		zones[zi] = append(zones[zi], nd)
	}

	// Round r takes the r-th best node of every zone that still has one. Zones were appended in
	// order of their best node and each zone's list is sorted, so within a round the zones, ordered
	// by their best remaining node, are exactly the zones sorted by their r-th node.
	out := make([]string, 0, min(n, len(nodes)))
	var round []scored
	for r := 0; len(out) < cap(out); r++ {
		round = round[:0]
		for _, z := range zones {
			if r < len(z) {
				round = append(round, z[r])
			}
		}
		slices.SortFunc(round, func(a, b scored) int {
			return cmp.Or(cmp.Compare(b.score, a.score), cmp.Compare(a.id, b.id))
		})
		for _, nd := range round {
			if len(out) == cap(out) {
				break
			}
			out = append(out, nd.id)
		}
	}
	return out
}

// rendezvousScore hashes (key, nodeID) with FNV-1a 64, which is stable across processes and
// releases, then runs the SplitMix64 finalizer over it: FNV alone mixes the last bytes poorly, and
// node ids often differ only in a trailing digit.
func rendezvousScore(key, nodeID string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	h.Write([]byte{0}) // separator: ("ab","c") and ("a","bc") must not collide
	h.Write([]byte(nodeID))
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
