package rql

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// likeMatcher matches a like() pattern: '*' is any run of characters, '?' exactly one, every other
// character itself under Unicode simple case folding (what RE2's (?i) does); the match is anchored
// at both ends.
//
// It exists because a regexp costs O(pattern × text) per record, and both are client input: one
// 410-byte pattern against a 5 MB name took 35 s of CPU. The pattern is cut at its stars into
// segments. The first must match at the start, the last at the end, and the middle ones are found
// left to right, each at its leftmost occurrence after the previous one: that greedy choice is
// optimal, since an earlier end leaves more text for the rest, so the text is scanned once.
// A segment without '?' is found with Knuth-Morris-Pratt, linear in segment plus text; one with
// '?' with bit-parallel shift-and (bitap), one machine word per 64 characters of the segment, so
// O(text) for segments up to 64 characters and O(text × ⌈segment/64⌉) beyond.
type likeMatcher struct {
	segments []likeSegment // len 1: no star at all
}

// likeSegment is a run of the pattern between two stars, folded.
type likeSegment struct {
	runes []rune // fold keys; likeAny for '?'
	// fail is the KMP failure function, for segments without '?'.
	fail []int
	// masks (bitap) give, for a fold key, the bit set of positions it may occupy; any is the set
	// of '?' positions, the mask of every character the segment does not name.
	masks map[rune][]uint64
	any   []uint64
}

const likeAny rune = -1

func compileLike(p string) *likeMatcher {
	m := &likeMatcher{}
	for _, part := range strings.Split(p, "*") {
		seg := likeSegment{}
		wild := false
		for _, r := range part {
			if r == '?' {
				seg.runes = append(seg.runes, likeAny)
				wild = true
				continue
			}
			seg.runes = append(seg.runes, foldKey(r))
		}
		if wild {
			seg.buildBitap()
		} else {
			seg.buildKMP()
		}
		m.segments = append(m.segments, seg)
	}
	return m
}

// foldKey maps r to one representative of its simple case-folding orbit (the smallest member), so
// two characters match case-insensitively exactly when their keys are equal.
func foldKey(r rune) rune {
	if r < utf8.RuneSelf {
		if 'a' <= r && r <= 'z' {
			return r - 'a' + 'A' // the orbits of k and s reach beyond ASCII, but K and S are their minimum
		}
		return r
	}
	low := r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		low = min(low, f)
	}
	return low
}

func (s *likeSegment) buildKMP() {
	s.fail = make([]int, len(s.runes))
	k := 0
	for i := 1; i < len(s.runes); i++ {
		for k > 0 && s.runes[i] != s.runes[k] {
			k = s.fail[k-1]
		}
		if s.runes[i] == s.runes[k] {
			k++
		}
		s.fail[i] = k
	}
}

func (s *likeSegment) buildBitap() {
	words := (len(s.runes) + 63) / 64
	s.any = make([]uint64, words)
	for i, r := range s.runes {
		if r == likeAny {
			s.any[i/64] |= 1 << (i % 64)
		}
	}
	s.masks = map[rune][]uint64{}
	for i, r := range s.runes {
		if r == likeAny {
			continue
		}
		mask, ok := s.masks[r]
		if !ok {
			mask = append([]uint64(nil), s.any...)
			s.masks[r] = mask
		}
		mask[i/64] |= 1 << (i % 64)
	}
}

// runeCursor walks a string rune by rune, as range over a string does (an invalid byte is one
// utf8.RuneError), which is also how RE2 reads text.
type runeCursor struct {
	s   string
	off int
}

func (c *runeCursor) next() rune {
	r, n := utf8.DecodeRuneInString(c.s[c.off:])
	c.off += n
	return r
}

// match reports whether text matches the whole pattern.
func (m *likeMatcher) match(text string) bool {
	n := utf8.RuneCountInString(text)
	first, last := m.segments[0], m.segments[len(m.segments)-1]
	cur := &runeCursor{s: text}
	if len(m.segments) == 1 {
		return n == len(first.runes) && first.matchHere(cur)
	}
	middle := n - len(first.runes) - len(last.runes)
	if middle < 0 || !first.matchHere(cur) {
		return false
	}
	for _, seg := range m.segments[1 : len(m.segments)-1] {
		used, ok := seg.find(cur, middle)
		if !ok {
			return false
		}
		middle -= used
	}
	for ; middle > 0; middle-- {
		cur.next()
	}
	return last.matchHere(cur)
}

// matchHere consumes len(s.runes) runes and reports whether they match the segment.
func (s *likeSegment) matchHere(cur *runeCursor) bool {
	for _, p := range s.runes {
		r := cur.next()
		if p != likeAny && p != foldKey(r) {
			return false
		}
	}
	return true
}

// find consumes runes, at most limit, up to the end of the segment's leftmost occurrence. It
// returns how many it consumed and whether the segment occurred.
func (s *likeSegment) find(cur *runeCursor, limit int) (int, bool) {
	if len(s.runes) == 0 {
		return 0, true
	}
	if s.fail != nil {
		return s.findKMP(cur, limit)
	}
	return s.findBitap(cur, limit)
}

func (s *likeSegment) findKMP(cur *runeCursor, limit int) (int, bool) {
	k := 0
	for used := 1; used <= limit; used++ {
		r := foldKey(cur.next())
		for k > 0 && s.runes[k] != r {
			k = s.fail[k-1]
		}
		if s.runes[k] == r {
			k++
		}
		if k == len(s.runes) {
			return used, true
		}
	}
	return limit, false
}

func (s *likeSegment) findBitap(cur *runeCursor, limit int) (int, bool) {
	words := len(s.any)
	state := make([]uint64, words) // bit i: the last i+1 runes match the segment's first i+1
	top, topBit := (len(s.runes)-1)/64, uint64(1)<<((len(s.runes)-1)%64)
	for used := 1; used <= limit; used++ {
		mask, ok := s.masks[foldKey(cur.next())]
		if !ok {
			mask = s.any
		}
		carry := uint64(1) // a match may start at every rune
		for w := range words {
			next := state[w] >> 63
			state[w] = (state[w]<<1 | carry) & mask[w]
			carry = next
		}
		if state[top]&topBit != 0 {
			return used, true
		}
	}
	return limit, false
}
