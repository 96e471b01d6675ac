package rql

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// referencePage is what a page must be: filter everything, sort it all stably, cut the page.
func referencePage(q Query, records []*fileRecord) ([]*fileRecord, int) {
	var matched []*fileRecord
	for _, r := range records {
		if q.Match(r) {
			matched = append(matched, r)
		}
	}
	slices.SortStableFunc(matched, func(a, b *fileRecord) int {
		for _, k := range q.Sort {
			if c := descending(compareKeys(sortValue(a.Field(k.Field)), sortValue(b.Field(k.Field))), k.Desc); c != 0 {
				return c
			}
		}
		return 0
	})
	limit := q.Limit
	if limit == 0 {
		limit = DefaultLimit
	}
	lo := min(q.Offset, len(matched))
	return matched[lo:min(lo+limit, len(matched))], len(matched)
}

// TestPagerMatchesAFullSort: for random records (with many ties, so that stability matters) and
// queries over every sort shape, the pager's page and total equal a full stable sort's, while it
// never holds more than offset+limit records.
func TestPagerMatchesAFullSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	records := make([]*fileRecord, 500)
	for i := range records {
		records[i] = &fileRecord{
			name:     fmt.Sprintf("f%02d", rng.IntN(40)),
			mimetype: []string{"text/plain", "image/png", "application/pdf"}[rng.IntN(3)],
			size:     int64(rng.IntN(10)),
			created:  t0.Add(time.Duration(rng.IntN(30)) * time.Minute),
		}
		if rng.IntN(4) == 0 {
			records[i].tags = []string{"a"}
		}
	}
	queries := []string{
		"", "limit(7)", "limit(10,95)", "limit(50,480)", "limit(5,1000)",
		"sort(+size)&limit(13,40)", "sort(-size,+name)&limit(50,0)", "sort(-creationTimestamp)&limit(9,17)",
		"gt(size,4)&sort(+mimetype,-creationTimestamp,+name)&limit(11,3)", "eq(mimetype,image%252Fpng)&sort(+name)",
		"eq(tags,a)&sort(+name)&limit(20,6)",
	}
	for _, raw := range queries {
		q, err := Parse(raw, fileFields())
		if err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		p := NewPager[*fileRecord](q)
		for _, r := range records {
			p.Add(r)
			if len(p.kept.entries) > p.keep {
				t.Fatalf("%q: the pager holds %d records, more than offset+limit %d", raw, len(p.kept.entries), p.keep)
			}
		}
		page, total, _, _ := p.Page()
		want, wantTotal := referencePage(q, records)
		if total != wantTotal || !slices.Equal(page, want) {
			t.Errorf("%q: page of %d (total %d), want %d (total %d)", raw, len(page), total, len(want), wantTotal)
		}
	}
}

// TestPagerOffsetNearMaxIntKeepsEveryMatchAndPagesNothing: offset+limit saturates rather than
// wraps, so an offset up to math.MaxInt gives an empty page and the true total, with and without
// a sort, and the pager never holds more than the records offered.
func TestPagerOffsetNearMaxIntKeepsEveryMatchAndPagesNothing(t *testing.T) {
	records := []*fileRecord{{name: "b"}, {name: "a"}, {name: "c"}}
	for _, raw := range []string{
		"sort(+name)&limit(1,9223372036854775807)",
		"sort(-name)&limit(50,9223372036854775757)",
		"sort(+name)&limit(50,9223372036854775758)",
		"limit(1,9223372036854775807)",
		"limit(50,9223372036854775800)",
	} {
		q, err := Parse(raw, fileFields())
		if err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		p := NewPager[*fileRecord](q)
		if p.keep < p.offset {
			t.Fatalf("%q: keeps %d records for offset %d: offset+limit wrapped", raw, p.keep, p.offset)
		}
		for _, r := range records {
			p.Add(r)
		}
		page, total, _, offset := p.Page()
		if len(page) != 0 || total != len(records) || offset != q.Offset || len(p.kept.entries) != len(records) {
			t.Errorf("%q: page of %d, total %d, offset %d, %d kept; want 0, %d, %d, %d",
				raw, len(page), total, offset, len(p.kept.entries), len(records), q.Offset, len(records))
		}
	}
}
