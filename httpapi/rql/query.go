package rql

import (
	"errors"
	"fmt"
	"net/url"
)

// Bounds on outside input. They keep parsing linear and shallow whatever a client sends.
const (
	// MaxQueryLen is the longest raw query string Parse accepts, in bytes.
	MaxQueryLen = 8 << 10
	// MaxDepth is how deeply calls and parentheses may nest.
	MaxDepth = 32
	// MaxNodes is how many calls, groups and values a query may hold.
	MaxNodes = 1000
	// DefaultLimit is the page size when the query has no limit().
	DefaultLimit = 20
	// MaxLimit is the largest page size; larger limits are clamped to it rather than refused.
	MaxLimit = 50
)

// ErrInvalid is wrapped by every error Parse returns; the API answers it with error 19
// (INVALID_RQL_EXCEPTION). The wrapping message says what is wrong and where.
var ErrInvalid = errors.New("invalid RQL")

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Kind is the type of a queryable field. It decides how a query's values are typed, which
// operators apply, and what Record.Field must return for that field.
type Kind int

// The field kinds. Record.Field returns a string, an int64 or float64 (int is tolerated), a
// time.Time or a []string for them respectively.
const (
	KindString Kind = iota
	KindNumber
	KindTime
	KindStringList
)

// String names the kind for error messages.
func (k Kind) String() string {
	switch k {
	case KindString:
		return "string"
	case KindNumber:
		return "number"
	case KindTime:
		return "timestamp"
	case KindStringList:
		return "string list"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Fields declares the queryable fields and their kinds, so that Parse can type values and reject
// unknown fields.
type Fields map[string]Kind

// Record gives the value of a field of one item: string, int64/float64, time.Time or []string,
// according to the field's Kind. ok is false when the item has no such value; a value of another
// type counts as missing too.
type Record interface {
	Field(name string) (v any, ok bool)
}

// SortKey is one key of sort(): a field, ascending unless Desc.
type SortKey struct {
	Field string
	Desc  bool
}

// Node is the filter part of a parsed query. Its concrete types are private: evaluate it with
// Query.Match and print it with Query.String.
type Node interface {
	match(rec Record) bool
	format(b []byte) []byte
}

// Query is a parsed RQL query.
type Query struct {
	// Filter selects records; nil matches everything.
	Filter Node
	// Sort orders records by its keys in order.
	Sort []SortKey
	// Limit is the page size: 0 when the query has no limit(), in which case DefaultLimit applies;
	// Parse clamps a given limit to [1, MaxLimit].
	Limit int
	// Offset is the number of matching records skipped before the page.
	Offset int
	// Select names the fields the client wants; nil when the query has no select().
	Select []string
}

// Parse parses a raw query string as found in URL.RawQuery. It percent-decodes the whole string
// once (a '+' stays a '+'), parses it, and percent-decodes each value once more, because the SDK
// encodes values twice. Values are typed by the kind of their field: a number for KindNumber, an
// ISO-8601 timestamp for KindTime, and always a string for string fields, so that "true", "false"
// and "null" stay strings there; on number and time fields null matches a missing value. Every
// error wraps ErrInvalid; positions in its message count bytes of the once-decoded query.
func Parse(rawQuery string, fields Fields) (Query, error) {
	if len(rawQuery) > MaxQueryLen {
		return Query{}, invalidf("query is %d bytes, longer than the limit of %d", len(rawQuery), MaxQueryLen)
	}
	s, err := url.PathUnescape(rawQuery)
	if err != nil {
		return Query{}, invalidf("bad percent-encoding: %v", err)
	}
	items, sep, err := parseSyntax(s)
	if err != nil {
		return Query{}, err
	}
	c := compiler{fields: fields}
	return c.top(items, sep)
}
