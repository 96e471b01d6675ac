package fsm

import (
	"bytes"
	"errors"
	"testing"
)

func TestInspectSnapshot(t *testing.T) {
	f := newTestFSM(t)
	f.Apply(cmdLog(1, mustEncode(t, CmdInitCluster, "r1", t0, initPayload())))
	f.Apply(cmdLog(2, mustEncode(t, CmdCreateFile, "r2", t0, fileCmd("f1"))))
	f.Apply(cmdLog(3, mustEncode(t, CmdCreateFile, "r3", t0, fileCmd("f2", tok("f2-full", "f2", AccessFull), tok("f2-read", "f2", AccessRead)))))
	stream := dump(t, f)

	got, err := InspectSnapshot(bytes.NewReader(stream))
	if err != nil {
		t.Fatal(err)
	}
	want := SnapshotSummary{AppliedIndex: 3, ClusterID: "c1", Files: 2, Tokens: 3, APIKeys: 1, Clock: t0}
	if got != want {
		t.Fatalf("InspectSnapshot = %+v, want %+v", got, want)
	}

	// Whatever Restore refuses, InspectSnapshot refuses too.
	for name, bad := range map[string][]byte{
		"empty":          nil,
		"truncated":      stream[:len(stream)/2],
		"no end record":  stream[:bytes.LastIndexByte(stream[:len(stream)-1], '\n')+1],
		"trailing bytes": append(bytes.Clone(stream), []byte(`{"kind":"end"}`+"\n")...),
		"flipped byte":   bytes.Replace(stream, []byte(`"f2-read"`), []byte(`"f2-re\x01d"`), 1),
	} {
		_, ierr := InspectSnapshot(bytes.NewReader(bad))
		rerr := newTestFSM(t).Restore(readCloser{bytes.NewReader(bad)})
		if !errors.Is(ierr, ErrInvalidSnapshot) || !errors.Is(rerr, ErrInvalidSnapshot) {
			t.Errorf("%s: InspectSnapshot = %v, Restore = %v; want both ErrInvalidSnapshot", name, ierr, rerr)
		}
	}
}
