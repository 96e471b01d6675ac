package rql

import (
	"strconv"
	"strings"
	"time"
)

// String renders q as a raw query string that Parse reads back to an equal query: calls only (no
// shorthand), values encoded twice as the SDK does, a top-level and as '&'. It serves logs and the
// links a handler may build; for queries near MaxQueryLen the rendering can be longer than the
// input, because of the encoding.
func (q Query) String() string {
	var parts []string
	shaped := len(q.Sort) > 0 || len(q.Select) > 0 || q.Limit != 0 || q.Offset != 0
	if l, ok := q.Filter.(*logic); ok && (!l.or || !shaped) {
		// A top-level group renders as a plain chain, which keeps the nesting no deeper than the
		// parsed input was.
		sep := "&"
		if l.or {
			sep = "|"
		}
		var items []string
		for _, a := range l.args {
			items = append(items, string(a.format(nil)))
		}
		parts = append(parts, strings.Join(items, sep))
	} else if q.Filter != nil {
		parts = append(parts, string(q.Filter.format(nil)))
	}
	if len(q.Sort) > 0 {
		b := []byte("sort(")
		for i, k := range q.Sort {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, "+-"[boolIndex(k.Desc)])
			b = appendEscaped(b, k.Field)
		}
		parts = append(parts, string(append(b, ')')))
	}
	if len(q.Select) > 0 {
		b := []byte("select(")
		for i, f := range q.Select {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendEscaped(b, f)
		}
		parts = append(parts, string(append(b, ')')))
	}
	if q.Limit != 0 || q.Offset != 0 {
		limit := q.Limit
		if limit == 0 {
			limit = DefaultLimit
		}
		parts = append(parts, "limit("+strconv.Itoa(limit)+","+strconv.Itoa(q.Offset)+")")
	}
	return strings.Join(parts, "&")
}

func boolIndex(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (l *logic) format(b []byte) []byte {
	if l.or {
		b = append(b, "or("...)
	} else {
		b = append(b, "and("...)
	}
	for i, a := range l.args {
		if i > 0 {
			b = append(b, ',')
		}
		b = a.format(b)
	}
	return append(b, ')')
}

func (c *cond) format(b []byte) []byte {
	b = append(b, c.name...)
	b = append(b, '(')
	b = appendEscaped(b, c.field)
	if len(c.vals) == 0 {
		b = append(b, ",()"...) // in() and out() with an empty list
	}
	for _, v := range c.vals {
		b = append(b, ',')
		switch {
		case v.null:
			b = append(b, "null"...)
		case c.kind == KindNumber && v.num.isInt:
			b = strconv.AppendInt(b, v.num.i, 10)
		case c.kind == KindNumber:
			b = strconv.AppendFloat(b, v.num.f, 'g', -1, 64)
		case c.kind == KindTime:
			b = appendEscaped(b, v.time.UTC().Format(time.RFC3339Nano))
		default:
			b = appendEscaped(b, v.str)
		}
	}
	return append(b, ')')
}

// appendEscaped percent-encodes s twice, as the SDK does: every byte but letters, digits and
// "-._~*" is encoded (so nothing structural is left, and ':' cannot be read as a converter), then
// each '%' is encoded again. url.PathEscape and url.QueryEscape leave '&', '=' or '+' alone or
// turn ' ' into '+', so neither fits.
func appendEscaped(b []byte, s string) []byte {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~*", c) >= 0 {
			b = append(b, c)
			continue
		}
		b = append(b, '%', '2', '5', hex[c>>4], hex[c&15])
	}
	return b
}
