package rql

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// rec is a record whose missing fields are simply absent from the map.
type rec map[string]any

func (r rec) Field(name string) (any, bool) {
	v, ok := r[name]
	return v, ok
}

func day(d int) time.Time { return time.Date(2026, 2, d, 12, 0, 0, 0, time.UTC) }

// testRecords is a small file listing; "ghost" lacks most fields.
func testRecords() []rec {
	return []rec{
		{"name": "report.pdf", "mimetype": "application/pdf", "size": int64(500), "tags": []string{"ecg-report", "2026"}, "creationTimestamp": day(1)},
		{"name": "Annual Report.PDF", "mimetype": "application/pdf", "size": int64(1500), "tags": []string{"report"}, "creationTimestamp": day(3)},
		{"name": "notes.txt", "mimetype": "text/plain", "size": int64(20), "tags": []string{}, "creationTimestamp": day(2)},
		{"name": "photo.png", "mimetype": "image/png", "size": 2048.5, "tags": []string{"2026", "holiday"}, "creationTimestamp": day(5)},
		{"name": "ghost"},
	}
}

func names(rs []rec) []string {
	out := []string{}
	for _, r := range rs {
		out = append(out, fmt.Sprint(r["name"]))
	}
	return out
}

func TestMatch(t *testing.T) {
	all := []string{"report.pdf", "Annual Report.PDF", "notes.txt", "photo.png", "ghost"}
	tests := []struct {
		raw  string
		want []string
	}{
		{"", all},
		{"eq(name,report.pdf)", []string{"report.pdf"}},
		{"ne(name,report.pdf)", []string{"Annual Report.PDF", "notes.txt", "photo.png", "ghost"}},
		{"gt(size,500)", []string{"Annual Report.PDF", "photo.png"}},
		{"ge(size,500)", []string{"report.pdf", "Annual Report.PDF", "photo.png"}},
		{"lt(size,500)", []string{"notes.txt"}},
		{"le(size,500)", []string{"report.pdf", "notes.txt"}},
		{"gt(size,2048.25)", []string{"photo.png"}},
		{"lt(name,b)", []string{"Annual Report.PDF"}},
		{"gt(creationTimestamp,2026-02-02T12%253A00%253A00Z)", []string{"Annual Report.PDF", "photo.png"}},
		{"le(creationTimestamp,2026-02-02T12:00:00Z)", []string{"report.pdf", "notes.txt"}},
		{"eq(size,null)", []string{"ghost"}},
		{"ne(size,null)", []string{"report.pdf", "Annual Report.PDF", "notes.txt", "photo.png"}},
		{"eq(mimetype,null)", []string{}},
		{"eq(tags,2026)", []string{"report.pdf", "photo.png"}},
		{"ne(tags,2026)", []string{"Annual Report.PDF", "notes.txt", "ghost"}},
		{"contains(tags,report)", []string{"Annual Report.PDF"}},
		{"excludes(tags,report)", []string{"report.pdf", "notes.txt", "photo.png", "ghost"}},
		{"in(tags,(holiday,report))", []string{"Annual Report.PDF", "photo.png"}},
		{"out(tags,holiday,report)", []string{"report.pdf", "notes.txt", "ghost"}},
		{"in(mimetype,(application/pdf,image/png))", []string{"report.pdf", "Annual Report.PDF", "photo.png"}},
		{"out(mimetype,application/pdf)", []string{"notes.txt", "photo.png", "ghost"}},
		{"in(size,20,null)", []string{"notes.txt", "ghost"}},
		{"out(size,20,null)", []string{"report.pdf", "Annual Report.PDF", "photo.png"}},
		{"like(name,*report*)", []string{"report.pdf", "Annual Report.PDF"}},
		{"like(name,report)", []string{}},
		{"like(name,????s.txt)", []string{"notes.txt"}},
		{"like(name,*.P?F)", []string{"report.pdf", "Annual Report.PDF"}},
		{"like(name,a.c)", []string{}},
		{"like(tags,HOLI*)", []string{"photo.png"}},
		{"eq(mimetype,application/pdf)&gt(size,600)", []string{"Annual Report.PDF"}},
		{"eq(name,notes.txt)|eq(name,ghost)", []string{"notes.txt", "ghost"}},
		{"or(eq(size,20),and(contains(tags,2026),gt(size,1000)))", []string{"notes.txt", "photo.png"}},
		{"(eq(size,20)|eq(size,500))&excludes(tags,2026)", []string{"notes.txt"}},
		{"name=ghost", []string{"ghost"}},
		{"size=gt=1000&tags=in=(holiday)", []string{"photo.png"}},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			q, err := Parse(tt.raw, fileFields())
			if err != nil {
				t.Fatal(err)
			}
			var got []rec
			for _, r := range testRecords() {
				if q.Match(r) {
					got = append(got, r)
				}
			}
			if !slices.Equal(names(got), tt.want) {
				t.Fatalf("%q matches %q, want %q", tt.raw, names(got), tt.want)
			}
		})
	}
}

func TestMatchWrongType(t *testing.T) {
	q, err := Parse("ne(size,5)&ne(creationTimestamp,2026-01-01)&excludes(tags,a)", fileFields())
	if err != nil {
		t.Fatal(err)
	}
	// Values of the wrong Go type count as missing: no comparison matches them, negations do.
	bad := rec{"size": "5", "creationTimestamp": "2026-01-01", "tags": "a"}
	if !q.Match(bad) {
		t.Fatalf("%v should match negations as if its fields were missing", bad)
	}
	if eq, _ := Parse("eq(size,5)", fileFields()); eq.Match(bad) {
		t.Fatalf("eq matches a value of the wrong type")
	}
}

func TestPage(t *testing.T) {
	tests := []struct {
		raw                  string
		want                 []string
		total, limit, offset int
	}{
		{"", []string{"report.pdf", "Annual Report.PDF", "notes.txt", "photo.png", "ghost"}, 5, 20, 0},
		{"sort(+size)", []string{"ghost", "notes.txt", "report.pdf", "Annual Report.PDF", "photo.png"}, 5, 20, 0},
		{"sort(-size)", []string{"photo.png", "Annual Report.PDF", "report.pdf", "notes.txt", "ghost"}, 5, 20, 0},
		{"sort(name)", []string{"Annual Report.PDF", "ghost", "notes.txt", "photo.png", "report.pdf"}, 5, 20, 0},
		{"sort(-creationTimestamp)", []string{"photo.png", "Annual Report.PDF", "notes.txt", "report.pdf", "ghost"}, 5, 20, 0},
		{"sort(mimetype,-size)", []string{"ghost", "Annual Report.PDF", "report.pdf", "photo.png", "notes.txt"}, 5, 20, 0},
		{"sort(-mimetype,size)", []string{"notes.txt", "photo.png", "report.pdf", "Annual Report.PDF", "ghost"}, 5, 20, 0},
		{"sort(+mimetype)", []string{"ghost", "report.pdf", "Annual Report.PDF", "photo.png", "notes.txt"}, 5, 20, 0},
		{"sort(+size)&limit(2)", []string{"ghost", "notes.txt"}, 5, 2, 0},
		{"sort(+size)&limit(2,2)", []string{"report.pdf", "Annual Report.PDF"}, 5, 2, 2},
		{"sort(+size)&limit(2,4)", []string{"photo.png"}, 5, 2, 4},
		{"sort(+size)&limit(2,5)", []string{}, 5, 2, 5},
		{"limit(10,1000)", []string{}, 5, 10, 1000},
		{"gt(size,100)&sort(-size)&limit(1,1)", []string{"Annual Report.PDF"}, 3, 1, 1},
		{"limit(500)", []string{"report.pdf", "Annual Report.PDF", "notes.txt", "photo.png", "ghost"}, 5, 50, 0},
		{"eq(name,nothing)", []string{}, 0, 20, 0},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			q, err := Parse(tt.raw, fileFields())
			if err != nil {
				t.Fatal(err)
			}
			records := testRecords()
			before := names(records)
			page, total, limit, offset := Page(q, records)
			if page == nil {
				t.Fatal("page is nil; the API needs an empty list")
			}
			if !slices.Equal(names(page), tt.want) || total != tt.total || limit != tt.limit || offset != tt.offset {
				t.Fatalf("Page = %q total %d limit %d offset %d, want %q total %d limit %d offset %d",
					names(page), total, limit, offset, tt.want, tt.total, tt.limit, tt.offset)
			}
			if !slices.Equal(names(records), before) {
				t.Fatalf("Page reordered its input: %q", names(records))
			}
		})
	}
}

func TestPageLimits(t *testing.T) {
	records := make([]rec, 120)
	for i := range records {
		records[i] = rec{"name": fmt.Sprintf("f%03d", i), "size": int64(i % 7)}
	}
	tests := []struct {
		name          string
		q             Query
		first         string
		n, limit, off int
	}{
		{"default", Query{}, "f000", 20, 20, 0},
		{"clamped", Query{Limit: 500}, "f000", 50, 50, 0},
		{"negative", Query{Limit: -3, Offset: -1}, "f000", 1, 1, 0},
		{"sdk second page", Query{Limit: 50, Offset: 50}, "f050", 50, 50, 50},
		{"sdk last page", Query{Limit: 50, Offset: 100}, "f100", 20, 50, 100},
		// Equal sizes keep the input order: the stable tie-break.
		{"stable sort", Query{Sort: []SortKey{{Field: "size", Desc: true}}, Limit: 3}, "f006", 3, 3, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			page, total, limit, off := Page(tt.q, records)
			if total != len(records) || len(page) != tt.n || limit != tt.limit || off != tt.off || page[0]["name"] != tt.first {
				t.Fatalf("Page = %d records from %v, total %d limit %d offset %d", len(page), page[0]["name"], total, limit, off)
			}
			if tt.name == "stable sort" && names(page)[1] != "f013" {
				t.Fatalf("ties not in input order: %q", names(page))
			}
		})
	}
}

func TestLessMixedTypes(t *testing.T) {
	q := Query{Sort: []SortKey{{Field: "v"}}}
	// Missing, numbers, strings, times and lists, in that order, whatever the field.
	ordered := []rec{{}, {"v": int64(-1)}, {"v": 0.5}, {"v": 2}, {"v": "a"}, {"v": "b"}, {"v": day(1)}, {"v": day(2)}, {"v": []string{"a"}}, {"v": []string{"b"}}}
	for i := range ordered {
		for j := range ordered {
			if got := q.Less(ordered[i], ordered[j]); got != (i < j) {
				t.Errorf("Less(%v, %v) = %v", ordered[i], ordered[j], got)
			}
		}
	}
}
