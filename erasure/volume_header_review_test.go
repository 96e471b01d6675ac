package erasure

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/cairn-dev/cairn/internal/testutil"
)

// TestVolumeHeaderDamageKeepsStoreOpenable damages a v2 volume header in each way a disk or a crash
// can (its key, its version or length field, a header cut short, an empty file, a header alone)
// and checks that the store still opens, serves every shard of the intact volumes byte-exact and
// none of the damaged volume with wrong bytes, takes new shards that survive a reopen, and never
// writes a volume's key into its log.
func TestVolumeHeaderDamageKeepsStoreOpenable(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string) // applied to the last volume
		lost   bool                            // the last volume's shards are gone (set aside or removed)
	}{
		{"key byte flipped", func(t *testing.T, p string) { flipByte(t, p, 24+17) }, true},
		{"version downgraded to 1", func(t *testing.T, p string) { writeAt(t, p, 8, []byte{0, 1}) }, true},
		{"header length field", func(t *testing.T, p string) { writeAt(t, p, 10, []byte{0, 32}) }, true},
		{"header checksum", func(t *testing.T, p string) { flipByte(t, p, 62) }, true},
		{"cut inside the header (crash before its fsync)", func(t *testing.T, p string) { truncate(t, p, 40) }, true},
		{"empty file", func(t *testing.T, p string) { truncate(t, p, 0) }, true},
		{"header alone (crash before the first batch)", func(t *testing.T, p string) { truncate(t, p, volumeHeaderLenV2) }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ids := fillVolumes(t, dir, "FILhdrdmg")
			vols := volumeFiles(t, dir)
			if len(vols) < 2 {
				t.Fatalf("%d volumes, want several", len(vols))
			}
			last := vols[len(vols)-1]
			key := volumeKeyOf(t, last)
			tc.damage(t, last)

			var logs testutil.SyncBuffer
			opts := smallVolumes
			opts.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			s, err := OpenShardStoreWith(dir, opts)
			if err != nil {
				t.Fatalf("the store does not open: %v", err)
			}
			served, missing := 0, 0
			for _, id := range ids {
				got, err := readAll(s, id)
				switch {
				case err == nil && bytes.Equal(got, testShard(id, 4000)):
					served++
				case err == nil:
					t.Fatalf("shard %s reads wrong bytes", id)
				case errors.Is(err, ErrShardNotFound):
					missing++
				default:
					t.Fatalf("shard %s: %v", id, err)
				}
			}
			if served == 0 || (tc.lost && missing == 0) {
				t.Fatalf("%d served, %d missing of %d", served, missing, len(ids))
			}
			fresh := ShardID{File: "FILhdrnew", Segment: 0, Index: 0}
			putShard(t, s, fresh, testShard(fresh, 3000))
			s.Close()
			for _, l := range []string{logs.String()} {
				if bytes.Contains([]byte(l), key) || bytes.Contains([]byte(l), []byte(hex.EncodeToString(key))) ||
					bytes.Contains([]byte(l), []byte(fmt.Sprint(key))) {
					t.Fatalf("the volume key is in the log:\n%s", l)
				}
			}
			s = openStoreWith(t, dir, smallVolumes)
			mustRead(t, s, fresh, testShard(fresh, 3000))
		})
	}
}

// fillVolumes commits 400 shards of 4000 payload bytes (testShard) under file into a store of
// small volumes in dir, enough for several volumes, closes it and returns their ids.
func fillVolumes(t *testing.T, dir, file string) []ShardID {
	t.Helper()
	s, err := OpenShardStoreWith(dir, smallVolumes)
	if err != nil {
		t.Fatal(err)
	}
	var ids []ShardID
	for i := range 400 {
		id := ShardID{File: file, Segment: i, Index: 0}
		putShard(t, s, id, testShard(id, 4000))
		ids = append(ids, id)
	}
	s.Close()
	return ids
}

func volumeKeyOf(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, f, err := parseVolumeHeader(b[:min(len(b), maxVolumeHeaderLen)])
	if err != nil || f.version != VolumeFormatV2 {
		t.Fatalf("%s: %v, format %d", filepath.Base(path), err, f.version)
	}
	return bytes.Clone(f.key)
}

func writeAt(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func truncate(t *testing.T, path string, size int64) {
	t.Helper()
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}
