package node

import (
	"context"
	"strings"
	"testing"
)

func TestManifestSealer(t *testing.T) {
	sums := []byte("0123abcd  meta.json\n4567ef01  state.bin\n")
	out := &manifestSealer{out: snapshotManifest{CairnVersion: "v0.2.0", ClusterID: "c1"}}
	sealed, err := out.Seal(context.Background(), sums)
	if err != nil {
		t.Fatal(err)
	}
	in := &manifestSealer{}
	opened, err := in.Open(context.Background(), sealed)
	if err != nil {
		t.Fatal(err)
	}
	if string(opened) != string(sums) || in.in.CairnVersion != "v0.2.0" || in.in.ClusterID != "c1" {
		t.Fatalf("Open = %q, manifest %+v", opened, in.in)
	}
	for name, tc := range map[string]struct{ sealed, want string }{
		"missing":        {"", "no cairn manifest"},
		"not json":       {"garbage", "cairn manifest"},
		"unknown field":  {`{"format":1,"sha256sums":"","extra":1}`, "unknown field"},
		"future format":  {`{"format":2,"sha256sums":""}`, "manifest format 2"},
		"trailing value": {`{"format":1`, "cairn manifest"},
	} {
		if _, err := (&manifestSealer{}).Open(context.Background(), []byte(tc.sealed)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Open = %v, want an error with %q", name, err, tc.want)
		}
	}
}
