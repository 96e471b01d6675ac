package erasure

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

func openStore(t *testing.T, dir string) *ShardStore {
	t.Helper()
	return openStoreWith(t, dir, DefaultStoreOptions())
}

// openFileStore opens a store that keeps every shard in a file of its own.
func openFileStore(t *testing.T, dir string) *ShardStore {
	t.Helper()
	return openStoreWith(t, dir, StoreOptions{})
}

func openStoreWith(t *testing.T, dir string, opts StoreOptions) *ShardStore {
	t.Helper()
	s, err := OpenShardStoreWith(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// storedBytes returns a shard's bytes exactly as stored, from its file or its volume record.
func storedBytes(t *testing.T, s *ShardStore, id ShardID) []byte {
	t.Helper()
	loc, err := s.Locate(id)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(loc.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, loc.Length)
	if _, err := f.ReadAt(b, loc.Offset); err != nil {
		t.Fatal(err)
	}
	return b
}

func putShard(t *testing.T, s *ShardStore, id ShardID, data []byte) {
	t.Helper()
	w, err := s.Create(id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Abort)
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
}

func readShard(t *testing.T, s *ShardStore, id ShardID, off, n int64) ([]byte, error) {
	t.Helper()
	r, err := s.OpenFrames(id, off, n)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	// These tests store bytes that are not v2 shards, so the store reads them as v1 and puts a
	// legacy header in front.
	if !bytes.Equal(b[:ShardHeaderLen], legacyHeader()) {
		t.Fatalf("shard %s: header %x, want the legacy one", id, b[:ShardHeaderLen])
	}
	return b[ShardHeaderLen:], nil
}

func listIDs(t *testing.T, s *ShardStore) []string {
	t.Helper()
	var ids []string
	if err := s.List(func(info ShardInfo) error { ids = append(ids, info.ID.String()); return nil }); err != nil {
		t.Fatal(err)
	}
	slices.Sort(ids)
	return ids
}

func TestShardStoreCommitVisibility(t *testing.T) {
	s := openStore(t, t.TempDir())
	id := ShardID{File: "FILabc", Segment: 0, Index: 2}
	w, err := s.Create(id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Abort)
	if _, err := w.Write([]byte("hello ")); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("world")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(id); !errors.Is(err, ErrShardNotFound) {
		t.Fatalf("Stat before Commit: %v, want ErrShardNotFound", err)
	}
	if _, err := s.OpenFrames(id, 0, 1); !errors.Is(err, ErrShardNotFound) {
		t.Fatalf("OpenFrames before Commit: %v, want ErrShardNotFound", err)
	}
	if got := listIDs(t, s); len(got) != 0 || s.UsedBytes() != 0 {
		t.Fatalf("before Commit: listed %v, used %d", got, s.UsedBytes())
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	w.Abort() // no-op after Commit
	if _, err := w.Write([]byte("x")); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Write after Commit: %v", err)
	}
	if err := w.Commit(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("second Commit: %v", err)
	}
	info, err := s.Stat(id)
	if err != nil || info.ID != id || info.Size != 11 || info.ModTime.IsZero() {
		t.Fatalf("Stat = %+v, %v", info, err)
	}
	if want := filepath.Join("shards", "bc", "FILabc.0.2"); !bytes.HasSuffix([]byte(s.Path(id)), []byte(want)) {
		t.Fatalf("Path = %s, want it to end in %s", s.Path(id), want)
	}

	tests := []struct {
		name    string
		off, n  int64
		want    string
		wantErr error
	}{
		{name: "all", off: 0, n: 11, want: "hello world"},
		{name: "middle", off: 3, n: 4, want: "lo w"},
		{name: "empty at end", off: 11, n: 0, want: ""},
		{name: "past end", off: 6, n: 6, wantErr: ErrInvalidRange},
		{name: "negative", off: -1, n: 2, wantErr: ErrInvalidRange},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readShard(t, s, id, tt.off, tt.n)
			if !errors.Is(err, tt.wantErr) || err == nil && string(got) != tt.want {
				t.Fatalf("OpenFrames(%d, %d) = %q, %v; want %q, %v", tt.off, tt.n, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestShardStoreReplaceAndUsedBytes(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	a := ShardID{File: "A", Segment: 0, Index: 0}
	b := ShardID{File: "FILb", Segment: 3, Index: 1}
	steps := []struct {
		name string
		do   func()
		used int64
		ids  []string
	}{
		{name: "put a", do: func() { putShard(t, s, a, make([]byte, 100)) }, used: 100, ids: []string{"A.0.0"}},
		{name: "put b", do: func() { putShard(t, s, b, make([]byte, 30)) }, used: 130, ids: []string{"A.0.0", "FILb.3.1"}},
		{name: "replace a", do: func() { putShard(t, s, a, []byte("new")) }, used: 33, ids: []string{"A.0.0", "FILb.3.1"}},
		{name: "delete b", do: func() {
			if err := s.Delete(b); err != nil {
				t.Fatal(err)
			}
		}, used: 3, ids: []string{"A.0.0"}},
		{name: "delete b again", do: func() {
			if err := s.Delete(b); err != nil {
				t.Fatal(err)
			}
		}, used: 3, ids: []string{"A.0.0"}},
	}
	for _, st := range steps {
		st.do()
		if got := s.UsedBytes(); got != st.used {
			t.Fatalf("after %s: UsedBytes = %d, want %d", st.name, got, st.used)
		}
		if got := listIDs(t, s); !slices.Equal(got, st.ids) {
			t.Fatalf("after %s: List = %v, want %v", st.name, got, st.ids)
		}
	}
	if got, err := readShard(t, s, a, 0, 3); err != nil || string(got) != "new" {
		t.Fatalf("replaced shard reads %q, %v", got, err)
	}
	if reopened := openStore(t, dir); reopened.UsedBytes() != 3 {
		t.Fatalf("reopened store: UsedBytes = %d, want 3", reopened.UsedBytes())
	}
	if free, err := s.FreeBytes(); err != nil || free == 0 {
		t.Fatalf("FreeBytes = %d, %v", free, err)
	}
}

func TestShardStoreAbortAndCrashCleanup(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	id := ShardID{File: "FILx", Segment: 1, Index: 0}

	aborted, err := s.Create(id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := aborted.Write([]byte("doomed")); err != nil {
		t.Fatal(err)
	}
	aborted.Abort()
	aborted.Abort()
	if err := aborted.Commit(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Commit after Abort: %v", err)
	}
	if _, err := s.Stat(id); !errors.Is(err, ErrShardNotFound) {
		t.Fatalf("aborted shard visible: %v", err)
	}

	// A writer that never finishes stands for a crash mid-write: its temp file stays behind.
	crashed, err := s.Create(id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(crashed.Abort)
	if _, err := crashed.Write(make([]byte, 2*directChunk)); err != nil { // flushed to its temp file
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "tmp")
	if entries, _ := os.ReadDir(tmp); len(entries) != 1 {
		t.Fatalf("tmp holds %d entries, want the crashed writer's file", len(entries))
	}
	reopened := openStore(t, dir)
	if entries, err := os.ReadDir(tmp); err != nil || len(entries) != 0 {
		t.Fatalf("after reopen tmp holds %d entries (%v), want none", len(entries), err)
	}
	if reopened.UsedBytes() != 0 || len(listIDs(t, reopened)) != 0 {
		t.Fatal("temp file counted as a shard")
	}
}

func TestShardStoreRejectsBadIDs(t *testing.T) {
	s := openStore(t, t.TempDir())
	bad := []ShardID{
		{File: "../x", Segment: 0, Index: 0},
		{File: "", Segment: 0, Index: 0},
		{File: "a/b", Segment: 0, Index: 0},
		{File: "ok", Segment: -1, Index: 0},
		{File: "ok", Segment: 0, Index: -3},
		// Would alias ok.0.0 in a volume's index and checksum seeds (4-byte numbers).
		{File: "ok", Segment: 1 << 32, Index: 0},
		{File: "ok", Segment: 0, Index: 1 << 32},
	}
	for _, id := range bad {
		t.Run(id.String(), func(t *testing.T) {
			if _, err := s.Create(id); !errors.Is(err, ErrInvalidShardID) {
				t.Errorf("Create: %v", err)
			}
			if _, err := s.OpenFrames(id, 0, 0); !errors.Is(err, ErrInvalidShardID) {
				t.Errorf("OpenFrames: %v", err)
			}
			if _, err := s.Stat(id); !errors.Is(err, ErrInvalidShardID) {
				t.Errorf("Stat: %v", err)
			}
			if err := s.Delete(id); !errors.Is(err, ErrInvalidShardID) {
				t.Errorf("Delete: %v", err)
			}
		})
	}
}

// TestShardStoreCreateRefusesIndexAboveTheGeometry: no k+m has an index of 64 or more, and a
// shard header holds the index in 2 bytes, so a shard written with one could not be read back.
func TestShardStoreCreateRefusesIndexAboveTheGeometry(t *testing.T) {
	s := openStore(t, t.TempDir())
	if _, err := s.Create(ShardID{File: "ok", Segment: 0, Index: maxTotalShards}); !errors.Is(err, ErrInvalidShardID) {
		t.Fatalf("Create of index %d: %v, want ErrInvalidShardID", maxTotalShards, err)
	}
	putShard(t, s, ShardID{File: "ok", Segment: 0, Index: maxTotalShards - 1}, testShard(ShardID{File: "ok", Segment: 0, Index: maxTotalShards - 1}, 100))
}

func TestShardStoreListSkipsStrayFilesAndStops(t *testing.T) {
	s := openFileStore(t, t.TempDir())
	for i := range 3 {
		putShard(t, s, ShardID{File: "FILlist", Segment: 0, Index: i}, []byte{byte(i)})
	}
	stray := filepath.Join(filepath.Dir(s.Path(ShardID{File: "FILlist"})), "notashard")
	if err := os.WriteFile(stray, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := listIDs(t, s); !slices.Equal(got, []string{"FILlist.0.0", "FILlist.0.1", "FILlist.0.2"}) {
		t.Fatalf("List = %v", got)
	}
	errStop := errors.New("stop")
	calls := 0
	err := s.List(func(ShardInfo) error { calls++; return errStop })
	if !errors.Is(err, errStop) || calls != 1 {
		t.Fatalf("List = %v after %d calls, want errStop after 1", err, calls)
	}
}

func TestShardStoreConcurrentWrites(t *testing.T) {
	s := openStore(t, t.TempDir())
	const writers = 8
	same := ShardID{File: "FILsame", Segment: 0, Index: 0}
	var wg sync.WaitGroup
	errs := make(chan error, 2*writers)
	for i := range writers {
		for _, id := range []ShardID{{File: fmt.Sprintf("FIL%d", i), Segment: 0, Index: i}, same} {
			wg.Go(func() {
				w, err := s.Create(id)
				if err != nil {
					errs <- err
					return
				}
				defer w.Abort()
				if _, err := w.Write(bytes.Repeat([]byte{byte(i)}, 1000)); err != nil {
					errs <- err
					return
				}
				errs <- w.Commit()
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := len(listIDs(t, s)); got != writers+1 {
		t.Fatalf("List has %d shards, want %d", got, writers+1)
	}
	if got := s.UsedBytes(); got != (writers+1)*1000 {
		t.Fatalf("UsedBytes = %d, want %d", got, (writers+1)*1000)
	}
	got, err := readShard(t, s, same, 0, 1000)
	if err != nil || !bytes.Equal(got, bytes.Repeat(got[:1], 1000)) {
		t.Fatalf("shard written concurrently is torn or unreadable: %v", err)
	}
}

func TestParseShardID(t *testing.T) {
	tests := []struct {
		in   string
		want ShardID
		ok   bool
	}{
		{in: "FILabc.0.2", want: ShardID{"FILabc", 0, 2}, ok: true},
		{in: "a.10.63", want: ShardID{"a", 10, 63}, ok: true},
		{in: "a.4294967295.0", want: ShardID{"a", 4294967295, 0}, ok: true},
		{in: "a.0.64", want: ShardID{"a", 0, 64}, ok: true}, // parsed, so an old one can be deleted; Create refuses it
		{in: "a.4294967296.0"},
		{in: "a.0.4294967296"},
		{in: string(bytes.Repeat([]byte("z"), 64)) + ".1.1", want: ShardID{string(bytes.Repeat([]byte("z"), 64)), 1, 1}, ok: true},
		{in: string(bytes.Repeat([]byte("z"), 65)) + ".1.1"},
		{in: "../x.0.0"},
		{in: "a.-1.0"},
		{in: "a.0.-1"},
		{in: "a.+1.0"},
		{in: "a.01.0"},
		{in: "a.0.00"},
		{in: "a.0"},
		{in: "a.0.0.0"},
		{in: ".0.0"},
		{in: "a..0"},
		{in: "a.0."},
		{in: "a/b.0.0"},
		{in: "a b.0.0"},
		{in: "é.0.0"},
		{in: "a.1e3.0"},
		{in: "a.0x1.0"},
		{in: "a.99999999999999999999999.0"},
		{in: ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseShardID(tt.in)
			if !tt.ok {
				if !errors.Is(err, ErrInvalidShardID) {
					t.Fatalf("ParseShardID(%q) = %+v, %v; want ErrInvalidShardID", tt.in, got, err)
				}
				return
			}
			if err != nil || got != tt.want || got.String() != tt.in {
				t.Fatalf("ParseShardID(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
		})
	}
}

func FuzzParseShardID(f *testing.F) {
	for _, s := range []string{"FILabc.0.2", "../x.0.0", "a.-1.0", "a.01.0", "a.0.0.0", "a.+1.2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseShardID(s)
		if err != nil {
			return
		}
		// Accepted ids are canonical and are a single, harmless path component.
		if id.String() != s || filepath.Base(s) != s || s == "." || s == ".." || bytes.ContainsAny([]byte(s), `/\`) {
			t.Fatalf("ParseShardID(%q) accepted %+v", s, id)
		}
	})
}

// TestShardStoreMigratesOldFanout: shards written under the earlier fan-out (first two characters
// of the file id) are moved into place when the store opens, and read back intact.
func TestShardStoreMigratesOldFanout(t *testing.T) {
	dir := t.TempDir()
	id := ShardID{File: "FILxyz", Segment: 1, Index: 0}
	old := filepath.Join(dir, "shards", "FI", id.String())
	if err := os.MkdirAll(filepath.Dir(old), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(old, []byte("shard bytes"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := OpenShardStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("old path still there: %v", err)
	}
	rc, err := s.OpenFrames(id, 0, 11)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	if string(b[ShardHeaderLen:]) != "shard bytes" || s.UsedBytes() != 11 {
		t.Fatalf("after migration: %q, used %d", b, s.UsedBytes())
	}
}

// TestShardWriterSizesAndDirectIO: shards of every size class (one buffered write; aligned
// O_DIRECT chunks plus a buffered tail) round-trip byte-exact through Write and ReadFrom, and
// large ones really went out with O_DIRECT where the filesystem allows it.
func TestShardWriterSizesAndDirectIO(t *testing.T) {
	s := openStore(t, t.TempDir())
	rng := rand.New(rand.NewPCG(5, 6))
	for _, size := range []int{1, 4095, 4096, directChunk - 1, directChunk, directChunk + 1, 3*directChunk + 5000} {
		for _, via := range []string{"Write", "ReadFrom"} {
			t.Run(fmt.Sprintf("%d/%s", size, via), func(t *testing.T) {
				data := make([]byte, size)
				for i := range data {
					data[i] = byte(rng.Uint32())
				}
				id := ShardID{File: "FILsize", Segment: size, Index: len(via)}
				w, err := s.Create(id)
				if err != nil {
					t.Fatal(err)
				}
				defer w.Abort()
				if via == "Write" {
					for p := data; len(p) > 0; {
						n := min(len(p), 1+rng.IntN(100_000))
						if _, err := w.Write(p[:n]); err != nil {
							t.Fatal(err)
						}
						p = p[n:]
					}
				} else if _, err := w.ReadFrom(io.MultiReader(bytes.NewReader(data[:size/3]), bytes.NewReader(data[size/3:]))); err != nil {
					t.Fatal(err)
				}
				if err := w.Commit(); err != nil {
					t.Fatal(err)
				}
				if got := storedBytes(t, s, id); !bytes.Equal(got, data) {
					t.Fatalf("stored %d bytes; want the %d written", len(got), size)
				}
				if loc, _ := s.Locate(id); loc.InVolume != (size <= smallShard) {
					t.Fatalf("a %d-byte shard in a volume: %v", size, loc.InVolume)
				}
			})
		}
	}
	st := s.DirectIO()
	t.Logf("O_DIRECT %+v", st)
	if st.Enabled && st.DirectBytes == 0 {
		t.Fatal("no byte went out with O_DIRECT although the filesystem takes it")
	}
	if st.BufferedBytes == 0 {
		t.Fatal("small shards and tails should be buffered writes")
	}
}

// TestShardStoreOpenFramesWriteTo checks that a shard stream copied to a connection (WriteTo:
// sendfile from a shard file, one write from a volume record) sends the same bytes as reading
// it, also after part of it was read.
func TestShardStoreOpenFramesWriteTo(t *testing.T) {
	s := openStore(t, t.TempDir())
	rng := rand.New(rand.NewPCG(1, 2))
	shards := map[string]ShardID{
		"file":   {File: "FILwriteto", Segment: 0, Index: 0},
		"record": {File: "FILwriteto", Segment: 0, Index: 1},
	}
	sizes := map[string]int{"file": 300 << 10, "record": 3000}
	for name, id := range shards {
		data := make([]byte, sizes[name])
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		putShard(t, s, id, data)
		size := int64(len(data))
		for _, r := range []struct{ off, n, readFirst int64 }{
			{0, size, 0}, {0, size, 10}, {0, size, ShardHeaderLen + 5000}, {777, size - 1000, 0}, {size, 0, 0},
		} {
			t.Run(fmt.Sprintf("%s/%d+%d/after%d", name, r.off, r.n, r.readFirst), func(t *testing.T) {
				want := append(legacyHeader(), data[r.off:r.off+r.n]...)
				rc, err := s.OpenFrames(id, r.off, r.n)
				if err != nil {
					t.Fatal(err)
				}
				defer rc.Close()
				head := make([]byte, min(r.readFirst, int64(len(want))))
				if _, err := io.ReadFull(rc, head); err != nil {
					t.Fatal(err)
				}
				got := append(head, copyOverLoopback(t, rc)...)
				if !bytes.Equal(got, want) {
					t.Fatalf("got %d bytes, want %d (equal prefix %t)", len(got), len(want), bytes.HasPrefix(want, got))
				}
			})
		}
	}
}

// copyOverLoopback io.Copies r into a loopback TCP connection (where the runtime may use
// sendfile) and returns what arrived at the other end.
func copyOverLoopback(t *testing.T, r io.Reader) []byte {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	received := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			received <- nil
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		received <- b
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(c, r); err != nil {
		t.Fatal(err)
	}
	c.Close()
	return <-received
}
