package erasure

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

func nodes(n int, zones ...string) []Candidate {
	out := make([]Candidate, n)
	for i := range out {
		out[i].NodeID = fmt.Sprintf("node-%02d", i)
		if len(zones) > 0 {
			out[i].Zone = zones[i%len(zones)]
		}
	}
	return out
}

func TestPlaceBasics(t *testing.T) {
	tests := []struct {
		name       string
		candidates []Candidate
		n, want    int
	}{
		{name: "enough nodes", candidates: nodes(10), n: 6, want: 6},
		{name: "fewer nodes than asked", candidates: nodes(4), n: 6, want: 4},
		{name: "no nodes", candidates: nil, n: 3, want: 0},
		{name: "zero asked", candidates: nodes(3), n: 0, want: 0},
		{name: "duplicate ids count once", candidates: append(nodes(3), nodes(3, "z")...), n: 6, want: 3},
		{name: "zones", candidates: nodes(9, "a", "b", "c"), n: 5, want: 5},
	}
	rng := rand.New(rand.NewPCG(1, 1))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k := range 50 {
				key := fmt.Sprintf("FIL%d.0", k)
				got := Place(key, tt.candidates, tt.n)
				if len(got) != tt.want {
					t.Fatalf("Place(%q) = %v, want %d nodes", key, got, tt.want)
				}
				if len(slices.Compact(slices.Sorted(slices.Values(got)))) != len(got) {
					t.Fatalf("Place(%q) = %v: repeated node", key, got)
				}
				shuffled := slices.Clone(tt.candidates)
				rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
				if again := Place(key, shuffled, tt.n); !slices.Equal(again, got) {
					t.Fatalf("Place(%q) depends on candidate order: %v vs %v", key, got, again)
				}
			}
		})
	}
}

// TestPlaceStable pins placements computed once: a change of hash or tie-break would move every
// shard of an existing cluster, so it must fail loudly here.
func TestPlaceStable(t *testing.T) {
	tests := []struct {
		key        string
		candidates []Candidate
		n          int
		want       []string
	}{
		{key: "FILabc.0", candidates: nodes(6), n: 3, want: []string{"node-03", "node-01", "node-00"}},
		{key: "FILxyz.3", candidates: nodes(9, "a", "b", "c"), n: 5,
			want: []string{"node-01", "node-03", "node-05", "node-00", "node-07"}},
	}
	for _, tt := range tests {
		if got := Place(tt.key, tt.candidates, tt.n); !slices.Equal(got, tt.want) {
			t.Errorf("Place(%q) = %v, want %v", tt.key, got, tt.want)
		}
	}
	if got, want := rendezvousScore("FILabc.0", "node-00"), uint64(8111392673610143287); got != want {
		t.Errorf("rendezvousScore = %d, want %d", got, want)
	}
}

func TestPlaceEvenSpread(t *testing.T) {
	const keys, numNodes, n = 20000, 10, 3
	count := make(map[string]int)
	for k := range keys {
		for _, id := range Place(fmt.Sprintf("FIL%d.0", k), nodes(numNodes), n) {
			count[id]++
		}
	}
	want := keys * n / numNodes
	for id, c := range count {
		if c < want*9/10 || c > want*11/10 {
			t.Errorf("%s holds %d shards, want %d ± 10%%", id, c, want)
		}
	}
	if len(count) != numNodes {
		t.Errorf("only %d of %d nodes used", len(count), numNodes)
	}
}

func TestPlaceZoneSpread(t *testing.T) {
	tests := []struct {
		name       string
		candidates []Candidate
		n          int
		maxPerZone int
	}{
		{name: "3 zones, 3 shards", candidates: nodes(9, "a", "b", "c"), n: 3, maxPerZone: 1},
		{name: "3 zones, 5 shards", candidates: nodes(9, "a", "b", "c"), n: 5, maxPerZone: 2},
		{name: "2 zones, 6 shards", candidates: nodes(8, "a", "b"), n: 6, maxPerZone: 3},
		{name: "uneven zones", candidates: append(nodes(6, "big"), Candidate{"solo", "small"}), n: 3, maxPerZone: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			zoneOf := make(map[string]string)
			for _, c := range tt.candidates {
				zoneOf[c.NodeID] = c.Zone
			}
			zones := make(map[string]bool)
			for _, c := range tt.candidates {
				zones[c.Zone] = true
			}
			for k := range 500 {
				got := Place(fmt.Sprintf("FIL%d.1", k), tt.candidates, tt.n)
				per := make(map[string]int)
				for _, id := range got {
					per[zoneOf[id]]++
				}
				if len(per) != min(tt.n, len(zones)) {
					t.Fatalf("Place = %v uses zones %v, want %d zones", got, per, min(tt.n, len(zones)))
				}
				for z, c := range per {
					if c > tt.maxPerZone {
						t.Fatalf("Place = %v puts %d shards in zone %q", got, c, z)
					}
				}
			}
		})
	}
}

func TestPlaceMinimalMovement(t *testing.T) {
	tests := []struct {
		name       string
		candidates []Candidate
		n          int
	}{
		{name: "no zones", candidates: nodes(10), n: 3},
		{name: "zones", candidates: nodes(12, "a", "b", "c"), n: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			removed := tt.candidates[4].NodeID
			rest := slices.Delete(slices.Clone(tt.candidates), 4, 5)
			moved := 0
			for k := range 5000 {
				key := fmt.Sprintf("FIL%d.0", k)
				before, after := Place(key, tt.candidates, tt.n), Place(key, rest, tt.n)
				if !slices.Contains(before, removed) {
					if !slices.Equal(before, after) {
						t.Fatalf("%s: without %s placement changed %v -> %v", key, removed, before, after)
					}
					continue
				}
				moved++
				// Only the removed node's slot may change hands: the survivors stay.
				for _, id := range before {
					if id != removed && !slices.Contains(after, id) {
						t.Fatalf("%s: survivor %s dropped: %v -> %v", key, id, before, after)
					}
				}
			}
			if moved == 0 {
				t.Fatal("removed node held no keys; test proves nothing")
			}
		})
	}
}

func BenchmarkPlace(b *testing.B) {
	candidates := nodes(50, "a", "b", "c")
	for i := 0; b.Loop(); i++ {
		Place(fmt.Sprintf("FIL%d.0", i), candidates, 6)
	}
}
