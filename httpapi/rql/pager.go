package rql

import (
	"container/heap"
	"math"
	"slices"
)

// Pager pages a stream of records the way Page pages a slice, holding at most offset+limit of
// them: a listing over millions of files costs memory in the page asked for, not in the number of
// files (the scan itself still visits every record, to count page.total).
//
// Without a sort it keeps the first offset+limit matches in arrival order. With one it keeps the
// best offset+limit in a heap whose top is the worst kept; records that sort equal keep their
// arrival order, as Page's stable sort does.
type Pager[R Record] struct {
	q             Query
	limit, offset int
	keep          int // offset+limit, saturated (keepCount)
	total         int
	arrivals      int
	kept          pagerHeap[R]
}

// NewPager returns an empty pager for q.
func NewPager[R Record](q Query) *Pager[R] {
	limit, offset := q.Limit, max(q.Offset, 0)
	if limit == 0 {
		limit = DefaultLimit
	}
	limit = min(max(limit, 1), MaxLimit)
	return &Pager[R]{q: q, limit: limit, offset: offset, keep: keepCount(offset, limit), kept: pagerHeap[R]{sort: q.Sort}}
}

// keepCount is offset+limit, saturated at math.MaxInt: limit() accepts any offset that fits an
// int (the contract refuses none, and an offset past every match is just an empty page), so the
// plain sum could wrap negative, and a pager told to keep a negative number of records kept none
// without a sort and indexed its empty heap with one.
func keepCount(offset, limit int) int {
	if offset > math.MaxInt-limit {
		return math.MaxInt
	}
	return offset + limit
}

// Add offers one record; one that does not match q's filter is only dropped.
func (p *Pager[R]) Add(r R) {
	if !p.q.Match(r) {
		return
	}
	p.total++
	p.arrivals++
	if len(p.q.Sort) == 0 {
		if len(p.kept.entries) < p.keep {
			p.kept.entries = append(p.kept.entries, pagerEntry[R]{rec: r, arrival: p.arrivals})
		}
		return
	}
	e := pagerEntry[R]{rec: r, arrival: p.arrivals, keys: make([]sortKey, len(p.q.Sort))}
	for i, k := range p.q.Sort {
		e.keys[i] = sortValue(r.Field(k.Field))
	}
	switch {
	case len(p.kept.entries) < p.keep:
		heap.Push(&p.kept, e)
	case p.kept.before(e, p.kept.entries[0]):
		p.kept.entries[0] = e
		heap.Fix(&p.kept, 0)
	}
}

// Page returns the page of what was added, and the total number that matched.
func (p *Pager[R]) Page() (page []R, total int, limit, offset int) {
	entries := slices.Clone(p.kept.entries)
	slices.SortFunc(entries, func(a, b pagerEntry[R]) int {
		if p.kept.before(a, b) {
			return -1
		}
		return 1 // arrivals differ, so no two entries are equal
	})
	page = []R{}
	for i := p.offset; i < len(entries) && len(page) < p.limit; i++ {
		page = append(page, entries[i].rec)
	}
	return page, p.total, p.limit, p.offset
}

type pagerEntry[R Record] struct {
	rec     R
	keys    []sortKey // read once: Field boxes its answer
	arrival int
}

// pagerHeap is a max-heap in page order: its top is the entry that would come last.
type pagerHeap[R Record] struct {
	sort    []SortKey
	entries []pagerEntry[R]
}

// before reports whether a comes before b in the page: by the sort keys, then by arrival.
func (h *pagerHeap[R]) before(a, b pagerEntry[R]) bool {
	for i, k := range h.sort {
		if c := descending(compareKeys(a.keys[i], b.keys[i]), k.Desc); c != 0 {
			return c < 0
		}
	}
	return a.arrival < b.arrival
}

func (h *pagerHeap[R]) Len() int           { return len(h.entries) }
func (h *pagerHeap[R]) Less(i, j int) bool { return h.before(h.entries[j], h.entries[i]) }
func (h *pagerHeap[R]) Swap(i, j int)      { h.entries[i], h.entries[j] = h.entries[j], h.entries[i] }
func (h *pagerHeap[R]) Push(x any)         { h.entries = append(h.entries, x.(pagerEntry[R])) }
func (h *pagerHeap[R]) Pop() any {
	last := h.entries[len(h.entries)-1]
	h.entries = h.entries[:len(h.entries)-1]
	return last
}
