package rql_test

import (
	"fmt"

	"github.com/cairn-dev/cairn/httpapi/rql"
)

type file struct {
	name string
	size int64
	tags []string
}

func (f file) Field(name string) (any, bool) {
	switch name {
	case "name":
		return f.name, true
	case "size":
		return f.size, true
	case "tags":
		return f.tags, true
	}
	return nil, false
}

func ExamplePage() {
	fields := rql.Fields{"name": rql.KindString, "size": rql.KindNumber, "tags": rql.KindStringList}
	// As r.URL.RawQuery carries it from the SDK: the space in "my report" is encoded twice.
	q, err := rql.Parse("or(eq(name,my%2520report),eq(tags,ecg))&sort(-size)&limit(50)", fields)
	if err != nil {
		fmt.Println(err)
		return
	}
	files := []file{
		{"my report", 10, nil},
		{"scan", 300, []string{"ecg"}},
		{"other", 20, []string{"misc"}},
	}
	page, total, limit, offset := rql.Page(q, files)
	for _, f := range page {
		fmt.Println(f.name)
	}
	fmt.Println(total, limit, offset)

	_, err = rql.Parse("eq(owner,x)", fields)
	fmt.Println(err)
	// Output:
	// scan
	// my report
	// 2 50 0
	// invalid RQL: unknown field "owner" at position 3
}
