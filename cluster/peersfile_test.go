package cluster

import (
	"maps"
	"os"
	"path/filepath"
	"testing"
)

// TestPeersFileV1Fixture: a peers file written by the first version stays readable.
func TestPeersFileV1Fixture(t *testing.T) {
	got, err := readPeersFile(filepath.Join("testdata", "gossip-peers-v1.json"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"node2": "10.0.0.2:7946", "node3": "10.0.0.3:7946"}
	if !maps.Equal(got, want) {
		t.Fatalf("read %v, want %v", got, want)
	}
}

func TestPeersFileRoundTripAndDamage(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "gossip-peers.json")
	if got, err := readPeersFile(path); err != nil || got != nil {
		t.Fatalf("missing file: %v, %v; want no peers and no error", got, err)
	}
	want := map[string]string{"b": "127.0.0.2:7946", "a": "127.0.0.1:7946"}
	if err := writePeersFile(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := readPeersFile(path)
	if err != nil || !maps.Equal(got, want) {
		t.Fatalf("round trip: %v, %v; want %v", got, err, want)
	}
	fixture, err := os.ReadFile(filepath.Join("testdata", "gossip-peers-v1.json"))
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{
		"truncated":       string(fixture[:len(fixture)/2]),
		"unknown version": `{"version": 99, "peers": []}`,
		"not json":        "\x00\x01garbage",
	} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if got, err := readPeersFile(path); err == nil {
			t.Errorf("%s: read %v without an error", name, got)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temp files left behind: %v", entries)
	}
}
