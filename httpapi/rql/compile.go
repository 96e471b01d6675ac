package rql

import (
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// compiler turns the syntax tree into a Query: it resolves operators and fields and types values.
type compiler struct {
	fields Fields
}

// top compiles the top level: conditions joined by sep, and the shape calls limit, sort and select,
// of which the last one of each wins, as in the reference parser.
func (c *compiler) top(items []*syntax, sep byte) (Query, error) {
	var q Query
	var filters []Node
	for _, it := range items {
		if it.kind == synValue && it.text == "" {
			continue // tolerate "&&" and a leading or trailing '&'
		}
		if it.kind == synCall && (it.text == "limit" || it.text == "sort" || it.text == "select") {
			if sep == '|' {
				return Query{}, invalidf("%s() at position %d cannot be joined with '|'", it.text, it.pos)
			}
			if err := c.shape(&q, it); err != nil {
				return Query{}, err
			}
			continue
		}
		n, err := c.filter(it)
		if err != nil {
			return Query{}, err
		}
		filters = append(filters, n)
	}
	switch {
	case len(filters) == 1:
		q.Filter = filters[0]
	case len(filters) > 1:
		q.Filter = &logic{or: sep == '|', args: filters}
	}
	return q, nil
}

func (c *compiler) shape(q *Query, call *syntax) error {
	args := call.args
	switch call.text {
	case "limit":
		if len(args) < 1 || len(args) > 2 {
			return invalidf("limit() at position %d takes a count and an optional offset, got %d arguments", call.pos, len(args))
		}
		n, err := c.count(args[0])
		if err != nil {
			return err
		}
		q.Limit = min(max(n, 1), MaxLimit)
		q.Offset = 0
		if len(args) == 2 {
			if q.Offset, err = c.count(args[1]); err != nil {
				return err
			}
		}
	case "sort":
		if len(args) == 0 {
			return invalidf("sort() at position %d needs at least one field", call.pos)
		}
		q.Sort = make([]SortKey, 0, len(args))
		for _, a := range args {
			var key SortKey
			if a.kind == synValue && a.text != "" && (a.text[0] == '+' || a.text[0] == '-') {
				key.Desc = a.text[0] == '-'
				a = &syntax{kind: synValue, text: a.text[1:], pos: a.pos + 1}
			}
			name, kind, err := c.field(a)
			if err != nil {
				return err
			}
			if kind == KindStringList {
				return invalidf("cannot sort by the list field %q", name)
			}
			key.Field = name
			q.Sort = append(q.Sort, key)
		}
	case "select":
		if len(args) == 0 {
			return invalidf("select() at position %d needs at least one field", call.pos)
		}
		q.Select = make([]string, 0, len(args))
		for _, a := range args {
			name, _, err := c.field(a)
			if err != nil {
				return err
			}
			q.Select = append(q.Select, name)
		}
	}
	return nil
}

// count reads a non-negative integer argument of limit().
func (c *compiler) count(arg *syntax) (int, error) {
	s, err := c.text(arg)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, invalidf("bad number %q at position %d: want a non-negative integer", s, arg.pos)
	}
	return n, nil
}

func (c *compiler) filter(it *syntax) (Node, error) {
	switch it.kind {
	case synValue:
		return nil, invalidf("expected a call such as eq(field,value) at position %d, found %q", it.pos, it.text)
	case synParen:
		if it.sep == ',' {
			return nil, invalidf("unexpected ',' in the group at position %d: join conditions with '&' or '|'", it.pos)
		}
		if len(it.args) == 0 {
			return nil, invalidf("empty group at position %d", it.pos)
		}
		return c.logic(it.sep == '|', it.args)
	}
	switch it.text {
	case "and", "or":
		if len(it.args) == 0 {
			return nil, invalidf("%s() at position %d needs at least one condition", it.text, it.pos)
		}
		return c.logic(it.text == "or", it.args)
	case "limit", "sort", "select":
		return nil, invalidf("%s() at position %d is only allowed at the top level", it.text, it.pos)
	}
	return c.condition(it)
}

// logic compiles the conditions of a group; a group of one is that condition.
func (c *compiler) logic(or bool, items []*syntax) (Node, error) {
	args := make([]Node, 0, len(items))
	for _, it := range items {
		n, err := c.filter(it)
		if err != nil {
			return nil, err
		}
		args = append(args, n)
	}
	if len(args) == 1 {
		return args[0], nil
	}
	return &logic{or: or, args: args}, nil
}

func (c *compiler) condition(call *syntax) (Node, error) {
	op, neg, ok := lookupOp(call.text)
	if !ok {
		return nil, invalidf("unknown operator %q at position %d", call.text, call.pos)
	}
	switch {
	case op == opIn && len(call.args) < 2:
		return nil, invalidf("%s() at position %d takes a field and values, got %d arguments", call.text, call.pos, len(call.args))
	case op != opIn && len(call.args) != 2:
		return nil, invalidf("%s() at position %d takes a field and a value, got %d arguments", call.text, call.pos, len(call.args))
	}
	field, kind, err := c.field(call.args[0])
	if err != nil {
		return nil, err
	}
	switch {
	case op == opContains && kind != KindStringList:
		return nil, invalidf("%s() needs a list field; %q is a %s", call.text, field, kind)
	case op == opLike && kind != KindString && kind != KindStringList:
		return nil, invalidf("like() needs a string field; %q is a %s", field, kind)
	case op >= opGt && kind == KindStringList:
		return nil, invalidf("%s() cannot compare the list field %q", call.text, field)
	}
	n := &cond{name: call.text, op: op, neg: neg, field: field, kind: kind}
	for _, a := range call.args[1:] {
		if a.kind == synParen && op == opIn {
			for _, e := range a.args {
				if err := n.addValue(c, e); err != nil {
					return nil, err
				}
			}
			continue
		}
		if err := n.addValue(c, a); err != nil {
			return nil, err
		}
	}
	if op == opLike {
		n.like = compileLike(n.vals[0].str)
	}
	return n, nil
}

func (n *cond) addValue(c *compiler, arg *syntax) error {
	v, err := c.value(arg, n.field, n.kind)
	if err != nil {
		return err
	}
	if v.null && n.op != opEq && n.op != opIn {
		return invalidf("null at position %d: only eq, ne, in and out take null", arg.pos)
	}
	n.vals = append(n.vals, v)
	return nil
}

// field resolves a field name argument.
func (c *compiler) field(arg *syntax) (string, Kind, error) {
	name, err := c.text(arg)
	if err != nil {
		return "", 0, err
	}
	kind, ok := c.fields[name]
	if !ok {
		return "", 0, invalidf("unknown field %q at position %d", name, arg.pos)
	}
	return name, kind, nil
}

// text is the value of a bare-word argument after the second percent-decoding.
func (c *compiler) text(arg *syntax) (string, error) {
	if arg.kind != synValue {
		return "", invalidf("expected a value at position %d, found a call or group", arg.pos)
	}
	return unescape(arg.text, arg.pos)
}

func unescape(s string, pos int) (string, error) {
	v, err := url.PathUnescape(s)
	if err != nil {
		return "", invalidf("bad percent-encoding in the value at position %d: %v", pos, err)
	}
	if !utf8.ValidString(v) {
		return "", invalidf("the value at position %d is not valid UTF-8", pos)
	}
	return v, nil
}

// value types a value argument by the kind of its field. A prefix "conv:" names a converter of the
// reference parser (string, number, date, isodate, epoch, auto); any other prefix is part of the
// value, so that a hand-typed timestamp with colons still works.
func (c *compiler) value(arg *syntax, field string, kind Kind) (value, error) {
	if arg.kind != synValue {
		return value{}, invalidf("expected a value at position %d, found a call or group", arg.pos)
	}
	conv, raw := "auto", arg.text
	if name, rest, ok := strings.Cut(raw, ":"); ok {
		switch name {
		case "auto", "string", "number", "date", "isodate", "epoch":
			conv, raw = name, rest
		}
	}
	s, err := unescape(raw, arg.pos)
	if err != nil {
		return value{}, err
	}
	fits := conv == "auto"
	switch kind {
	case KindString, KindStringList:
		fits = fits || conv == "string"
	case KindNumber:
		fits = fits || conv == "number"
	case KindTime:
		fits = fits || conv == "date" || conv == "isodate" || conv == "epoch"
	}
	if !fits {
		return value{}, invalidf("converter %s: does not fit the %s field %q at position %d", conv, kind, field, arg.pos)
	}
	switch {
	case kind == KindString || kind == KindStringList:
		return value{str: s}, nil
	case conv == "auto" && s == "null":
		return value{null: true}, nil
	case kind == KindNumber:
		num, ok := parseNumber(s)
		if !ok {
			return value{}, invalidf("bad number %q for the field %q at position %d", s, field, arg.pos)
		}
		return value{num: num}, nil
	case kind == KindTime:
		t, ok := parseTime(s, conv == "epoch")
		if !ok {
			return value{}, invalidf("bad timestamp %q for the field %q at position %d: want ISO-8601", s, field, arg.pos)
		}
		return value{time: t}, nil
	}
	return value{}, invalidf("field %q has the unsupported kind %s", field, kind)
}

func parseNumber(s string) (number, bool) {
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return number{i: i, isInt: true}, true
	}
	// ParseFloat alone would also take "Inf", "NaN", hex and underscores.
	if s == "" || strings.Trim(s, "0123456789.eE+-") != "" {
		return number{}, false
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) {
		return number{}, false
	}
	return number{f: f}, true
}

func parseTime(s string, epochMillis bool) (time.Time, bool) {
	var t time.Time
	if epochMillis {
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return time.Time{}, false
		}
		t = time.UnixMilli(ms)
	} else {
		var err error
		// The ISO-8601 forms accepted; a time without a zone is UTC.
		for _, layout := range [...]string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02"} {
			if t, err = time.Parse(layout, s); err == nil {
				break
			}
		}
		if err != nil {
			return time.Time{}, false
		}
	}
	t = t.UTC()
	// Beyond four-digit years ISO-8601 needs an extension that neither side speaks.
	return t, t.Year() >= 0 && t.Year() <= 9999
}
