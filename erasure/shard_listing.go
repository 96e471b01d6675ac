package erasure

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// shardListing is the copy of the index that List walks, sorted by StoreOrder: a List at ten
// million small shards must not cost a string and several allocations per shard, nor a sort that
// builds two StoreOrder strings per comparison (DESIGN.md, "Listing small shards"). A shard of a
// packed key is 32 bytes here, compared by two integers; other shards keep their StoreOrder.
type shardListing struct {
	packed []packedListed
	other  []listedShard
}

// packedListed is one packed-key shard of a listing. order holds the 19 characters StoreOrder
// starts with (the fan-out, the file id's last two characters, then the file id's 17 after
// "FIL"), 6 bits each, in order: every packed file id has the same length and the packed
// alphabet is in byte order, so comparing order compares StoreOrder up to the segment.
type packedListed struct {
	order          [2]uint64
	segment, index uint32
	bodyLen, mtime uint32
}

// listedShard is one shard of another id, with its StoreOrder.
type listedShard struct {
	volumeShard
	order string
}

// orderWords is order for p: word 0 holds characters 15 and 16, then 0 to 7 (60 bits), word 1
// characters 8 to 16 (54 bits), first character in the highest bits.
func (p packedKey) orderWords() [2]uint64 {
	var w [2]uint64
	w[0] = p.char(15)<<54 | p.char(16)<<48
	for i := range 8 {
		w[0] |= p.char(i) << (42 - 6*i)
	}
	for i := 8; i < packChars; i++ {
		w[1] |= p.char(i) << (48 - 6*(i-8))
	}
	return w
}

// char is the 6-bit code of character i (0 to 16) of p's file id after "FIL".
func (p packedKey) char(i int) uint64 {
	if i < 10 {
		return p.lo >> (6 * i) & 63
	}
	return p.hi >> (6 * (i - 10)) & 63
}

func (p packedKey) segment() uint32 { return uint32(p.lo>>60)<<14 | uint32(p.hi>>50) }

func (p packedKey) index() uint32 { return uint32(p.hi >> 42 & (1<<packedIndexBits - 1)) }

// appendFile appends the file id of l.
func (l *packedListed) appendFile(dst []byte) []byte {
	dst = append(dst, packPrefix...)
	for i := range packChars {
		var c uint64
		if i < 8 {
			c = l.order[0] >> (42 - 6*i) & 63
		} else {
			c = l.order[1] >> (48 - 6*(i-8)) & 63
		}
		dst = append(dst, packAlphabet[c])
	}
	return dst
}

// appendOrder appends l's StoreOrder.
func (l *packedListed) appendOrder(dst []byte) []byte {
	dst = append(dst, packAlphabet[l.order[0]>>54&63], packAlphabet[l.order[0]>>48&63], '/')
	return appendShardSuffix(l.appendFile(dst), l.segment, l.index)
}

// appendShardSuffix appends what follows the file id in a shard's String: ".segment.index".
func appendShardSuffix(dst []byte, segment, index uint32) []byte {
	dst = strconv.AppendUint(append(dst, '.'), uint64(segment), 10)
	return strconv.AppendUint(append(dst, '.'), uint64(index), 10)
}

func comparePackedListed(a, b packedListed) int {
	if c := cmp.Compare(a.order[0], b.order[0]); c != 0 {
		return c
	}
	if c := cmp.Compare(a.order[1], b.order[1]); c != 0 {
		return c
	}
	var x, y [24]byte // the same file: its shards compare by their suffixes, as strings
	return strings.Compare(string(appendShardSuffix(x[:0], a.segment, a.index)), string(appendShardSuffix(y[:0], b.segment, b.index)))
}

// listing copies the index, sorted by StoreOrder. The copy is taken under the lock and sorted
// after it.
func (vs *volumeSet) listing() *shardListing {
	vs.mu.Lock()
	l := &shardListing{packed: make([]packedListed, 0, len(vs.index.packed)), other: make([]listedShard, 0, len(vs.index.other))}
	for p, e := range vs.index.packed {
		l.packed = append(l.packed, packedListed{order: p.orderWords(), segment: p.segment(), index: p.index(), bodyLen: e.bodyLen, mtime: e.mtime})
	}
	for k, e := range vs.index.other {
		l.other = append(l.other, listedShard{volumeShard: volumeShard{k, e}})
	}
	vs.mu.Unlock()
	for i := range l.other {
		l.other[i].order = StoreOrder(l.other[i].key.id())
	}
	slices.SortFunc(l.packed, comparePackedListed)
	slices.SortFunc(l.other, func(a, b listedShard) int { return strings.Compare(a.order, b.order) })
	return l
}

// next returns the StoreOrder of the listing's next shard, appended to buf, and whether that
// shard is a packed one; ok is false at the end.
func (l *shardListing) next(buf []byte) (order []byte, packed, ok bool) {
	switch {
	case len(l.packed) == 0 && len(l.other) == 0:
		return nil, false, false
	case len(l.other) == 0:
		return l.packed[0].appendOrder(buf), true, true
	case len(l.packed) == 0:
		return append(buf, l.other[0].order...), false, true
	}
	order = l.packed[0].appendOrder(buf)
	if string(order) < l.other[0].order {
		return order, true, true
	}
	return append(buf[:0], l.other[0].order...), false, true
}

// pop removes the next shard, packed or not as next said, and returns it.
func (l *shardListing) pop(packed bool) ShardInfo {
	if !packed {
		s := l.other[0]
		l.other = l.other[1:]
		return s.info()
	}
	p := &l.packed[0]
	var f [len(packPrefix) + packChars]byte
	info := ShardInfo{
		ID:      ShardID{File: string(p.appendFile(f[:0])), Segment: int(p.segment), Index: int(p.index)},
		Size:    int64(p.bodyLen),
		ModTime: time.Unix(int64(p.mtime), 0),
	}
	l.packed = l.packed[1:]
	return info
}
