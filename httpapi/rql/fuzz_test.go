package rql

import (
	"errors"
	"strings"
	"testing"
)

func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"", "eq(name,report.pdf)&gt(size,100)", "or(eq(size,1),eq(size,2))", "in(tags,(a,b))", "in(tags,a,b)",
		"out(size,1,null)", "like(name,*rep?rt*)", "contains(tags,x)&excludes(tags,y)", "ne(name,a)|lt(size,1.5e3)",
		"limit(50,50)&sort(+name,-size)&select(name,tags)", "name=x&size=ge=10", "(eq(name,a)|eq(name,b))&le(size,3)",
		"eq(name,my%2520file.txt)", "eq(name,a+b)", "gt(creationTimestamp,2026-02-09T11%253A03%253A27.179Z)",
		"ge(updateTimestamp,epoch:0)", "eq(name,string:null)", "in(name,())", "eq(name,)", "and(and(eq(name,a)))",
		"eq(name,a", "foo(x)", "eq(size,abc)", strings.Repeat("and(", 40),
	} {
		f.Add(seed)
	}
	records := append(testRecords(), rec{
		"name": "all", "mimetype": "", "creatorId": "c", "size": -1.5, "tags": []string{"", "null"},
		"creationTimestamp": day(9), "updateTimestamp": day(10),
	})
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := Parse(raw, fileFields())
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse(%q) error %v does not wrap ErrInvalid", raw, err)
			}
			return
		}
		page, total, limit, _ := Page(q, records)
		if len(page) > limit || total > len(records) || limit < 1 || limit > MaxLimit {
			t.Fatalf("Page gave %d records, total %d, limit %d", len(page), total, limit)
		}
		for _, r := range records {
			_ = q.Less(r, records[0])
		}
		s := q.String()
		if len(s) > MaxQueryLen {
			return // the rendering encodes values twice and may outgrow the limit
		}
		again, err := Parse(s, fileFields())
		if err != nil {
			t.Fatalf("Parse(%q) accepted, its rendering %q is not: %v", raw, s, err)
		}
		if s2 := again.String(); s2 != s {
			t.Fatalf("Parse(%q) renders %q, which renders %q", raw, s, s2)
		}
		for _, r := range records {
			if q.Match(r) != again.Match(r) {
				t.Fatalf("Parse(%q) and its rendering %q disagree on %v", raw, s, r)
			}
		}
	})
}
