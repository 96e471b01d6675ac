package httpapi

import (
	"cmp"
	"fmt"
	"net/url"
	"regexp"
	"regexp/syntax"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cairn-dev/cairn/core"
)

// Bounds of a list query: they keep one request's filtering cost proportional to the listing.
const (
	maxFilterConditions = 64
	maxFilterRegexLen   = 256
	// maxFilterRegexInsts bounds the compiled size of every ~regex of one query together. RE2
	// matches in time proportional to the program times the text, and a counted repetition
	// copies its operand: ".{1000}" is 1002 instructions in 7 bytes, and 35 of them against one
	// 64 KiB filename cost 14 s of CPU. A 256-byte regex without counted repetition compiles to
	// about 260; every regex of one query shares the budget, as each runs against every file.
	maxFilterRegexInsts = 320
)

// fieldKind says how a filter key's = ! < > compare: as text, as an integer, or as an instant.
type fieldKind int

const (
	kindText fieldKind = iota
	kindInt
	kindTime
)

// filterField is one filterable key of FileDTO: how its operands parse and what values a file has
// for it (tags has several; every other key exactly one).
type filterField struct {
	kind   fieldKind
	values func(core.FileInfo) []string // as rendered in the DTO; ^ $ ~ match these
	number func(core.FileInfo) int64
	time   func(core.FileInfo) time.Time
}

// filterFields are the query keys of GET /api/v2/Files and /Own.
var filterFields = map[string]filterField{
	"createdAt": {kind: kindTime,
		values: func(f core.FileInfo) []string { return []string{enmeshedTime(f.CreatedAt)} },
		time:   func(f core.FileInfo) time.Time { return f.CreatedAt }},
	"createdBy": {values: func(f core.FileInfo) []string { return []string{f.CreatorID} }},
	"expiresAt": {kind: kindTime,
		values: func(f core.FileInfo) []string { return []string{enmeshedExpiry(f.ExpiresAt)} },
		time: func(f core.FileInfo) time.Time {
			if f.ExpiresAt.IsZero() {
				return neverExpiresTime
			}
			return f.ExpiresAt
		}},
	"filename": {values: func(f core.FileInfo) []string { return []string{f.Name} }},
	"filesize": {kind: kindInt,
		values: func(f core.FileInfo) []string { return []string{strconv.FormatInt(f.Size, 10)} },
		number: func(f core.FileInfo) int64 { return f.Size }},
	"mimetype": {values: func(f core.FileInfo) []string { return []string{f.MimeType} }},
	"title":    {values: func(f core.FileInfo) []string { return []string{f.Title} }},
	"tags":     {values: func(f core.FileInfo) []string { return f.Tags }},
	// Not in the written contract, but offered by the Connector SDK's GetOwnFilesRequest.
	"description":     {values: func(f core.FileInfo) []string { return []string{f.Description} }},
	"createdByDevice": {values: func(f core.FileInfo) []string { return []string{f.CreatedByNode} }},
}

var neverExpiresTime = time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)

// condition is one value of a query key: an operator (the value's prefix, '=' when it has none)
// and its operand, parsed once for the key's kind.
type condition struct {
	op      byte // = ! ^ $ ~ < >
	text    string
	re      *regexp.Regexp
	reInsts int // the size of re's compiled program, for maxFilterRegexInsts
	number  int64
	at      time.Time
}

// keyFilter is every condition given for one key; a file passes when any of them holds.
type keyFilter struct {
	field      filterField
	conditions []condition
}

// fileFilter is a parsed list query: a file passes when every key's filter passes.
type fileFilter []keyFilter

// parseFileFilter parses a raw query string in order, so that the first failure reported is the
// first one in the query. An unknown key is the Connector's additional-properties failure.
func parseFileFilter(rawQuery string) (fileFilter, error) {
	var (
		out        fileFilter
		index      = map[string]int{}
		n          int
		regexInsts int
	)
	for rest := rawQuery; rest != ""; {
		var pair string
		pair, rest, _ = strings.Cut(rest, "&")
		if pair == "" {
			continue
		}
		rawKey, rawValue, _ := strings.Cut(pair, "=")
		key, err1 := url.QueryUnescape(rawKey)
		value, err2 := url.QueryUnescape(rawValue)
		if err1 != nil || err2 != nil {
			return nil, invalidProperty("query must be URL-encoded")
		}
		field, ok := filterFields[key]
		if !ok {
			return nil, invalidProperty(unknownFilterMessage(key))
		}
		if n++; n > maxFilterConditions {
			return nil, invalidProperty(fmt.Sprintf("query must NOT have more than %d conditions", maxFilterConditions))
		}
		c, err := parseCondition(key, field.kind, value)
		if err != nil {
			return nil, err
		}
		if regexInsts += c.reInsts; regexInsts > maxFilterRegexInsts {
			return nil, invalidProperty(fmt.Sprintf("%s must be a simpler regular expression: a query's regular expressions compile to at most %d instructions together (a count such as {100} repeats what it counts)", key, maxFilterRegexInsts))
		}
		i, ok := index[key]
		if !ok {
			i = len(out)
			index[key] = i
			out = append(out, keyFilter{field: field})
		}
		out[i].conditions = append(out[i].conditions, c)
	}
	return out, nil
}

// parseCondition splits a value into its operator prefix and operand, and parses the operand.
func parseCondition(key string, kind fieldKind, value string) (condition, error) {
	c := condition{op: '=', text: value}
	if value != "" && strings.IndexByte("!^$~<>", value[0]) >= 0 {
		c.op, c.text = value[0], value[1:]
	}
	switch {
	case c.op == '~':
		if len(c.text) > maxFilterRegexLen {
			return condition{}, invalidProperty(fmt.Sprintf("%s must NOT have more than %d characters", key, maxFilterRegexLen))
		}
		// RE2 never backtracks, but its time is the program's size times the text, so the
		// program is measured here (as regexp.Compile builds it) before it runs on any file.
		parsed, err := syntax.Parse(c.text, syntax.Perl)
		if err != nil {
			return condition{}, invalidProperty(key + " must be a valid regular expression")
		}
		prog, err := syntax.Compile(parsed.Simplify())
		if err != nil {
			return condition{}, invalidProperty(key + " must be a valid regular expression")
		}
		if c.re, err = regexp.Compile(c.text); err != nil {
			return condition{}, invalidProperty(key + " must be a valid regular expression")
		}
		c.reInsts = len(prog.Inst)
	case c.op == '^' || c.op == '$':
	case kind == kindInt:
		v, err := strconv.ParseInt(c.text, 10, 64)
		if err != nil {
			return condition{}, invalidProperty(key + " must be integer")
		}
		c.number = v
	case kind == kindTime:
		t, ok := parseISO8601(c.text)
		if !ok {
			return condition{}, invalidProperty(key + " must match ISO8601 datetime format")
		}
		c.at = t
	}
	return c, nil
}

func (ff fileFilter) match(f core.FileInfo) bool {
	for _, kf := range ff {
		if !slices.ContainsFunc(kf.conditions, func(c condition) bool { return c.holds(kf.field, f) }) {
			return false
		}
	}
	return true
}

// holds applies c to f. On a key with several values (tags), ! means "none equals" and every other
// operator "some value satisfies", as a document query on an array does.
func (c condition) holds(field filterField, f core.FileInfo) bool {
	if c.op == '!' {
		return !condition{op: '=', text: c.text, number: c.number, at: c.at}.holds(field, f)
	}
	switch field.kind {
	case kindInt:
		if c.op == '=' || c.op == '<' || c.op == '>' {
			return compares(c.op, cmp.Compare(field.number(f), c.number))
		}
	case kindTime:
		if c.op == '=' || c.op == '<' || c.op == '>' {
			// Clients see milliseconds, so that is the precision they can ask for.
			return compares(c.op, field.time(f).Truncate(time.Millisecond).Compare(c.at))
		}
	}
	return slices.ContainsFunc(field.values(f), func(v string) bool {
		switch c.op {
		case '^':
			return strings.HasPrefix(v, c.text)
		case '$':
			return strings.HasSuffix(v, c.text)
		case '~':
			return c.re.MatchString(v)
		default:
			return compares(c.op, strings.Compare(v, c.text))
		}
	})
}

// compares reports whether a comparison result (-1, 0, 1) satisfies op (= < >).
func compares(op byte, result int) bool {
	switch op {
	case '<':
		return result < 0
	case '>':
		return result > 0
	default:
		return result == 0
	}
}

// filterKeyShape is what a key must look like to be quoted back in an error: a client's key is its
// own input, so only a short plain name is echoed, never arbitrary text.
var filterKeyShape = regexp.MustCompile(`^[A-Za-z0-9_.\[\]-]{1,64}$`)

// unknownFilterMessage is the Connector's additional-properties failure, naming the key and the
// keys that exist.
func unknownFilterMessage(key string) string {
	known := make([]string, 0, len(filterFields))
	for k := range filterFields {
		known = append(known, k)
	}
	slices.Sort(known)
	name := "an unknown key"
	if filterKeyShape.MatchString(key) {
		name = fmt.Sprintf("unknown key '%s'", key)
	}
	return fmt.Sprintf("query must NOT have additional properties: %s (known: %s)", name, strings.Join(known, ", "))
}
