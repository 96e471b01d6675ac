package fsm

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

// TestRowCodecKnowsEveryField fails when File, Token, Layout or Segment gain or lose a field: the
// binary rows (rows.go) are positional, so the codec, and a new row version, must follow.
func TestRowCodecKnowsEveryField(t *testing.T) {
	for typ, fields := range map[reflect.Type]int{
		reflect.TypeFor[File](): 14, reflect.TypeFor[Token](): 8, reflect.TypeFor[Layout](): 3,
		reflect.TypeFor[Segment](): 3, reflect.TypeFor[requestRow](): 4,
	} {
		if got := typ.NumField(); got != fields {
			t.Errorf("%s has %d fields, the row codec knows %d: update rows.go with a new row version", typ, got, fields)
		}
	}
}

// TestRowCodecRoundTrip: a decoded row marshals to the same JSON as the original, which is what
// keeps snapshots byte-identical whether a replica applied the log or restored a snapshot.
func TestRowCodecRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	times := []time.Time{{}, t0, t0.Add(123456789), t0.In(time.FixedZone("", 3600)), t0.In(time.FixedZone("x", -7*3600-1800)),
		time.Date(1, 1, 1, 0, 0, 1, 0, time.UTC), time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)}
	pick := func() time.Time { return times[rng.IntN(len(times))] }
	for i := range 500 {
		f := file(fmt.Sprintf("FIL%d", i), int64(rng.IntN(1<<20)))
		f.ExpiresAt, f.CreatedAt, f.UpdatedAt = pick(), pick(), pick()
		switch i % 4 {
		case 0:
			f.Tags, f.ETag = nil, "not-a-hash"
		case 1:
			f.Tags, f.Layout.Segments = []string{}, []Segment{}
		case 2:
			f.Layout.Segments, f.Title, f.Description = nil, "t", "déjà vu"
		case 3:
			f.Layout.Segments = append(f.Layout.Segments, Segment{Offset: 100, Size: 0, Nodes: nil})
		}
		got, err := decodeFile(encodeFile(&f))
		if err != nil {
			t.Fatal(err)
		}
		if a, b := mustJSON(t, f), mustJSON(t, got); a != b {
			t.Fatalf("file %d:\n%s\n%s", i, a, b)
		}
		tk := tok(fmt.Sprintf("TOK%d", i), f.ID, AccessRead)
		tk.CreatedAt, tk.ExpiresAt, tk.CreatedBy = pick(), pick(), "n"+fmt.Sprint(i%3)
		gotTok, err := decodeToken(encodeToken(&tk))
		if err != nil {
			t.Fatal(err)
		}
		if a, b := mustJSON(t, tk), mustJSON(t, gotTok); a != b {
			t.Fatalf("token %d:\n%s\n%s", i, a, b)
		}
		req := requestRow{ID: fmt.Sprintf("req-%d", i), Code: ErrorCode([]error{nil, ErrConflict}[i%2]), Index: rng.Uint64(), Time: pick()}
		gotReq, err := decodeRequest(encodeRequest(&req))
		if err != nil {
			t.Fatal(err)
		}
		if a, b := mustJSON(t, req), mustJSON(t, gotReq); a != b {
			t.Fatalf("request %d:\n%s\n%s", i, a, b)
		}
	}
}

func TestRowCodecRefusesDamage(t *testing.T) {
	f := file("FIL1", 10)
	row := encodeFile(&f)
	for n := range len(row) {
		if _, err := decodeFile(row[:n]); err == nil {
			t.Fatalf("a file row cut at %d bytes decoded", n)
		}
	}
	if _, err := decodeFile(append(bytes.Clone(row), 0)); err == nil {
		t.Fatal("a file row with trailing bytes decoded")
	}
	if _, err := decodeToken(row); err == nil {
		t.Fatal("a file row decoded as a token")
	}
}
