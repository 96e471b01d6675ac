package core

import (
	"encoding/hex"
	"strings"
	"testing"
	"time"
)

func TestIDsKeepTheirShapeAndSortByTime(t *testing.T) {
	isAlnum := func(s string) bool {
		for i := 0; i < len(s); i++ {
			if !strings.ContainsRune(alnum, rune(s[i])) {
				return false
			}
		}
		return true
	}
	seen := map[string]bool{}
	for range 1000 {
		for _, id := range []string{NewFileID(), NewTokenID()} {
			if len(id) != 20 || !(strings.HasPrefix(id, "FIL") || strings.HasPrefix(id, "TOK")) || !isAlnum(id[3:]) {
				t.Fatalf("id %q is not the enmeshed shape", id)
			}
			if seen[id] {
				t.Fatalf("id %q minted twice", id)
			}
			seen[id] = true
		}
		r := newRequestID()
		if _, err := hex.DecodeString(r); err != nil || len(r) != 32 {
			t.Fatalf("request id %q is not 32 hex characters", r)
		}
	}

	// Ids of later seconds sort after ids of earlier ones, whatever their random part.
	times := []time.Time{
		time.Date(1999, 1, 1, 0, 0, 0, 0, time.UTC), // before the epoch: second 0
		idEpoch, idEpoch.Add(time.Second), idEpoch.Add(61 * time.Second), idEpoch.Add(62 * time.Second),
		time.Date(2026, 12, 2, 7, 0, 0, 0, time.UTC), time.Date(2026, 12, 2, 7, 0, 1, 0, time.UTC),
		time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), // past the range: the largest prefix
	}
	prev := ""
	for _, at := range times {
		id := timeOrderedAlnum(at)
		if len(id) != idTimeChars+idRandomChars || !isAlnum(id) {
			t.Fatalf("%v: %q is not 17 alphanumerics", at, id)
		}
		if id[:idTimeChars] < prev {
			t.Fatalf("%v: prefix %q sorts before the earlier %q", at, id[:idTimeChars], prev)
		}
		prev = id[:idTimeChars]
	}
	if a, b := timeOrderedAlnum(idEpoch), timeOrderedAlnum(idEpoch); a[:idTimeChars] != "000000" || a == b {
		t.Fatalf("ids of second 0: %q %q", a, b)
	}
	if got := timeOrderedAlnum(time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC))[:idTimeChars]; got != "zzzzzz" {
		t.Fatalf("past the range: prefix %q", got)
	}
}
