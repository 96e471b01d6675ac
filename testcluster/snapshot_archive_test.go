package testcluster

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// repackedArchive is a snapshot archive opened up, to be written again with fresh sums, as
// anyone holding an archive can (its SHA256SUMS are a check against damage, not a signature).
type repackedArchive struct {
	meta     map[string]any
	state    []byte
	manifest map[string]any
}

func openArchive(t *testing.T, raw []byte) *repackedArchive {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	a := &repackedArchive{}
	decode := func(b []byte, v any) {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		if err := dec.Decode(v); err != nil {
			t.Fatal(err)
		}
	}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return a
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		switch hdr.Name {
		case "meta.json":
			decode(b, &a.meta)
		case "state.bin":
			a.state = b
		case "SHA256SUMS.sealed":
			decode(b, &a.manifest)
		}
	}
}

// bytes writes the archive again, with sums and manifest recomputed.
func (a *repackedArchive) bytes(t *testing.T) []byte {
	t.Helper()
	a.meta["Size"] = len(a.state)
	metaJSON, err := json.Marshal(a.meta)
	if err != nil {
		t.Fatal(err)
	}
	metaJSON = append(metaJSON, '\n')
	sums := fmt.Sprintf("%x  meta.json\n%x  state.bin\n", sha256.Sum256(metaJSON), sha256.Sum256(a.state))
	a.manifest["sha256sums"] = sums
	man, err := json.Marshal(a.manifest)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, m := range []struct {
		name string
		b    []byte
	}{{"meta.json", metaJSON}, {"state.bin", a.state}, {"SHA256SUMS", []byte(sums)}, {"SHA256SUMS.sealed", man}} {
		if err := tw.WriteHeader(&tar.Header{Name: m.name, Mode: 0o600, Size: int64(len(m.b))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(m.b); err != nil {
			t.Fatal(err)
		}
	}
	if err := errors.Join(tw.Close(), zw.Close()); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// setStateHeader replaces a field of state.bin's first line, the FSM's snapshot header.
func (a *repackedArchive) setStateHeader(t *testing.T, key string, v any) {
	t.Helper()
	first, rest, _ := bytes.Cut(a.state, []byte("\n"))
	var hdr map[string]any
	dec := json.NewDecoder(bytes.NewReader(first))
	dec.UseNumber()
	if err := dec.Decode(&hdr); err != nil {
		t.Fatal(err)
	}
	hdr[key] = v
	b, err := json.Marshal(hdr)
	if err != nil {
		t.Fatal(err)
	}
	a.state = append(append(b, '\n'), rest...)
}

// TestRestoreRefusesImpossibleIndexes: archives re-packed with fresh sums whose indexes no real
// cluster writes are refused by inspect and restore, and the cluster keeps its state and takes
// writes. Before (helper-44): a state header past meta.json's index was installed on every node,
// after which every write failed and no node could restart; meta.json's index at the largest
// uint64 made Raft's next index wrap to 0 and the restore never answered.
func TestRestoreRefusesImpossibleIndexes(t *testing.T) {
	c := New(t, Options{})
	l := c.WaitLeader(10 * time.Second)
	mustUpload(t, c, l, "a.bin", randomData(2, 5000))
	root := http.Header{"Authorization": {"Bearer " + c.RootKey}}
	saved := saveArchive(t, c, l, root)
	for _, tc := range []struct {
		name  string
		craft func(a *repackedArchive)
		want  string
	}{
		{"state header past the raft index", func(a *repackedArchive) { a.setStateHeader(t, "appliedIndex", 1_000_000) }, "past the snapshot's raft index"},
		{"raft index of the largest uint64", func(a *repackedArchive) { a.meta["Index"] = json.Number("18446744073709551615") }, "beyond any real log"},
		{"raft term of the largest uint64", func(a *repackedArchive) { a.meta["Term"] = json.Number("18446744073709551615") }, "beyond any real log"},
		{"state clock years ahead", func(a *repackedArchive) { a.setStateHeader(t, "clock", "2999-01-01T00:00:00Z") }, "ahead of this node's"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := openArchive(t, saved.Body)
			tc.craft(a)
			crafted := a.bytes(t)
			applied := c.Node(l).FSM().AppliedIndex()
			for _, req := range []struct{ method, path string }{{http.MethodPost, "/v1/snapshot/inspect"}, {http.MethodPut, "/v1/snapshot"}} {
				resp, err := c.Client(l).Do(req.method, req.path, bytes.NewReader(crafted), root)
				if err != nil || resp.Status != http.StatusBadRequest || !strings.Contains(string(resp.Body), tc.want) {
					t.Fatalf("%s %s = %v, %d %s; want a 400 saying %q", req.method, req.path, err, resp.Status, resp.Body, tc.want)
				}
			}
			if got := c.Node(l).FSM().AppliedIndex(); got != applied {
				t.Fatalf("the refused restore moved the applied index from %d to %d", applied, got)
			}
			mustUpload(t, c, l, "after.bin", randomData(3, 3000))
		})
	}
	// The genuine archive still restores.
	resp, err := c.Client(l).Do(http.MethodPut, "/v1/snapshot", bytes.NewReader(saved.Body), root)
	if err != nil || resp.Status != http.StatusOK {
		t.Fatalf("restore of the genuine archive: %v, %d %s", err, resp.Status, resp.Body)
	}
}

// TestSnapshotTempDirFailureIsTheNodes: the archive's state is decompressed into the system's temp
// directory. When that cannot take a file, inspect answers that the node cannot serve (503), not
// that a valid backup is invalid (before, 400 "the snapshot is refused", helper-44).
func TestSnapshotTempDirFailureIsTheNodes(t *testing.T) {
	c := New(t, Options{})
	l := c.WaitLeader(10 * time.Second)
	mustUpload(t, c, l, "a.bin", randomData(4, 5000))
	root := http.Header{"Authorization": {"Bearer " + c.RootKey}}
	saved := saveArchive(t, c, l, root)
	notADir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notADir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", notADir)
	resp, err := c.Client(l).Do(http.MethodPost, "/v1/snapshot/inspect", bytes.NewReader(saved.Body), root)
	if err != nil || resp.Status != http.StatusServiceUnavailable {
		t.Fatalf("inspect with an unusable temp directory = %v, %d %s; want 503", err, resp.Status, resp.Body)
	}
}

// saveArchive saves a snapshot archive through node i.
func saveArchive(t *testing.T, c *Cluster, i int, root http.Header) Response {
	t.Helper()
	saved, err := c.Client(i).Do(http.MethodGet, "/v1/snapshot", nil, root)
	if err != nil || saved.Status != http.StatusOK {
		t.Fatalf("save: %v %+v", err, saved)
	}
	return saved
}
