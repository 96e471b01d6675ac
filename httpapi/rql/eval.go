package rql

import (
	"cmp"
	"slices"
	"strings"
	"time"
)

type op int

// The operators a condition can have; ne, out and excludes are the negations of eq, in and
// contains. Ordering operators come last so that a range check finds them.
const (
	opEq op = iota
	opIn
	opContains
	opLike
	opGt
	opGe
	opLt
	opLe
)

func lookupOp(name string) (o op, neg, ok bool) {
	switch name {
	case "eq":
		return opEq, false, true
	case "ne":
		return opEq, true, true
	case "in":
		return opIn, false, true
	case "out":
		return opIn, true, true
	case "contains":
		return opContains, false, true
	case "excludes":
		return opContains, true, true
	case "like":
		return opLike, false, true
	case "gt":
		return opGt, false, true
	case "ge":
		return opGe, false, true
	case "lt":
		return opLt, false, true
	case "le":
		return opLe, false, true
	}
	return 0, false, false
}

// number keeps integers exact and falls back to float64 when either side is fractional.
type number struct {
	i     int64
	f     float64
	isInt bool
}

func (n number) float() float64 {
	if n.isInt {
		return float64(n.i)
	}
	return n.f
}

func (n number) compare(m number) int {
	if n.isInt && m.isInt {
		return cmp.Compare(n.i, m.i)
	}
	return cmp.Compare(n.float(), m.float())
}

// value is a typed query value or a record's value of one field; which member counts follows from
// the field's Kind.
type value struct {
	null bool
	str  string
	num  number
	time time.Time
}

func compareValues(kind Kind, a, b value) int {
	switch kind {
	case KindNumber:
		return a.num.compare(b.num)
	case KindTime:
		return a.time.Compare(b.time)
	}
	return strings.Compare(a.str, b.str)
}

// scalar reads a record's value as kind (the element kind for lists); ok is false when it is
// missing or of another type.
func scalar(kind Kind, raw any) (value, bool) {
	switch kind {
	case KindString, KindStringList:
		s, ok := raw.(string)
		return value{str: s}, ok
	case KindNumber:
		switch n := raw.(type) {
		case int64:
			return value{num: number{i: n, isInt: true}}, true
		case int:
			return value{num: number{i: int64(n), isInt: true}}, true
		case float64:
			return value{num: number{f: n}}, true
		}
	case KindTime:
		t, ok := raw.(time.Time)
		return value{time: t}, ok
	}
	return value{}, false
}

type logic struct {
	or   bool
	args []Node
}

func (l *logic) match(rec Record) bool {
	for _, a := range l.args {
		if a.match(rec) == l.or {
			return l.or
		}
	}
	return !l.or
}

// cond is one comparison of a field with values.
type cond struct {
	name  string // the operator as written, for String
	op    op
	neg   bool
	field string
	kind  Kind
	vals  []value
	like  *likeMatcher
}

func (c *cond) match(rec Record) bool {
	raw, ok := rec.Field(c.field)
	if !ok {
		raw = nil
	}
	return c.test(raw) != c.neg
}

// test evaluates the positive operator; a list matches when an element does, and a missing value
// matches only eq or in with null.
func (c *cond) test(raw any) bool {
	if c.kind == KindStringList {
		list, _ := raw.([]string)
		for _, e := range list {
			if c.testScalar(value{str: e}) {
				return true
			}
		}
		return false
	}
	x, ok := scalar(c.kind, raw)
	if !ok {
		return (c.op == opEq || c.op == opIn) && slices.ContainsFunc(c.vals, func(v value) bool { return v.null })
	}
	return c.testScalar(x)
}

func (c *cond) testScalar(x value) bool {
	switch c.op {
	case opLike:
		return c.like.match(x.str)
	case opGt:
		return compareValues(c.kind, x, c.vals[0]) > 0
	case opGe:
		return compareValues(c.kind, x, c.vals[0]) >= 0
	case opLt:
		return compareValues(c.kind, x, c.vals[0]) < 0
	case opLe:
		return compareValues(c.kind, x, c.vals[0]) <= 0
	}
	for _, v := range c.vals {
		if !v.null && compareValues(c.kind, x, v) == 0 {
			return true
		}
	}
	return false
}

// Match reports whether rec satisfies q.Filter.
func (q Query) Match(rec Record) bool {
	return q.Filter == nil || q.Filter.match(rec)
}

// Less orders two records by q.Sort (stable tie-break is the caller's business). A missing value
// sorts before any other, as null does in the reference service's store.
func (q Query) Less(a, b Record) bool {
	return q.compare(a, b) < 0
}

func (q Query) compare(a, b Record) int {
	for _, k := range q.Sort {
		c := compareKeys(sortValue(a.Field(k.Field)), sortValue(b.Field(k.Field)))
		if c != 0 {
			return descending(c, k.Desc)
		}
	}
	return 0
}

func descending(c int, desc bool) int {
	if desc {
		return -c
	}
	return c
}

// sortKey is a record's value of one sort field, ranked by its dynamic type, since a hand-built
// Query carries no kinds: missing, then numbers, strings, times and lists, each among themselves
// by value.
type sortKey struct {
	rank int
	v    value
	list []string
}

func sortValue(raw any, ok bool) sortKey {
	if !ok {
		return sortKey{}
	}
	switch r := raw.(type) {
	case int64, int, float64:
		v, _ := scalar(KindNumber, raw)
		return sortKey{rank: 1, v: v}
	case string:
		return sortKey{rank: 2, v: value{str: r}}
	case time.Time:
		return sortKey{rank: 3, v: value{time: r}}
	case []string:
		return sortKey{rank: 4, list: r}
	}
	return sortKey{}
}

func compareKeys(a, b sortKey) int {
	if a.rank != b.rank {
		return cmp.Compare(a.rank, b.rank)
	}
	switch a.rank {
	case 1:
		return a.v.num.compare(b.v.num)
	case 2:
		return strings.Compare(a.v.str, b.v.str)
	case 3:
		return a.v.time.Compare(b.v.time)
	case 4:
		return slices.Compare(a.list, b.list)
	}
	return 0
}

// Page applies Filter, Sort, Offset and Limit (default 20, clamped to 50) to records and returns the
// page plus the total number matching (before paging), which the API reports as page.total. Records
// that sort equal keep their order in records. The page is a new slice, never nil, and records is
// left as it was. It is a Pager fed from a slice.
func Page[R Record](q Query, records []R) (page []R, total int, limit, offset int) {
	p := NewPager[R](q)
	for _, r := range records {
		p.Add(r)
	}
	return p.Page()
}
