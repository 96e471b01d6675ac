package erasure

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestReadOnlyScanDoesNotBlockOnAFIFO: a name the listing saw as a regular file and that is a
// FIFO by the time a read-only open opens it must not block (O_RDONLY on a FIFO waits for a
// writer); scanVolume is called directly, as the open does right after its Stat.
func TestReadOnlyScanDoesNotBlockOnAFIFO(t *testing.T) {
	dir := t.TempDir()
	vs, err := openVolumeSet(dir, 0, 0, slog.New(slog.DiscardHandler), true)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, volumeName(5))
	if err := unix.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		var seq uint64
		_, err := vs.scanVolume(5, map[volumeKey]uint64{}, &seq)
		done <- err
	}()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		if w, err := os.OpenFile(p, os.O_WRONLY|unix.O_NONBLOCK, 0); err == nil {
			w.Close()
		}
		<-done
		t.Fatal("read-only scanVolume blocked on a FIFO at a volume's name (O_NONBLOCK was dropped)")
	}
}

// fillToVolume writes small shards until volume id want exists.
func fillToVolume(t *testing.T, s *ShardStore, prefix string, want uint32) {
	t.Helper()
	for i := 0; ; i++ {
		s.vols.mu.Lock()
		_, ok := s.vols.vols[want]
		s.vols.mu.Unlock()
		if ok {
			return
		}
		if i > 200 {
			t.Fatalf("volume %d never created", want)
		}
		id := ShardID{File: packableFileID(prefix), Segment: i, Index: 0}
		putShard(t, s, id, testShard(id, 60000))
	}
}

// TestDamagedVolumeIDIsNotReused: a volume set aside as .vol.damaged keeps its id: the next
// open counts it, so no new volume takes the id and a second set-aside of it cannot replace the
// first inspection copy.
func TestDamagedVolumeIDIsNotReused(t *testing.T) {
	dir := t.TempDir()
	s := openStoreWith(t, dir, smallVolumes)
	fillToVolume(t, s, "dmgA", 2)
	s.Close()
	v2 := filepath.Join(dir, "volumes", volumeName(2))
	damage := func() []byte {
		f, err := os.OpenFile(v2, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt([]byte("XXXX"), 0)
		f.Close()
		b, _ := os.ReadFile(v2)
		return b
	}
	first := damage()
	s = openStoreWith(t, dir, smallVolumes) // sets volume 2 aside
	s.Close()
	s = openStoreWith(t, dir, smallVolumes)
	if s.vols.nextVol <= 2 {
		t.Fatalf("after the restart nextVol = %d: id 2 of the set-aside volume is free again", s.vols.nextVol)
	}
	fillToVolume(t, s, "dmgB", s.vols.nextVol) // rotate into a new volume
	s.Close()
	if _, err := os.Stat(v2); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a new volume took the set-aside volume's id: %v", err)
	}
	got, err := os.ReadFile(v2 + damagedSuffix)
	if err != nil || !bytes.Equal(got, first) {
		t.Fatalf("the set-aside copy of volume 2 changed (%d bytes, %v)", len(got), err)
	}
}

// TestStrayVolumeNameDoesNotUseUpIDs: an empty directory named with the highest volume id is
// skipped and does not advance the next id, so writes go on rotating through new volumes.
func TestStrayVolumeNameDoesNotUseUpIDs(t *testing.T) {
	dir := t.TempDir()
	s := openStoreWith(t, dir, smallVolumes)
	fillToVolume(t, s, "exA", 1)
	s.Close()
	if err := os.Mkdir(filepath.Join(dir, "volumes", volumeName(maxVolumeID)), 0o750); err != nil {
		t.Fatal(err)
	}
	s = openStoreWith(t, dir, smallVolumes)
	for i := range 40 {
		id := ShardID{File: packableFileID("exB"), Segment: i, Index: 0}
		w, _ := s.Create(id)
		w.Write(testShard(id, 60000))
		if err := w.Commit(); err != nil {
			t.Fatalf("small write %d (%d KiB into 1 MiB volumes) after a stray %s: %v", i, i*60, volumeName(maxVolumeID), err)
		}
	}
}

var fanID = ShardID{File: "FILfanAB", Segment: 0, Index: 0} // fan-out directory "AB"

// TestFileAtAFanOutDirectory: a regular file at shards/AB. A small write of a shard in that
// fan-out commits (removeFile takes ENOTDIR as nothing there), Delete succeeds, and Stat of an
// absent shard there is ErrShardNotFound, so it is healed.
func TestFileAtAFanOutDirectory(t *testing.T) {
	dir := t.TempDir()
	s := openStoreWith(t, dir, smallVolumes)
	if err := os.WriteFile(filepath.Join(dir, "shards", "AB"), []byte("stray"), 0o600); err != nil {
		t.Fatal(err)
	}
	var errs []string
	w, _ := s.Create(fanID)
	w.Write(testShard(fanID, 1000))
	if err := w.Commit(); err != nil {
		if _, rerr := readAll(s, fanID); rerr == nil {
			errs = append(errs, "Commit of a small shard failed although its record is durable and reads: "+err.Error())
		}
	}
	if err := s.Delete(fanID); err != nil {
		errs = append(errs, "Delete: "+err.Error())
	}
	other := ShardID{File: "FILotherAB", Segment: 0, Index: 0}
	if _, err := s.Stat(other); !errors.Is(err, ErrShardNotFound) {
		errs = append(errs, "Stat of an absent shard: "+err.Error())
	}
	for _, e := range errs {
		t.Error(e)
	}
}

// TestDirectoryNamedLikeAShard: a directory at a shard's path is not a shard: Stat calls it
// missing (so it is healed), and Delete leaves UsedBytes alone.
func TestDirectoryNamedLikeAShard(t *testing.T) {
	dir := t.TempDir()
	s := openStoreWith(t, dir, smallVolumes)
	p := s.Path(fanID)
	if err := os.MkdirAll(p, 0o750); err != nil {
		t.Fatal(err)
	}
	if info, err := s.Stat(fanID); err == nil {
		t.Errorf("Stat of a directory at the shard's path: present, %d bytes", info.Size)
	}
	if err := s.Delete(fanID); err != nil {
		t.Error("Delete:", err)
	}
	if u := s.UsedBytes(); u != 0 {
		t.Errorf("UsedBytes %d after deleting a directory the store never counted", u)
	}
}

// TestMigrationOntoADirectoryIsSkipped: an old-layout shard file whose new path is a directory
// is left where it is, and the store starts.
func TestMigrationOntoADirectoryIsSkipped(t *testing.T) {
	dir := t.TempDir()
	newPath := filepath.Join(dir, "shards", StoreOrder(fanID))
	oldPath := filepath.Join(dir, "shards", "FI", fanID.String())
	for _, d := range []string{newPath, filepath.Dir(oldPath)} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(oldPath, testShard(fanID, 200<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := OpenShardStoreWith(dir, smallVolumes)
	if err != nil {
		t.Fatalf("the start fails: %v", err)
	}
	s.Close()
}

// storeWithFanShard is a closed store in a new directory holding fanID as a shard file.
func storeWithFanShard(t *testing.T) (dir string, body []byte) {
	t.Helper()
	dir = t.TempDir()
	s := openStoreWith(t, dir, smallVolumes)
	body = testShard(fanID, 200<<10)
	putShard(t, s, fanID, body)
	s.Close()
	return dir, body
}

// TestMigrationDoesNotReplaceAShard: a file with a shard's name elsewhere in the tree (here an
// empty stray) must not be moved over the acknowledged shard at its new-layout path.
func TestMigrationDoesNotReplaceAShard(t *testing.T) {
	dir, body := storeWithFanShard(t)
	stray := filepath.Join(dir, "shards", "old", "FI", fanID.String())
	os.MkdirAll(filepath.Dir(stray), 0o750)
	if err := os.WriteFile(stray, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s := openStoreWith(t, dir, smallVolumes)
	defer s.Close()
	mustRead(t, s, fanID, body)
	if _, err := os.Stat(stray); err != nil {
		t.Fatalf("the stray was not left where it was: %v", err)
	}
}

// TestSymlinkedShardFile: a symlink at a shard's path to a file outside the store is not a
// shard: Stat calls it missing, a read calls it corrupt (both lead to a heal), Delete removes
// the link and not its target, and UsedBytes, which never counted it, stays 0.
func TestSymlinkedShardFile(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(t.TempDir(), "outside")
	if err := os.WriteFile(target, testShard(fanID, 200<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	s := openStoreWith(t, dir, smallVolumes)
	p := s.Path(fanID)
	os.MkdirAll(filepath.Dir(p), 0o750)
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
	if info, err := s.Stat(fanID); !errors.Is(err, ErrShardNotFound) {
		t.Errorf("Stat of a symlinked shard: %d bytes, %v; want ErrShardNotFound (not a file the store wrote)", info.Size, err)
	}
	if _, err := s.OpenFrames(fanID, 0, -1); !errors.Is(err, ErrCorrupt) {
		t.Errorf("read of a symlinked shard: %v, want ErrCorrupt", err)
	}
	if err := s.Delete(fanID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(target); err != nil {
		t.Errorf("Delete removed the symlink's target: %v", err)
	}
	if u := s.UsedBytes(); u != 0 {
		t.Errorf("UsedBytes %d after deleting a symlinked shard", u)
	}
}

// TestTmpSymlinkIsRefused: dir/tmp a symlink (here to the store's own shards directory). The
// open's cleanup would follow it and remove every entry of the target, every acknowledged shard
// file; the store refuses to start instead.
func TestTmpSymlinkIsRefused(t *testing.T) {
	dir, body := storeWithFanShard(t)
	if err := os.Remove(filepath.Join(dir, "tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("shards", filepath.Join(dir, "tmp")); err != nil {
		t.Fatal(err)
	}
	s, err := OpenShardStoreWith(dir, smallVolumes)
	if err == nil {
		s.Close()
		t.Fatal("the store started with tmp a symlink")
	}
	if _, err := os.Stat(filepath.Join(dir, "shards", StoreOrder(fanID))); errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("an acknowledged shard file was removed by the tmp cleanup through a symlink")
	}
	// Put right, the store starts with the shard.
	if err := os.Remove(filepath.Join(dir, "tmp")); err != nil {
		t.Fatal(err)
	}
	s = openStoreWith(t, dir, smallVolumes)
	defer s.Close()
	mustRead(t, s, fanID, body)
}

// TestVolumeSwappedForADirectoryIsSkipped: a name the listing saw as a regular file and that is
// a directory by the time scanVolume opens it is skipped, not an error that fails the start.
func TestVolumeSwappedForADirectoryIsSkipped(t *testing.T) {
	dir := t.TempDir()
	vs, err := openVolumeSet(dir, smallShard, 1<<20, slog.New(slog.DiscardHandler), false)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, volumeName(5)), 0o750); err != nil {
		t.Fatal(err)
	}
	var seq uint64
	if _, err := vs.scanVolume(5, map[volumeKey]uint64{}, &seq); err != nil {
		t.Fatalf("scanVolume of a volume replaced by a directory: %v (openVolumeSet returns it: the start fails)", err)
	}
}

// TestSymlinkedFanOutIsWalked: shards written and read through a fan-out directory that is a
// symlink (here to a directory outside the store, on the same filesystem) are listed, counted
// in UsedBytes and found by the open's file walk, as GC and scrub need. Before, the walk did not
// follow the link, so after a restart GC and scrub never saw them and UsedBytes left them out.
func TestSymlinkedFanOutIsWalked(t *testing.T) {
	dir, body := storeWithFanShard(t)
	fanDir := filepath.Dir(filepath.Join(dir, "shards", StoreOrder(fanID)))
	elsewhere := moveBehindLink(t, fanDir)
	s := openStoreWith(t, dir, smallVolumes)
	wantOnlyFanShard(t, s, body)
	other := ShardID{File: "FILotherAB", Segment: 0, Index: 0}
	otherBody := testShard(other, 100<<10)
	putShard(t, s, other, otherBody)
	if _, err := os.Stat(filepath.Join(elsewhere, other.String())); err != nil {
		t.Errorf("a new shard of that fan-out was not written through the link: %v", err)
	}
	if err := s.Delete(fanID); err != nil {
		t.Fatal(err)
	}
	if got := listIDs(t, s); !slices.Equal(got, []string{other.String()}) {
		t.Errorf("List after the delete = %v, want [%s]", got, other)
	}
	if u := s.UsedBytes(); u != int64(len(otherBody)) {
		t.Errorf("UsedBytes %d after the delete, want %d", u, len(otherBody))
	}
	if _, err := os.Lstat(fanDir); err != nil {
		t.Errorf("the link itself is gone: %v", err)
	}
}

// TestSymlinkedShardsDirectoryIsWalked: the whole shards directory a symlink. The walk used to
// stop at the link (filepath.WalkDir does not follow its root), so the store listed nothing.
func TestSymlinkedShardsDirectoryIsWalked(t *testing.T) {
	dir, body := storeWithFanShard(t)
	moveBehindLink(t, filepath.Join(dir, "shards"))
	s := openStoreWith(t, dir, smallVolumes)
	wantOnlyFanShard(t, s, body)
}

// moveBehindLink moves directory p to a new temp directory on the same filesystem and puts a
// symlink to it at p. It returns where p's contents now are.
func moveBehindLink(t *testing.T, p string) string {
	t.Helper()
	elsewhere := filepath.Join(t.TempDir(), "moved")
	if err := os.Rename(p, elsewhere); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, p); err != nil {
		t.Fatal(err)
	}
	return elsewhere
}

// wantOnlyFanShard checks that s reads, lists and counts fanID (stored as body), and nothing else.
func wantOnlyFanShard(t *testing.T, s *ShardStore, body []byte) {
	t.Helper()
	mustRead(t, s, fanID, body)
	if got := listIDs(t, s); !slices.Equal(got, []string{fanID.String()}) {
		t.Errorf("List = %v, want [%s] once", got, fanID)
	}
	if u := s.UsedBytes(); u != int64(len(body)) {
		t.Errorf("UsedBytes %d, want %d", u, len(body))
	}
}

// TestOddFanOutEntries: entries at a fan-out directory's place that are not directories (a
// dangling link, a link to a file, a link looping on itself, a FIFO) do not fail the open or
// the walk, and the other fan-out directories are listed. A fan-out directory linked to another
// one is walked without listing the other's shards twice or logging a migration for them.
func TestOddFanOutEntries(t *testing.T) {
	dir, body := storeWithFanShard(t)
	shards := filepath.Join(dir, "shards")
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, []byte("x"), 0o600)
	for name, target := range map[string]string{"Zd": filepath.Join(dir, "missing"), "Zf": file, "Zl": "Zl", "Zs": "AB"} {
		if err := os.Symlink(target, filepath.Join(shards, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mkfifo(filepath.Join(shards, "Zp"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, logged := openLogged(t, dir)
	wantOnlyFanShard(t, s, body)
	if logged.Len() > 0 {
		t.Errorf("the open logged: %s", logged.String())
	}
}

// TestDeepFilesAreNotShards: a file with a shard's name two levels below the shards directory
// was never written by any layout: it is not listed, and the open does not move it into place.
func TestDeepFilesAreNotShards(t *testing.T) {
	dir := t.TempDir()
	deep := filepath.Join(dir, "shards", "AB", "sub", fanID.String())
	os.MkdirAll(filepath.Dir(deep), 0o750)
	if err := os.WriteFile(deep, testShard(fanID, 100<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	s := openStoreWith(t, dir, smallVolumes)
	if got := listIDs(t, s); len(got) != 0 {
		t.Errorf("List = %v, want nothing", got)
	}
	if _, err := s.Stat(fanID); !errors.Is(err, ErrShardNotFound) {
		t.Errorf("Stat: %v, want ErrShardNotFound (the deep file was moved into place)", err)
	}
	if _, err := os.Stat(deep); err != nil {
		t.Errorf("the deep file was moved: %v", err)
	}
}

// otherFilesystemDir is a new directory on another filesystem than the test's temp directory:
// under /dev/shm, a tmpfs on every Linux machine this runs on.
func otherFilesystemDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("/dev/shm", "cairn-xdev-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	var a, b unix.Stat_t
	if err := unix.Stat(d, &a); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(t.TempDir(), &b); err != nil {
		t.Fatal(err)
	}
	if a.Dev == b.Dev {
		t.Fatalf("/dev/shm is on the same filesystem as %s; this test needs two", os.TempDir())
	}
	return d
}

// TestShardsOnAnotherFilesystemIsRefused: shards a symlink to another filesystem than tmp.
// Every large shard commit renames out of tmp and would fail with EXDEV; the start says so
// instead. A fan-out directory there only fails the writes of its file ids, so it is logged.
func TestShardsOnAnotherFilesystemIsRefused(t *testing.T) {
	dir, _ := storeWithFanShard(t)
	shards := filepath.Join(dir, "shards")
	other := otherFilesystemDir(t)
	if err := os.Symlink(other, filepath.Join(shards, "Zx")); err != nil {
		t.Fatal(err)
	}
	s, logged := openLogged(t, dir)
	s.Close()
	if !bytes.Contains(logged.Bytes(), []byte("another mount")) || !bytes.Contains(logged.Bytes(), []byte("Zx")) {
		t.Errorf("the fan-out directory on another filesystem was not logged: %q", logged.String())
	}

	moved := filepath.Join(other, "shards")
	if err := os.Rename(shards, moved); err == nil || !errors.Is(err, unix.EXDEV) {
		t.Fatalf("rename across filesystems: %v, want EXDEV", err)
	}
	if err := os.MkdirAll(moved, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(shards); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(moved, shards); err != nil {
		t.Fatal(err)
	}
	s, err := OpenShardStoreWith(dir, smallVolumes)
	if err == nil {
		s.Close()
		t.Fatal("the store started with shards on another filesystem than tmp")
	}
	if !strings.Contains(err.Error(), "different mounts") {
		t.Errorf("error %q does not say why", err)
	}
}

// TestLargeTmpIsEmptied: thousands of leftover temp files in tmp are all removed at open, which
// reads the names a batch at a time; a directory and files that are not named as Create names
// its temp files are left, and logged.
func TestLargeTmpIsEmptied(t *testing.T) {
	dir, body := storeWithFanShard(t)
	tmp := filepath.Join(dir, "tmp")
	for i := range 5000 {
		if err := os.WriteFile(filepath.Join(tmp, fmt.Sprintf("FILx.0.%d.%d", i%7, i)), []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	foreign := []string{"sub", "notes.txt", "FILx.0.1", "FILx.0.1.12ab"}
	if err := os.MkdirAll(filepath.Join(tmp, "sub", "deeper"), 0o750); err != nil {
		t.Fatal(err)
	}
	for _, name := range foreign[1:] {
		if err := os.WriteFile(filepath.Join(tmp, name), []byte("not a temp file"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s, logged := openLogged(t, dir)
	mustRead(t, s, fanID, body)
	left, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range left {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	slices.Sort(foreign)
	if !slices.Equal(names, foreign) {
		t.Errorf("tmp after the open holds %v, want only what is not a temp file, %v", names, foreign)
	}
	if !bytes.Contains(logged.Bytes(), []byte("entries=4")) {
		t.Errorf("the open did not log the 4 entries it left: %q", logged.String())
	}
}

// openLogged opens the store in dir with smallVolumes, failing the test if the start fails, and
// returns what the open logged.
func openLogged(t *testing.T, dir string) (*ShardStore, *bytes.Buffer) {
	t.Helper()
	logged := new(bytes.Buffer)
	opts := smallVolumes
	opts.Logger = slog.New(slog.NewTextHandler(logged, nil))
	s, err := OpenShardStoreWith(dir, opts)
	if err != nil {
		t.Fatalf("the start fails: %v", err)
	}
	t.Cleanup(s.Close)
	return s, logged
}

// TestTmpKeepsWhatIsNotATempFile: shards stored in tmp through a link (a fan-out directory,
// shards or volumes linked to tmp or below it, a volume file linked into it), and a bind mount
// of shards inside tmp, all under an absolute and under a relative data dir. The start empties
// only the temp files Create makes (<shard id>.<digits>), so every acknowledged shard reads
// back after it. Before, the start removed everything in tmp and each of these shards was lost
// (helper-39, helper-41); the bind mount lost every shard file.
func TestTmpKeepsWhatIsNotATempFile(t *testing.T) {
	small := ShardID{File: "FILsmallCD", Segment: 0, Index: 0}
	for _, c := range []struct {
		name string
		set  func(t *testing.T, dir string)
	}{
		{"fan-out linked to tmp", func(t *testing.T, dir string) { relink(t, filepath.Join(dir, "shards", "AB"), "../tmp") }},
		{"fan-out linked below tmp", func(t *testing.T, dir string) {
			abs, _ := filepath.Abs(filepath.Join(dir, "tmp", "sub"))
			relink(t, filepath.Join(dir, "shards", "AB"), abs)
		}},
		{"shards linked to tmp", func(t *testing.T, dir string) { relink(t, filepath.Join(dir, "shards"), "tmp") }},
		{"volumes linked to tmp", func(t *testing.T, dir string) { relink(t, filepath.Join(dir, "volumes"), "tmp") }},
		{"shards bind-mounted in tmp", func(t *testing.T, dir string) {
			bindMount(t, filepath.Join(dir, "shards"), filepath.Join(dir, "tmp", "x"))
		}},
	} {
		for _, relative := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/relative=%v", c.name, relative), func(t *testing.T) {
				dir := t.TempDir()
				if relative {
					t.Chdir(dir)
					dir = "store"
				}
				s := openStoreWith(t, dir, smallVolumes)
				s.Close()
				c.set(t, dir)
				s = openStoreWith(t, dir, smallVolumes)
				body := testShard(fanID, 200<<10)
				putShard(t, s, fanID, body)
				smallBody := testShard(small, 2<<10)
				putShard(t, s, small, smallBody)
				s.Close()
				s, logged := openLogged(t, dir)
				mustRead(t, s, fanID, body)
				mustRead(t, s, small, smallBody)
				t.Log(logged.String())
			})
		}
	}
	t.Run("volume file linked into tmp", func(t *testing.T) {
		dir := t.TempDir()
		s := openStoreWith(t, dir, smallVolumes)
		body := testShard(small, 2<<10)
		putShard(t, s, small, body)
		s.Close()
		vols, err := filepath.Glob(filepath.Join(dir, "volumes", "*.vol"))
		if err != nil || len(vols) == 0 {
			t.Fatalf("no volume file: %v", err)
		}
		target := filepath.Join(dir, "tmp", "elsewhere", filepath.Base(vols[0]))
		os.MkdirAll(filepath.Dir(target), 0o750)
		if err := os.Rename(vols[0], target); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, vols[0]); err != nil {
			t.Fatal(err)
		}
		s = openStoreWith(t, dir, smallVolumes)
		mustRead(t, s, small, body)
	})
}

// relink replaces directory p (moving its contents) with a symlink to target, which is taken
// relative to p's directory unless absolute.
func relink(t *testing.T, p, target string) {
	t.Helper()
	resolved := target
	if !filepath.IsAbs(target) {
		resolved = filepath.Join(filepath.Dir(p), target)
	}
	for _, d := range []string{resolved, p} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := os.ReadDir(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := os.Rename(filepath.Join(p, e.Name()), filepath.Join(resolved, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

// bindMount bind-mounts directory src at dst (made if missing) until the test ends. It needs
// root, which the tests here run as; without it the test fails rather than skipping.
func bindMount(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o750); err != nil {
		t.Fatal(err)
	}
	mountFS(t, src, dst, "", unix.MS_BIND, "")
}

// TestTmpLeftoversAreRemovedOnce: a start removes the leftover temp files in one pass, even
// while something keeps creating them (a second process on the same data dir): it must return.
func TestTmpLeftoversAreRemovedOnce(t *testing.T) {
	dir := t.TempDir()
	s := openStoreWith(t, dir, smallVolumes)
	s.Close()
	tmp := filepath.Join(dir, "tmp")
	stop := make(chan struct{})
	var writers sync.WaitGroup
	for w := range 4 {
		writers.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				os.WriteFile(filepath.Join(tmp, fmt.Sprintf("FILw.%d.0.%d", w, i)), nil, 0o600)
			}
		})
	}
	defer writers.Wait()
	defer close(stop)
	deadline := time.Now().Add(time.Second)
	for {
		if n, _ := os.ReadDir(tmp); len(n) > 1000 || time.Now().After(deadline) {
			break
		}
	}
	done := make(chan error, 1)
	go func() {
		s, err := OpenShardStoreWith(dir, smallVolumes)
		if err == nil {
			s.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the start did not return while tmp kept refilling")
	}
}

// TestMigrationAcrossFilesystemsIsLogged: the old layout's directory (shards/FI) linked to
// another filesystem holds a shard file of another fan-out. Its move fails with EXDEV; that is
// logged and the node starts, the file left where it was (found by helper-39).
func TestMigrationAcrossFilesystemsIsLogged(t *testing.T) {
	dir, body := storeWithFanShard(t)
	other := otherFilesystemDir(t)
	misplaced := ShardID{File: "FILotherCD", Segment: 0, Index: 0}
	old := filepath.Join(other, misplaced.String())
	if err := os.WriteFile(old, testShard(misplaced, 100<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(other, filepath.Join(dir, "shards", "FI")); err != nil {
		t.Fatal(err)
	}
	s, logged := openLogged(t, dir)
	mustRead(t, s, fanID, body)
	if _, err := os.Stat(old); err != nil {
		t.Errorf("the file that could not be moved is gone: %v", err)
	}
	if !bytes.Contains(logged.Bytes(), []byte("cross-device")) {
		t.Errorf("the failed move was not logged: %q", logged.String())
	}
}

// TestOnlyFanOutNamesAreWalked: a link under shards whose name no layout used (here "backup",
// to a directory outside the store) is not a fan-out directory: the files in its target are
// neither moved into the store by the migration nor listed (found by helper-39).
func TestOnlyFanOutNamesAreWalked(t *testing.T) {
	dir, body := storeWithFanShard(t)
	outside := t.TempDir()
	id := ShardID{File: "FILkeptCD", Segment: 3, Index: 1}
	kept := filepath.Join(outside, id.String())
	if err := os.WriteFile(kept, testShard(id, 100<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "shards", "backup")); err != nil {
		t.Fatal(err)
	}
	s := openStoreWith(t, dir, smallVolumes)
	if _, err := os.Stat(kept); err != nil {
		t.Errorf("a file outside the store was moved in: %v", err)
	}
	wantOnlyFanShard(t, s, body)
}

// TestBindMountedShardsIsRefused: shards, or one fan-out directory, a bind mount of another
// directory on the same filesystem. rename(2) fails with EXDEV across mounts, not only across
// filesystems, so every large commit there failed while the start said nothing (helper-41): the
// start compares mount ids (statx), refuses the first and logs the second.
func TestBindMountedShardsIsRefused(t *testing.T) {
	t.Run("fan-out", func(t *testing.T) {
		dir, body := storeWithFanShard(t)
		bindMount(t, t.TempDir(), filepath.Join(dir, "shards", "CD"))
		s, logged := openLogged(t, dir)
		mustRead(t, s, fanID, body)
		if !bytes.Contains(logged.Bytes(), []byte("another mount")) || !bytes.Contains(logged.Bytes(), []byte("CD")) {
			t.Errorf("the bind-mounted fan-out directory was not logged: %q", logged.String())
		}
	})
	t.Run("shards", func(t *testing.T) {
		dir := t.TempDir()
		bindMount(t, t.TempDir(), filepath.Join(dir, "shards"))
		s, err := OpenShardStoreWith(dir, smallVolumes)
		if err == nil {
			defer s.Close()
			w, _ := s.Create(fanID)
			defer w.Abort()
			w.Write(testShard(fanID, 200<<10))
			t.Fatalf("the store started with shards a bind mount; a large commit then returns %v", w.Commit())
		}
		if !strings.Contains(err.Error(), "different mounts") {
			t.Errorf("error %q does not say why", err)
		}
	})
}

// TestOldTempNamesAreRemoved: temp files of crashed writes of ids that Create took before
// 6e33b76 (a segment or index above 2^32-1) are removed too; ParseShardID refuses those ids
// now, and a start that used it to recognise temp files left them in tmp for good (helper-42).
func TestOldTempNamesAreRemoved(t *testing.T) {
	dir, _ := storeWithFanShard(t)
	tmp := filepath.Join(dir, "tmp")
	names := []string{"FILx.4294967296.0.123456", "FILx.0.4294967296.99", "FILx.9223372036854775807.1.7"}
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(tmp, n), []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	openStoreWith(t, dir, smallVolumes).Close()
	for _, n := range names {
		if _, err := os.Lstat(filepath.Join(tmp, n)); err == nil {
			t.Errorf("temp file %s of a crashed write is still in tmp after a start", n)
		}
	}
}

// TestOpenWithoutStatx: where statx is missing (Linux before 4.11: ENOSYS) or denied (a seccomp
// profile: EPERM), the start compares devices from stat(2) instead of failing (helper-42). The
// store is opened by a re-run of this test binary under a seccomp filter that fails statx.
func TestOpenWithoutStatx(t *testing.T) {
	if e := os.Getenv("CAIRN_TEST_DENY_STATX"); e != "" {
		errno := map[string]unix.Errno{"ENOSYS": unix.ENOSYS, "EPERM": unix.EPERM}[e]
		denyStatx(t, errno)
		s, err := OpenShardStoreWith(os.Getenv("CAIRN_TEST_DIR"), smallVolumes)
		if err != nil {
			t.Fatalf("statx denied (%v): the start fails: %v", errno, err)
		}
		s.Close()
		return
	}
	for _, e := range []string{"ENOSYS", "EPERM"} {
		t.Run(e, func(t *testing.T) {
			dir, _ := storeWithFanShard(t)
			cmd := exec.Command(os.Args[0], "-test.run=^TestOpenWithoutStatx$", "-test.count=1", "-test.v")
			cmd.Env = append(os.Environ(), "CAIRN_TEST_DENY_STATX="+e, "CAIRN_TEST_DIR="+dir)
			out, err := cmd.CombinedOutput()
			if err != nil || !bytes.Contains(out, []byte("--- PASS: TestOpenWithoutStatx")) {
				t.Errorf("child: %v\n%s", err, out)
			}
		})
	}
}

// denyStatx installs a seccomp filter on every thread of the process that makes statx fail
// with errno (x86-64; other architectures are let through, and the check below then fails).
func denyStatx(t *testing.T, errno unix.Errno) {
	t.Helper()
	const (
		ldW  = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeqK = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		retK = unix.BPF_RET | unix.BPF_K
	)
	filter := []unix.SockFilter{
		{Code: ldW, K: 4}, // seccomp_data.arch
		{Code: jeqK, Jt: 1, Jf: 0, K: unix.AUDIT_ARCH_X86_64},
		{Code: retK, K: unix.SECCOMP_RET_ALLOW},
		{Code: ldW, K: 0}, // seccomp_data.nr
		{Code: jeqK, Jt: 0, Jf: 1, K: unix.SYS_STATX},
		{Code: retK, K: unix.SECCOMP_RET_ERRNO | uint32(errno)},
		{Code: retK, K: unix.SECCOMP_RET_ALLOW},
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	if _, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&prog))); e != 0 {
		t.Fatalf("seccomp: %v", e)
	}
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, "/", 0, unix.STATX_MNT_ID, &st); err != errno {
		t.Fatalf("the filter is not in force: statx returned %v", err)
	}
}

// TestMountCheckAcceptsOneMount: the start refuses shards on another mount than tmp, and must not
// refuse a data dir where both are on one mount however it is reached: a data dir that is itself a
// mount point, a symlink to one elsewhere, a bind mount of one, or an overlay whose lower layer
// holds the store (a container image). In each the old shard reads, a new large shard (committed
// by a rename out of tmp) is written and reads back after a restart, and nothing is logged about
// another mount.
func TestMountCheckAcceptsOneMount(t *testing.T) {
	newID := ShardID{File: "FILnewCD", Segment: 0, Index: 1}
	for _, c := range []struct {
		name string
		// dataDir returns the data dir to open and the body of fanID stored there, or nil.
		dataDir func(t *testing.T) (string, []byte)
	}{
		{"data dir a mount point", func(t *testing.T) (string, []byte) {
			dir := t.TempDir()
			mountFS(t, "tmpfs", dir, "tmpfs", 0, "size=64m")
			return dir, nil
		}},
		{"data dir a symlink", func(t *testing.T) (string, []byte) {
			real, body := storeWithFanShard(t)
			link := filepath.Join(t.TempDir(), "data")
			if err := os.Symlink(real, link); err != nil {
				t.Fatal(err)
			}
			return link, body
		}},
		{"data dir a bind mount", func(t *testing.T) (string, []byte) {
			real, body := storeWithFanShard(t)
			dst := filepath.Join(t.TempDir(), "data")
			bindMount(t, real, dst)
			return dst, body
		}},
		{"overlay over the store", func(t *testing.T) (string, []byte) {
			lower, body := storeWithFanShard(t)
			upper, work, merged := t.TempDir(), t.TempDir(), t.TempDir()
			mountFS(t, "overlay", merged, "overlay", 0, "lowerdir="+lower+",upperdir="+upper+",workdir="+work)
			return merged, body
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir, old := c.dataDir(t)
			s, logged := openLogged(t, dir)
			if old != nil {
				mustRead(t, s, fanID, old)
			}
			body := testShard(newID, 300<<10)
			putShard(t, s, newID, body)
			if fi, err := os.Lstat(s.Path(newID)); err != nil || !fi.Mode().IsRegular() {
				t.Fatalf("the large shard is not a file of its own (%v, %v): this test is about its rename out of tmp", fi, err)
			}
			s.Close()
			s, again := openLogged(t, dir)
			mustRead(t, s, newID, body)
			if old != nil {
				mustRead(t, s, fanID, old)
			}
			for _, l := range []*bytes.Buffer{logged, again} {
				if bytes.Contains(l.Bytes(), []byte("another mount")) {
					t.Errorf("one mount was logged as two: %s", l)
				}
			}
		})
	}
}

// mountFS mounts a filesystem at dst for the test (needs root, as CI has).
func mountFS(t *testing.T, source, dst, fstype string, flags uintptr, data string) {
	t.Helper()
	if err := unix.Mount(source, dst, fstype, flags, data); err != nil {
		t.Fatalf("mount %s %s at %s (needs root): %v", fstype, source, dst, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dst, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dst, err)
		}
	})
}
