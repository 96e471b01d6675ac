package rql

import (
	"regexp"
	"strings"
	"testing"
)

// likeRegexp is the definition like() had as a regexp: the oracle the linear matcher must agree
// with.
func likeRegexp(p string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString(`(?is)^`)
	for _, r := range p {
		switch r {
		case '*':
			b.WriteString(`.*`)
		case '?':
			b.WriteString(`.`)
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString(`$`)
	return regexp.MustCompile(b.String())
}

func TestLikeMatchesTheRegexpDefinition(t *testing.T) {
	patterns := []string{"", "*", "**", "?", "a", "A", "*a", "a*", "*a*", "a*b", "a?c", "*?*", "??",
		"*report*", "*.P?F", "????s.txt", "a**b", "*ab*ab*", "*aab", "k*", "*S", "ǅ*", "*\uFFFD*",
		"*" + strings.Repeat("a?", 40) + "*", "*" + strings.Repeat("x", 70) + "*", strings.Repeat("?", 65) + "*",
		"*abcabd*", "ab*ba", "*a*a*a*b"}
	texts := []string{"", "a", "A", "ab", "abc", "aXc", "report.pdf", "Annual Report.PDF", "notes.txt",
		"KELVIN \u212a", "ſ", "s", "ǆ", "ǅx", "\xff\xfe", "abcabcabd", "aab", "aaab", "abba", "aba",
		"line\nbreak", strings.Repeat("a", 200), strings.Repeat("ab", 60), strings.Repeat("x", 80),
		strings.Repeat("a", 100) + "b"}
	for _, p := range patterns {
		re, m := likeRegexp(p), compileLike(p)
		for _, s := range texts {
			if got, want := m.match(s), re.MatchString(s); got != want {
				t.Errorf("like(%q) on %q = %v, the regexp says %v", p, s, got, want)
			}
		}
	}
}

func FuzzLikeMatchesTheRegexpDefinition(f *testing.F) {
	f.Add("*a?b*", "xxaybzz")
	f.Add("k*S", "\u212aſ")
	f.Add("*ab*ab", "abab")
	f.Fuzz(func(t *testing.T, p, s string) {
		if len(p) > 200 || len(s) > 2000 {
			return
		}
		if got, want := compileLike(p).match(s), likeRegexp(p).MatchString(s); got != want {
			t.Fatalf("like(%q) on %q = %v, the regexp says %v", p, s, got, want)
		}
	})
}

// TestLikeHostilePatterns sends what made the regexp take 35 s of CPU: long patterns of stars and
// wildcards against megabytes of near-matching text. Linear matching finishes these in
// milliseconds; a quadratic one would make the test's own timeout the failure.
func TestLikeHostilePatterns(t *testing.T) {
	text := strings.Repeat("a", 5<<20)
	for _, p := range []string{
		strings.Repeat("*a", 200) + "*b",
		"*" + strings.Repeat("a", 400) + "b*",
		"*" + strings.Repeat("a?", 200) + "b*",
		strings.Repeat("?", 400) + "*b",
	} {
		if compileLike(p).match(text) {
			t.Fatalf("like(%.20q...) matched a text without b", p)
		}
	}
	if !compileLike(strings.Repeat("*a", 200) + "*").match(text) {
		t.Fatal("like(*a*a...*) did not match a text of a's")
	}
}
