package erasure

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// TestPackedListingOrderIsStoreOrder: for random packed keys (few fan-outs and files, so that
// fan-outs, files and segments tie often, and segments of one and two digits, where decimal
// strings and numbers sort differently), the listing's order bytes are the key's StoreOrder, its
// file id is the key's, and sorting by comparePackedListed sorts by StoreOrder.
func TestPackedListingOrderIsStoreOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	files := make([]string, 40)
	for i := range files {
		var f [packChars]byte
		for j := range f {
			f[j] = "0aZz"[rng.IntN(4)]
		}
		files[i] = packPrefix + string(f[:])
	}
	var listed []packedListed
	for range 5000 {
		k := volumeKey{file: files[rng.IntN(len(files))], segment: uint32(rng.IntN(25)), index: uint32(rng.IntN(12))}
		if rng.IntN(50) == 0 {
			k.segment, k.index = 1<<packedSegBits-1-uint32(rng.IntN(3)), 1<<packedIndexBits-1
		}
		p, ok := packKey(k)
		if !ok {
			t.Fatalf("%+v does not pack", k)
		}
		l := packedListed{order: p.orderWords(), segment: p.segment(), index: p.index()}
		if got, want := string(l.appendOrder(nil)), StoreOrder(k.id()); got != want {
			t.Fatalf("order %q, want %q", got, want)
		}
		if got := string(l.appendFile(nil)); got != k.file {
			t.Fatalf("file %q, want %q", got, k.file)
		}
		listed = append(listed, l)
	}
	slices.SortFunc(listed, comparePackedListed)
	for i := 1; i < len(listed); i++ {
		a, b := string(listed[i-1].appendOrder(nil)), string(listed[i].appendOrder(nil))
		if a > b {
			t.Fatalf("%q sorted before %q", a, b)
		}
	}
}

// TestListMergesEveryKindInStoreOrder: a store holding small shards of minted ids (packed in the
// index) and of other ids, and shard files of both, sharing fan-outs, lists every shard once, in
// strictly ascending StoreOrder, with its size, before and after a reopen; a List stopped early
// stops.
func TestListMergesEveryKindInStoreOrder(t *testing.T) {
	dir := t.TempDir()
	s := openStoreWith(t, dir, smallVolumes)
	rng := rand.New(rand.NewPCG(7, 8))
	want := map[ShardID]int{}
	for i := range 400 {
		fanout := []string{"0a", "Zz", "a0"}[i%3]
		var id ShardID
		if i%2 == 0 {
			id = ShardID{File: packableFileID(fmt.Sprintf("%03d%s", i/6, fanout)), Segment: rng.IntN(12), Index: rng.IntN(3)}
		} else {
			id = ShardID{File: fmt.Sprintf("FILother%03d%s", i/6, fanout), Segment: rng.IntN(12), Index: rng.IntN(3)}
		}
		size := 100 + rng.IntN(2000)
		if i%7 == 0 {
			size = s.vols.maxShard + 1 + rng.IntN(1000) // a shard file
		}
		body := testShard(id, size)
		putShard(t, s, id, body)
		want[id] = len(body)
	}
	check := func(s *ShardStore) {
		t.Helper()
		var order []string
		got := map[ShardID]int{}
		err := s.List(func(info ShardInfo) error {
			order = append(order, StoreOrder(info.ID))
			got[info.ID] = int(info.Size)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i < len(order); i++ {
			if order[i-1] >= order[i] {
				t.Fatalf("List gave %q before %q", order[i-1], order[i])
			}
		}
		if len(order) != len(want) {
			t.Fatalf("List gave %d shards, want %d", len(order), len(want))
		}
		for id, size := range want {
			if got[id] != size {
				t.Fatalf("List gave %s with %d bytes, want %d", id, got[id], size)
			}
		}
		calls := 0
		errStop := fmt.Errorf("stop")
		if err := s.List(func(ShardInfo) error { calls++; return errStop }); calls != 1 || err == nil || !strings.Contains(err.Error(), "stop") {
			t.Fatalf("a stopped List made %d calls and returned %v", calls, err)
		}
	}
	if st := s.VolumeStats(); len(s.vols.index.packed) == 0 || len(s.vols.index.other) == 0 || st.Shards == len(want) {
		t.Fatalf("want packed and other small shards and some shard files: %+v", st)
	}
	check(s)
	s.Close()
	check(openStoreWith(t, dir, smallVolumes))
}
