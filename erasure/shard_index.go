package erasure

import (
	"iter"
	"strings"
)

// shardIndex maps each small shard the volumes hold to its newest record (see DESIGN.md, "The
// index in memory"). Shards of files whose id has the shape the API mints ("FIL" and 17 of
// [0-9A-Za-z], core.NewFileID) are keyed by a packedKey: 16 bytes, no pointer, so the map holds
// no file id string and the garbage collector never scans it. Any other id (older or foreign
// ones, tests) is keyed by its volumeKey in a second map. A key is in at most one of them, since
// whether it packs depends only on the key.
type shardIndex struct {
	packed map[packedKey]volumeEntry
	other  map[volumeKey]volumeEntry
	// sizeHint is how many shards the index expects, for the first map that gets an entry: a
	// store's ids are nearly always all of one shape, and room made in the other map is wasted.
	sizeHint int
}

// newShardIndex returns an empty index that expects about n shards.
func newShardIndex(n int) shardIndex {
	return shardIndex{packed: map[packedKey]volumeEntry{}, other: map[volumeKey]volumeEntry{}, sizeHint: n}
}

func (x shardIndex) get(k volumeKey) (volumeEntry, bool) {
	if p, ok := packKey(k); ok {
		e, ok := x.packed[p]
		return e, ok
	}
	e, ok := x.other[k]
	return e, ok
}

func (x *shardIndex) set(k volumeKey, e volumeEntry) {
	p, packs := packKey(k)
	if x.sizeHint > 0 {
		if packs {
			x.packed = make(map[packedKey]volumeEntry, x.sizeHint)
		} else {
			x.other = make(map[volumeKey]volumeEntry, x.sizeHint)
		}
		x.sizeHint = 0
	}
	if packs {
		x.packed[p] = e
		return
	}
	x.other[k] = e
}

func (x shardIndex) remove(k volumeKey) {
	if p, ok := packKey(k); ok {
		delete(x.packed, p)
		return
	}
	delete(x.other, k)
}

func (x shardIndex) len() int { return len(x.packed) + len(x.other) }

// all yields every entry, in no order. A packed key is unpacked into a new file id string.
func (x shardIndex) all() iter.Seq2[volumeKey, volumeEntry] {
	return func(yield func(volumeKey, volumeEntry) bool) {
		for p, e := range x.packed {
			if !yield(p.unpack(), e) {
				return
			}
		}
		for k, e := range x.other {
			if !yield(k, e) {
				return
			}
		}
	}
}

// packedKey is a volumeKey whose file id is "FIL" and 17 characters of [0-9A-Za-z], whose
// segment is below 2^18 and whose index is below 2^8, in 128 bits:
//
//	lo: characters 0-9 of the 17, 6 bits each (bits 0-59); segment bits 14-17 (bits 60-63)
//	hi: characters 10-16, 6 bits each (bits 0-41); index (bits 42-49); segment bits 0-13 (50-63)
//
// A character's 6 bits are its position in packAlphabet.
type packedKey struct{ lo, hi uint64 }

const (
	packPrefix      = "FIL"
	packChars       = 17
	packedSegBits   = 18
	packedIndexBits = 8
	packAlphabet    = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

// packCode is the 6-bit code of c, its position in packAlphabet, or 0xff for a byte outside it.
func packCode(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'A' && c <= 'Z':
		return c - 'A' + 10
	case c >= 'a' && c <= 'z':
		return c - 'a' + 36
	}
	return 0xff
}

// packKey packs k if it has the shape packedKey holds.
func packKey(k volumeKey) (packedKey, bool) {
	f := k.file
	if len(f) != len(packPrefix)+packChars || !strings.HasPrefix(f, packPrefix) ||
		k.segment >= 1<<packedSegBits || k.index >= 1<<packedIndexBits {
		return packedKey{}, false
	}
	var p packedKey
	var bad byte
	for i := range 10 {
		c := packCode(f[len(packPrefix)+i])
		bad |= c
		p.lo |= uint64(c) << (6 * i)
	}
	for i := range packChars - 10 {
		c := packCode(f[len(packPrefix)+10+i])
		bad |= c
		p.hi |= uint64(c) << (6 * i)
	}
	if bad&0xc0 != 0 { // a code above 63: a byte outside the alphabet
		return packedKey{}, false
	}
	p.lo |= uint64(k.segment>>14) << 60
	p.hi |= uint64(k.index)<<42 | uint64(k.segment&(1<<14-1))<<50
	return p, true
}

// unpack is the volumeKey p was packed from.
func (p packedKey) unpack() volumeKey {
	var f [len(packPrefix) + packChars]byte
	copy(f[:], packPrefix)
	for i := range packChars {
		f[len(packPrefix)+i] = packAlphabet[p.char(i)]
	}
	return volumeKey{file: string(f[:]), segment: p.segment(), index: p.index()}
}
