package testcluster

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/erasure"
	"github.com/cairn-dev/cairn/fsm"
	"github.com/cairn-dev/cairn/internal/testutil"
	"github.com/cairn-dev/cairn/node"
)

// integrityFileSize spans three blocks of the test clusters' 16 KiB (two full ones, so two frames
// of one shard can trade places) in one segment.
const integrityFileSize = 40_000

// shardOnDisk is one stored shard of a committed file, where it lives: a file of its own or a
// record in a volume.
type shardOnDisk struct {
	id     erasure.ShardID
	holder int // cluster index of the node holding it
	store  *erasure.ShardStore
	loc    erasure.ShardLocation
	orig   []byte
}

func shardsOf(t *testing.T, c *Cluster, f fsm.File, segment int) []shardOnDisk {
	t.Helper()
	var out []shardOnDisk
	for idx, holder := range f.Layout.Segments[segment].Nodes {
		i := holder2index(c, holder)
		s := shardOnDisk{id: erasure.ShardID{File: f.ID, Segment: segment, Index: idx}, holder: i, store: c.Node(i).Shards()}
		b, err := s.stored()
		if err != nil {
			t.Fatal(err)
		}
		s.orig = b
		s.loc, _ = s.store.Locate(s.id)
		out = append(out, s)
	}
	return out
}

// stored reads the shard's bytes as they are on disk now, wherever the store keeps them.
func (s shardOnDisk) stored() ([]byte, error) {
	loc, err := s.store.Locate(s.id)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(loc.Path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, loc.Length)
	_, err = f.ReadAt(b, loc.Offset)
	return b, err
}

// write puts b where the shard's bytes were, behind the store's back, as a disk or an operator
// would. In a volume, b must be as long as the shard, or a prefix of it: the volume is then cut
// there, as a torn or truncated file would be.
func (s shardOnDisk) write(t *testing.T, b []byte) {
	t.Helper()
	if !s.loc.InVolume {
		if err := os.WriteFile(s.loc.Path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return
	}
	f, err := os.OpenFile(s.loc.Path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	switch {
	case int64(len(b)) == s.loc.Length:
		_, err = f.WriteAt(b, s.loc.Offset)
	case int64(len(b)) < s.loc.Length && bytes.Equal(b, s.orig[:len(b)]):
		err = f.Truncate(s.loc.Offset + int64(len(b)))
	default:
		t.Fatalf("cannot put %d bytes over a %d-byte volume record", len(b), s.loc.Length)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// remove makes the shard missing: its file goes, or its record is deleted.
func (s shardOnDisk) remove(t *testing.T) {
	t.Helper()
	var err error
	if s.loc.InVolume {
		err = s.store.Delete(s.id)
	} else {
		err = os.Remove(s.loc.Path)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// faultCount sums a metric over every node.
func faultCount(t *testing.T, c *Cluster, series ...string) float64 {
	t.Helper()
	var sum float64
	for i := range c.Size() {
		for _, s := range series {
			sum += metricValue(t, c, i, s)
		}
	}
	return sum
}

// readsNeverLie downloads the file through every node. An answer may be an error (status or a
// broken transfer) only when allowFail; a 200 that ends cleanly must carry exactly data.
func readsNeverLie(t *testing.T, c *Cluster, token string, data []byte, allowFail bool) {
	t.Helper()
	for i := range c.Size() {
		resp, err := c.Client(i).Download(token)
		// A 503 before any byte (a leader election on a loaded machine) is retried, like a client
		// honouring Retry-After; it is never wrong bytes.
		for deadline := time.Now().Add(10 * time.Second); err == nil && resp.Status == http.StatusServiceUnavailable &&
			!allowFail && time.Now().Before(deadline); {
			time.Sleep(100 * time.Millisecond)
			resp, err = c.Client(i).Download(token)
		}
		switch {
		case err == nil && resp.Status == http.StatusOK:
			if !bytes.Equal(resp.Body, data) {
				t.Fatalf("node%d answered 200 with wrong bytes (%d of %d)", i, len(resp.Body), len(data))
			}
		case allowFail:
			t.Logf("node%d: status %d, transfer error %v (allowed)", i, resp.Status, err)
		default:
			t.Fatalf("node%d: status %d, err %v, body %.200s", i, resp.Status, err, resp.Body)
		}
	}
}

// TestShardCorruptionCaughtAndHealed damages one shard of a fresh file in each way a disk or an
// operator can, and checks for each that no node answers 200 with wrong bytes, the fault shows in
// the metrics, and the shard is rewritten in place within a deadline: once by reading the file,
// once by one scrub pass on the holder (no read at all). With two of three shards damaged the
// file cannot be read, and no node pretends it can. It runs with shards as files of their own
// and with small shards as volume records (the default for a file this size).
func TestShardCorruptionCaughtAndHealed(t *testing.T) {
	for _, mode := range []struct {
		name     string
		volumes  bool
		maxShard int64
	}{{"files", false, 0}, {"volumes", true, node.DefaultConfig().SmallShardMax}} {
		t.Run(mode.name, func(t *testing.T) {
			c := New(t, Options{Configure: func(_ int, cfg *node.Config) { cfg.SmallShardMax = mode.maxShard }})
			testShardCorruption(t, c, mode.volumes)
		})
	}
}

func testShardCorruption(t *testing.T, c *Cluster, volumes bool) {
	frame := erasure.ChunkLen(16<<10, erasure.Geometry{Data: 2, Parity: 1}) + 4
	type damage func(t *testing.T, target []shardOnDisk, other []shardOnDisk)
	flip := func(t *testing.T, s shardOnDisk) {
		b := bytes.Clone(s.orig)
		b[erasure.ShardHeaderLen+frame+100] ^= 0x01 // one bit of block 1's chunk
		s.write(t, b)
	}
	tests := []struct {
		name     string
		damage   damage
		healable bool
		fault    []string // series of which at least one must rise on a read
	}{
		{"one byte flipped", func(t *testing.T, s, _ []shardOnDisk) { flip(t, s[0]) }, true,
			[]string{`cairn_read_shard_faults_total{kind="corrupt"}`}},
		{"truncated", func(t *testing.T, s, _ []shardOnDisk) { s[0].write(t, s[0].orig[:len(s[0].orig)-frame/2]) }, true,
			[]string{`cairn_read_shard_faults_total{kind="corrupt"}`}},
		{"deleted", func(t *testing.T, s, _ []shardOnDisk) { s[0].remove(t) }, true,
			[]string{`cairn_read_shard_faults_total{kind="unavailable"}`}},
		{"sibling copied over", func(t *testing.T, s, _ []shardOnDisk) { s[0].write(t, s[1].orig) }, true,
			[]string{`cairn_read_shard_faults_total{kind="corrupt"}`}},
		{"another file's shard copied over", func(t *testing.T, s, other []shardOnDisk) { s[0].write(t, other[0].orig) }, true,
			[]string{`cairn_read_shard_faults_total{kind="corrupt"}`}},
		{"two frames swapped", func(t *testing.T, s, _ []shardOnDisk) {
			b := bytes.Clone(s[0].orig)
			h := erasure.ShardHeaderLen
			copy(b[h:], s[0].orig[h+frame:h+2*frame])
			copy(b[h+frame:], s[0].orig[h:h+frame])
			s[0].write(t, b)
		}, true, []string{`cairn_read_shard_faults_total{kind="corrupt"}`}},
		{"2 of 3 corrupted", func(t *testing.T, s, _ []shardOnDisk) { flip(t, s[0]); flip(t, s[1]) }, false,
			[]string{`cairn_read_shard_faults_total{kind="corrupt"}`}},
	}
	seq := 0
	for _, tt := range tests {
		for _, by := range []string{"read", "scrub"} {
			t.Run(tt.name+"/healed by "+by, func(t *testing.T) {
				seq++
				data := randomData(int64(900+seq), integrityFileSize)
				token, _ := mustUpload(t, c, seq%3, fmt.Sprintf("i%d", seq), data)
				otherToken, _ := mustUpload(t, c, (seq+1)%3, fmt.Sprintf("o%d", seq), randomData(int64(-seq), integrityFileSize))
				// Ask the node that took each upload: the others may not have applied it yet.
				f := fileOf(t, c, seq%3, token)
				target := shardsOf(t, c, f, 0)
				other := shardsOf(t, c, fileOf(t, c, (seq+1)%3, otherToken), 0)
				if target[0].loc.InVolume != volumes {
					t.Fatalf("shard in a volume: %v, want %v", target[0].loc.InVolume, volumes)
				}
				tt.damage(t, target, other)

				if by == "read" {
					before := faultCount(t, c, tt.fault...)
					readsNeverLie(t, c, token, data, !tt.healable)
					if after := faultCount(t, c, tt.fault...); after <= before {
						t.Fatalf("%v did not rise (%v -> %v)", tt.fault, before, after)
					}
				} else {
					failures := `cairn_scrub_checksum_failures_total`
					before := faultCount(t, c, failures)
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer cancel()
					damaged := []int{target[0].holder}
					if !tt.healable {
						damaged = append(damaged, target[1].holder)
					}
					for _, i := range damaged {
						// A pass refuses to start while the node has no leader (ErrNotReady).
						testutil.WaitFor(t, 20*time.Second, fmt.Sprintf("a scrub pass on node%d", i), func() bool {
							_, _, err := c.Node(i).ScrubOnce(ctx)
							if err != nil && !errors.Is(err, node.ErrNotReady) {
								t.Fatalf("scrub on node%d: %v", i, err)
							}
							return err == nil
						})
					}
					if after := faultCount(t, c, failures); after < before+float64(len(damaged)) {
						t.Fatalf("scrub failures went from %v to %v, want +%d", before, after, len(damaged))
					}
				}
				if !tt.healable {
					readsNeverLie(t, c, token, data, true)
					return
				}
				testutil.WaitFor(t, 15*time.Second, "the damaged shard rewritten in place", func() bool {
					got, err := target[0].stored()
					return err == nil && bytes.Equal(got, target[0].orig)
				})
				readsNeverLie(t, c, token, data, false)
			})
		}
	}
}

// toV1 rewrites a v2 shard of a segment of segLen bytes in the original v1 format: no header,
// and each frame's CRC-32C over its chunk alone, as the code before format v2 wrote it.
func toV1(t *testing.T, v2 []byte, segLen int64, blockSize int, g erasure.Geometry) []byte {
	t.Helper()
	frames := v2[erasure.ShardHeaderLen:]
	var out []byte
	for off := int64(0); off < segLen; off += int64(blockSize) {
		cl := erasure.ChunkLen(int(min(int64(blockSize), segLen-off)), g)
		if len(frames) < cl+4 {
			t.Fatalf("shard shorter than its frames")
		}
		chunk := frames[:cl]
		out = append(out, chunk...)
		out = binary.BigEndian.AppendUint32(out, crc32.Checksum(chunk, crc32.MakeTable(crc32.Castagnoli)))
		frames = frames[cl+4:]
	}
	return out
}

// TestV1ShardsInCluster: a file whose shards are in the v1 format (as every node stored them
// before format v2) reads back byte-exact through every node. v1 checksums do not bind a frame to
// its place, so two of its data shards swapped pass every frame check: the file's SHA-256 catches
// it, no node answers a clean 200, and the mismatch is counted.
func TestV1ShardsInCluster(t *testing.T) {
	c := New(t, Options{Configure: func(_ int, cfg *node.Config) { cfg.SmallShardMax = 0 }}) // v1 shards as files, as v0.1.0 wrote them
	data := randomData(77, integrityFileSize)
	token, _ := mustUpload(t, c, 0, "v1.bin", data)
	f := fileOf(t, c, 0, token)
	shards := shardsOf(t, c, f, 0)
	v1 := make([][]byte, len(shards))
	for i, s := range shards {
		v1[i] = toV1(t, s.orig, f.Layout.Segments[0].Size, f.Layout.BlockSize, f.Layout.Geometry)
		if err := os.WriteFile(s.loc.Path, v1[i], 0o600); err != nil {
			t.Fatal(err)
		}
	}
	readsNeverLie(t, c, token, data, false)

	mismatches := `cairn_read_content_mismatches_total`
	before := faultCount(t, c, mismatches)
	if err := os.WriteFile(shards[0].loc.Path, v1[1], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(shards[1].loc.Path, v1[0], 0o600); err != nil {
		t.Fatal(err)
	}
	for i := range c.Size() {
		resp, err := c.Client(i).Download(token)
		if err == nil && resp.Status == http.StatusOK {
			t.Fatalf("node%d answered a clean 200 for swapped shards (right bytes: %v)", i, bytes.Equal(resp.Body, data))
		}
		if resp.Status == http.StatusOK && len(resp.Body) >= len(data) {
			t.Fatalf("node%d sent the whole body before failing", i)
		}
	}
	if after := faultCount(t, c, mismatches); after < before+float64(c.Size()) {
		t.Fatalf("%s went from %v to %v, want +%d", mismatches, before, after, c.Size())
	}
}
