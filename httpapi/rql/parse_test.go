package rql

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// fileFields are the fields of FileMetadata, as the /files/v1 handler declares them.
func fileFields() Fields {
	return Fields{
		"name":              KindString,
		"mimetype":          KindString,
		"creatorId":         KindString,
		"size":              KindNumber,
		"tags":              KindStringList,
		"creationTimestamp": KindTime,
		"updateTimestamp":   KindTime,
	}
}

func TestParseCanonical(t *testing.T) {
	tests := []struct {
		name, raw, want string
	}{
		{"empty", "", ""},
		{"eq", "eq(name,report.pdf)", "eq(name,report.pdf)"},
		{"ne", "ne(name,x)", "ne(name,x)"},
		{"gt number", "gt(size,100)", "gt(size,100)"},
		{"ge float", "ge(size,1.5)", "ge(size,1.5)"},
		{"lt negative", "lt(size,-3)", "lt(size,-3)"},
		{"le exponent", "le(size,1e3)", "le(size,1000)"},
		{"in array", "in(tags,(a,b))", "in(tags,a,b)"},
		{"in values", "in(tags,a,b)", "in(tags,a,b)"},
		{"in empty array", "in(name,())", "in(name,())"},
		{"in mixed", "in(size,1,(2,3))", "in(size,1,2,3)"},
		{"out", "out(mimetype,(text/plain))", "out(mimetype,text%252Fplain)"},
		{"like", "like(name,*report*)", "like(name,*report*)"},
		{"like question mark", "like(name,r%253Fport)", "like(name,r%253Fport)"},
		{"contains", "contains(tags,x)", "contains(tags,x)"},
		{"excludes", "excludes(tags,x)", "excludes(tags,x)"},
		{"and chain", "eq(name,a)&gt(size,1)", "eq(name,a)&gt(size,1)"},
		{"or chain", "eq(name,a)|eq(name,b)", "eq(name,a)|eq(name,b)"},
		{"and call at top", "and(eq(name,a),gt(size,1))", "eq(name,a)&gt(size,1)"},
		{"or call with shape", "or(eq(name,a),eq(name,b))&limit(5)", "or(eq(name,a),eq(name,b))&limit(5,0)"},
		{"nested", "or(eq(size,1),and(eq(size,2),eq(name,x)))", "eq(size,1)|and(eq(size,2),eq(name,x))"},
		{"group", "(eq(name,a)|eq(name,b))&gt(size,1)", "or(eq(name,a),eq(name,b))&gt(size,1)"},
		{"group of one", "(eq(name,a))", "eq(name,a)"},
		{"and of one", "and(eq(name,a))", "eq(name,a)"},
		{"group in call", "and((eq(name,a)|eq(name,b)),gt(size,1))", "or(eq(name,a),eq(name,b))&gt(size,1)"},
		{"shorthand", "name=report.pdf", "eq(name,report.pdf)"},
		{"shorthand double", "name==x", "eq(name,x)"},
		{"shorthand ne", "name!=x", "ne(name,x)"},
		{"shorthand lt gt", "size<10&size>2", "lt(size,10)&gt(size,2)"},
		{"shorthand le ge", "size<=10&size>=2", "le(size,10)&ge(size,2)"},
		{"shorthand fiql", "size=gt=100", "gt(size,100)"},
		{"shorthand in", "tags=in=(a,b)", "in(tags,a,b)"},
		{"shorthand in call", "or(name=a,name=b)", "eq(name,a)|eq(name,b)"},
		{"bang in value", "eq(name,hi!)", "eq(name,hi%2521)"},
		{"limit", "limit(10)", "limit(10,0)"},
		{"limit offset", "limit(50,100)", "limit(50,100)"},
		{"limit clamped high", "limit(500)", "limit(50,0)"},
		{"limit clamped low", "limit(0)", "limit(1,0)"},
		{"last limit wins", "limit(5,5)&limit(7)", "limit(7,0)"},
		{"sort", "sort(+name,-size,creationTimestamp)", "sort(+name,-size,+creationTimestamp)"},
		{"select", "select(name,size)", "select(name,size)"},
		{"all shapes", "limit(2,4)&select(name)&sort(-size)&eq(name,a)", "eq(name,a)&sort(-size)&select(name)&limit(2,4)"},
		{"sdk double encoding", "eq(name,my%2520file.txt)", "eq(name,my%2520file.txt)"},
		{"single encoding", "eq(name,my%20file.txt)", "eq(name,my%2520file.txt)"},
		{"plus stays", "eq(name,a+b)", "eq(name,a%252Bb)"},
		{"encoded parenthesis", "eq(name,a%2528b%2529)", "eq(name,a%2528b%2529)"},
		{"encoded call", "eq%28name%2Cx%29", "eq(name,x)"},
		{"empty value", "eq(name,)", "eq(name,)"},
		{"true stays string", "eq(name,true)", "eq(name,true)"},
		{"null stays string", "eq(name,null)&eq(tags,null)", "eq(name,null)&eq(tags,null)"},
		{"null on number", "eq(size,null)", "eq(size,null)"},
		{"null in out", "out(creationTimestamp,null)", "out(creationTimestamp,null)"},
		{"time", "gt(creationTimestamp,2026-02-09T11%253A03%253A27.179Z)", "gt(creationTimestamp,2026-02-09T11%253A03%253A27.179Z)"},
		{"time hand typed", "gt(creationTimestamp,2026-02-09T11:03:27Z)", "gt(creationTimestamp,2026-02-09T11%253A03%253A27Z)"},
		{"time with offset", "lt(updateTimestamp,2026-02-09T12%253A00%253A00%252B01%253A00)", "lt(updateTimestamp,2026-02-09T11%253A00%253A00Z)"},
		{"date", "ge(creationTimestamp,2026-02-09)", "ge(creationTimestamp,2026-02-09T00%253A00%253A00Z)"},
		{"converter date", "ge(creationTimestamp,date:2026-02-09)", "ge(creationTimestamp,2026-02-09T00%253A00%253A00Z)"},
		{"converter epoch", "ge(creationTimestamp,epoch:1000)", "ge(creationTimestamp,1970-01-01T00%253A00%253A01Z)"},
		{"converter string", "eq(name,string:5)", "eq(name,5)"},
		{"converter number", "eq(size,number:5)", "eq(size,5)"},
		{"unknown prefix is value", "eq(name,a:b)", "eq(name,a%253Ab)"},
		{"stray ampersands", "&eq(name,a)&&limit(3)&", "eq(name,a)&limit(3,0)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := Parse(tt.raw, fileFields())
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.raw, err)
			}
			if got := q.String(); got != tt.want {
				t.Fatalf("Parse(%q).String() = %q, want %q", tt.raw, got, tt.want)
			}
			again, err := Parse(q.String(), fileFields())
			if err != nil || again.String() != tt.want {
				t.Fatalf("re-parse of %q = %q, %v", tt.want, again.String(), err)
			}
		})
	}
}

func TestParseShape(t *testing.T) {
	tests := []struct {
		raw           string
		limit, offset int
		sort          []SortKey
		sel           []string
	}{
		{raw: "eq(name,a)"},
		{raw: "limit(50,50)", limit: 50, offset: 50},
		{raw: "limit(500)", limit: 50},
		{raw: "sort(-size,name)", sort: []SortKey{{Field: "size", Desc: true}, {Field: "name"}}},
		{raw: "sort(%2Bname)", sort: []SortKey{{Field: "name"}}},
		{raw: "select(name,tags)&sort(+size)", sel: []string{"name", "tags"}, sort: []SortKey{{Field: "size"}}},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			q, err := Parse(tt.raw, fileFields())
			if err != nil {
				t.Fatal(err)
			}
			if q.Limit != tt.limit || q.Offset != tt.offset || !slices.Equal(q.Sort, tt.sort) || !slices.Equal(q.Select, tt.sel) {
				t.Fatalf("got limit %d offset %d sort %v select %v", q.Limit, q.Offset, q.Sort, q.Select)
			}
			if tt.sel == nil && q.Select != nil {
				t.Fatalf("Select = %v, want nil", q.Select)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, raw, want string
	}{
		{"missing close", "eq(name,a", "missing ')'"},
		{"missing close nested", "and(eq(name,a)", "missing ')'"},
		{"extra close", "eq(name,a))", "unexpected ')'"},
		{"close first", ")", "unexpected ')'"},
		{"unknown operator", "foo(name,a)", `unknown operator "foo"`},
		{"unknown fiql operator", "name=foo=a", `unknown operator "foo"`},
		{"unknown field", "eq(owner,a)", `unknown field "owner"`},
		{"unknown sort field", "sort(-owner)", `unknown field "owner"`},
		{"unknown select field", "select(name,owner)", `unknown field "owner"`},
		{"eq arity", "eq(name)", "takes a field and a value, got 1"},
		{"eq too many", "eq(name,a,b)", "got 3"},
		{"in arity", "in(tags)", "takes a field and values"},
		{"and empty", "and()", "needs at least one condition"},
		{"limit arity", "limit()", "limit() at position 0 takes a count"},
		{"limit too many", "limit(1,2,3)", "got 3 arguments"},
		{"sort empty", "sort()", "needs at least one field"},
		{"select empty", "select()", "needs at least one field"},
		{"bad number", "gt(size,12abc)", `bad number "12abc"`},
		{"infinity", "gt(size,Infinity)", "bad number"},
		{"nan", "gt(size,NaN)", "bad number"},
		{"hex", "gt(size,0x10)", "bad number"},
		{"true on number", "eq(size,true)", "bad number"},
		{"bad limit", "limit(ten)", `bad number "ten"`},
		{"negative limit", "limit(-1)", "bad number"},
		{"negative offset", "limit(5,-1)", "bad number"},
		{"bad timestamp", "gt(creationTimestamp,yesterday)", `bad timestamp "yesterday"`},
		{"far timestamp", "gt(creationTimestamp,epoch:999999999999999)", "bad timestamp"},
		{"converter mismatch", "eq(size,string:5)", "converter string: does not fit"},
		{"null in gt", "gt(size,null)", "only eq, ne, in and out take null"},
		{"mixed conjunctions", "eq(name,a)&eq(name,b)|eq(name,c)", "cannot mix"},
		{"limit in or chain", "eq(name,a)|limit(5)", "cannot be joined with '|'"},
		{"limit nested", "and(limit(5))", "only allowed at the top level"},
		{"bare value", "name", "expected a call"},
		{"comma group", "(eq(name,a),eq(name,b))", "unexpected ','"},
		{"empty group", "()", "empty group"},
		{"call as field", "eq(eq(name,a),b)", "expected a value"},
		{"array as value", "eq(name,(a,b))", "expected a value"},
		{"contains on string", "contains(name,a)", "needs a list field"},
		{"like on number", "like(size,1*)", "needs a string field"},
		{"gt on list", "gt(tags,a)", "cannot compare the list field"},
		{"sort by list", "sort(tags)", "cannot sort by the list field"},
		{"bad escape", "eq(name,%zz)", "bad percent-encoding"},
		{"bad inner escape", "eq(name,%25zz)", "bad percent-encoding in the value"},
		{"bad utf8", "eq(name,%25ff)", "not valid UTF-8"},
		{"control char", "eq(name,a%0Ab)", "illegal character"},
		{"ampersand in args", "eq(name&size)", "unexpected '&'"},
		{"junk after call", "eq(name,a)x", "unexpected 'x'"},
		{"too long", "eq(name," + strings.Repeat("a", MaxQueryLen) + ")", "longer than the limit"},
		{"too deep calls", strings.Repeat("and(", MaxDepth+1) + "eq(name,a)" + strings.Repeat(")", MaxDepth+1), "nesting deeper than 32"},
		{"too deep groups", strings.Repeat("(", 2000), "nesting deeper than 32"},
		{"deep nesting without length", strings.Repeat("and(", 10000), "longer than the limit"},
		{"too many nodes", "in(tags" + strings.Repeat(",a", MaxNodes) + ")", "more than 1000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := Parse(tt.raw, fileFields())
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse(%.60q) = %v, %v; want ErrInvalid", tt.raw, q, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse(%.60q) error %q does not say %q", tt.raw, err, tt.want)
			}
		})
	}
}

func TestParseLimits(t *testing.T) {
	nested := func(depth int) string {
		return strings.Repeat("and(", depth-1) + "eq(name,a)" + strings.Repeat(")", depth-1)
	}
	tests := []struct {
		name string
		raw  string
	}{
		{"max depth", nested(MaxDepth)},
		{"max nodes", "in(tags" + strings.Repeat(",a", MaxNodes-2) + ")"},
		{"max length", "eq(name," + strings.Repeat("a", MaxQueryLen-len("eq(name,)")) + ")"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse(tt.raw, fileFields()); err != nil {
				t.Fatalf("Parse at the limit: %v", err)
			}
		})
	}
}

func TestParseValues(t *testing.T) {
	ts := time.Date(2026, 2, 9, 11, 3, 27, 179e6, time.UTC)
	tests := []struct {
		raw   string
		match rec
		miss  rec
	}{
		{"eq(name,my%2520file.txt)", rec{"name": "my file.txt"}, rec{"name": "my%20file.txt"}},
		{"eq(name,a+b)", rec{"name": "a+b"}, rec{"name": "a b"}},
		{"eq(name,100%2525)", rec{"name": "100%"}, rec{"name": "100%25"}},
		{"eq(name,true)", rec{"name": "true"}, rec{}},
		{"eq(creationTimestamp,2026-02-09T11%253A03%253A27.179Z)", rec{"creationTimestamp": ts}, rec{"creationTimestamp": ts.Add(time.Millisecond)}},
		{"eq(creationTimestamp,epoch:1770635007179)", rec{"creationTimestamp": ts}, rec{"creationTimestamp": ts.Add(-time.Millisecond)}},
		{"eq(size,5)", rec{"size": 5.0}, rec{"size": int64(6)}},
		{"eq(size,9007199254740993)", rec{"size": int64(9007199254740993)}, rec{"size": int64(9007199254740992)}},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			q, err := Parse(tt.raw, fileFields())
			if err != nil {
				t.Fatal(err)
			}
			if !q.Match(tt.match) {
				t.Errorf("%q does not match %v", tt.raw, tt.match)
			}
			if q.Match(tt.miss) {
				t.Errorf("%q matches %v", tt.raw, tt.miss)
			}
		})
	}
}
