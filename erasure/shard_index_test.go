package erasure

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
)

// packableFileID is "FIL" and name, left-padded with zeros to the 17 characters of a minted file
// id (so distinct names give distinct ids), so that the index packs its shards' keys.
func packableFileID(name string) string {
	return packPrefix + strings.Repeat("0", packChars-len(name)) + name
}

// TestPackKeyRoundTrips: every key of the packed shape unpacks to itself, two different keys never
// pack alike, and every key of another shape is refused.
func TestPackKeyRoundTrips(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	seen := map[packedKey]volumeKey{}
	edge := []volumeKey{
		{file: "FIL" + strings.Repeat("0", 17)},
		{file: "FIL" + strings.Repeat("z", 17), segment: 1<<packedSegBits - 1, index: 1<<packedIndexBits - 1},
		{file: "FILAZaz09" + strings.Repeat("Z", 11), segment: 1 << 14, index: 3},
	}
	for i := range 20000 {
		k := volumeKey{segment: uint32(rng.IntN(1 << packedSegBits)), index: uint32(rng.IntN(1 << packedIndexBits))}
		var f [packChars]byte
		for j := range f {
			f[j] = packAlphabet[rng.IntN(len(packAlphabet))]
		}
		k.file = packPrefix + string(f[:])
		if i < len(edge) {
			k = edge[i]
		}
		p, ok := packKey(k)
		if !ok {
			t.Fatalf("%+v does not pack", k)
		}
		if got := p.unpack(); got != k {
			t.Fatalf("%+v unpacks to %+v", k, got)
		}
		if other, dup := seen[p]; dup && other != k {
			t.Fatalf("%+v and %+v pack alike", k, other)
		}
		seen[p] = k
	}
	base := packPrefix + strings.Repeat("a", packChars)
	for _, k := range []volumeKey{
		{file: base[:len(base)-1]},                           // short
		{file: base + "a"},                                   // long
		{file: "TOK" + base[3:]},                             // another prefix
		{file: "fil" + base[3:]},                             // prefix case
		{file: base[:10] + "-" + base[11:]},                  // a byte outside the alphabet
		{file: base[:10] + "\xff" + base[11:]},               // a byte above ASCII
		{file: base[:19] + "\x00"},                           // NUL
		{file: base, segment: 1 << packedSegBits},            // segment too large
		{file: base, index: 1 << packedIndexBits},            // index too large
		{file: base, segment: ^uint32(0), index: ^uint32(0)}, // both
	} {
		if p, ok := packKey(k); ok {
			t.Errorf("%q seg %d idx %d packs to %+v", k.file, k.segment, k.index, p)
		}
	}
}

// TestShardIndexMatchesAMap drives the index and a plain map with the same random sets and
// removes over ids of both shapes, and checks that lookups, the length and the iteration agree.
func TestShardIndexMatchesAMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	x, want := newShardIndex(0), map[volumeKey]volumeEntry{}
	keys := make([]volumeKey, 0, 400)
	for i := range 200 {
		keys = append(keys,
			volumeKey{file: packableFileID(fmt.Sprint(i % 50)), segment: uint32(i / 50), index: uint32(i % 3)},
			volumeKey{file: fmt.Sprintf("FILother%d", i%50), segment: uint32(i / 50), index: uint32(i % 3)})
	}
	for i := range 20000 {
		k := keys[rng.IntN(len(keys))]
		if rng.IntN(3) == 0 {
			x.remove(k)
			delete(want, k)
		} else {
			e := volumeEntry{seq: uint64(i), vol: uint32(rng.IntN(9)), off: rng.Uint32(), bodyLen: rng.Uint32(), mtime: rng.Uint32()}
			x.set(k, e)
			want[k] = e
		}
		if got, ok := x.get(k); ok != (want[k] != volumeEntry{}) || got != want[k] {
			t.Fatalf("get %+v: %+v %v, want %+v", k, got, ok, want[k])
		}
	}
	if x.len() != len(want) || len(x.packed) == 0 || len(x.other) == 0 {
		t.Fatalf("%d entries (%d packed, %d other), want %d of both shapes", x.len(), len(x.packed), len(x.other), len(want))
	}
	if got := maps.Collect(x.all()); !maps.Equal(got, want) {
		t.Fatal("iteration yields another set than the map holds")
	}
	n := 0
	for range x.all() {
		if n++; n == 3 {
			break
		}
	}
	if n != 3 {
		t.Fatalf("stopped after %d", n)
	}
}

// TestVolumeIndexBytesPerEntry measures the RAM the index takes per small shard, for minted file
// ids (packed) and for others, which indexEntryBytes and indexEntryBytesUnpacked report to
// operators. A map's load swings between 7/16 and 7/8 as it doubles, so it measures at a count
// just before a doubling (100,000) and just after one (250,000); the constants are the middle.
func TestVolumeIndexBytesPerEntry(t *testing.T) {
	perEntry := func(n int, key func(i int) volumeKey) float64 {
		keys := make([]volumeKey, n)
		for i := range keys {
			keys[i] = key(i)
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		x := newShardIndex(0)
		for i, k := range keys {
			k.file = string([]byte(k.file)) // the index's own copy, as a record's parse makes
			x.set(k, volumeEntry{seq: uint64(i)})
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		runtime.KeepAlive(x)
		runtime.KeepAlive(keys)
		return (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / float64(n)
	}
	packed := func(i int) volumeKey {
		return volumeKey{file: packableFileID(fmt.Sprint(i)), segment: uint32(i % 4), index: 1}
	}
	other := func(i int) volumeKey {
		return volumeKey{file: fmt.Sprintf("FIL%021d", i), segment: uint32(i % 4), index: 1} // 24 characters
	}
	for _, n := range []int{100_000, 250_000} {
		p, o := perEntry(n, packed), perEntry(n, other)
		t.Logf("%d entries: %.0f bytes per entry with minted file ids, %.0f with 24-character others", n, p, o)
		for _, c := range []struct {
			name     string
			got      float64
			constant int
		}{{"packed", p, indexEntryBytes}, {"other", o, indexEntryBytesUnpacked}} {
			if c.got > float64(c.constant)*1.4 || c.got < float64(c.constant)/1.4 {
				t.Errorf("%s, %d entries: %.0f bytes per entry; the constant says %d: update it", c.name, n, c.got, c.constant)
			}
		}
	}
}

// BenchmarkShardIndexGC times a full garbage collection while the index holds a million small
// shards, with minted (packed) file ids and with others: the packed map holds no pointer, so the
// collector has nothing in it to mark.
func BenchmarkShardIndexGC(b *testing.B) {
	const n = 200_000
	for _, shape := range []struct {
		name string
		file func(i int) string
	}{
		{"packed", func(i int) string { return packableFileID(fmt.Sprint(i)) }},
		{"other", func(i int) string { return fmt.Sprintf("FILother%012d", i) }},
	} {
		b.Run(shape.name, func(b *testing.B) {
			x := newShardIndex(n)
			for i := range n {
				x.set(volumeKey{file: shape.file(i), index: 1}, volumeEntry{seq: uint64(i)})
			}
			runtime.GC()
			b.ResetTimer()
			for range b.N {
				runtime.GC()
			}
			b.StopTimer()
			runtime.KeepAlive(x)
		})
	}
}
