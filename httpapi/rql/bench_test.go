package rql

import (
	"fmt"
	"testing"
	"time"
)

// fileRecord is a struct record like the handler's, so that the benchmark sees realistic Field costs.
type fileRecord struct {
	name, mimetype string
	size           int64
	tags           []string
	created        time.Time
}

func (f *fileRecord) Field(name string) (any, bool) {
	switch name {
	case "name":
		return f.name, true
	case "mimetype":
		return f.mimetype, true
	case "size":
		return f.size, true
	case "tags":
		return f.tags, true
	case "creationTimestamp":
		return f.created, true
	}
	return nil, false
}

func BenchmarkParse(b *testing.B) {
	const raw = "and(like(name,*report*),in(tags,(ecg-report,holiday)),gt(size,100))" +
		"&ge(creationTimestamp,2026-02-09T11%253A03%253A27.179Z)&sort(-creationTimestamp,+name)&limit(50,50)"
	fields := fileFields()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(raw, fields); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPage(b *testing.B) {
	mimetypes := []string{"application/pdf", "image/png", "text/plain"}
	records := make([]*fileRecord, 10000)
	for i := range records {
		records[i] = &fileRecord{
			name:     fmt.Sprintf("file-%05d.bin", (i*7919)%10000),
			mimetype: mimetypes[i%3],
			size:     int64((i * 104729) % 100000),
			tags:     []string{fmt.Sprintf("t%d", i%10), "all"},
			created:  time.Unix(int64(i), 0),
		}
	}
	for _, bc := range []struct{ name, raw string }{
		{"all", "limit(50)"},
		{"filter", "eq(mimetype,image/png)&contains(tags,t3)&limit(50)"},
		{"sort", "sort(mimetype,-size)&limit(50,500)"},
		{"like-sort", "like(name,*-1*)&sort(-creationTimestamp)&limit(50)"},
	} {
		q, err := Parse(bc.raw, fileFields())
		if err != nil {
			b.Fatal(err)
		}
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Page(q, records)
			}
		})
	}
}
