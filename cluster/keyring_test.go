package cluster

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cairn-dev/cairn/cluster/clusterapi"
)

// TestKeyringFileFixture: a keyring file written by the first version keeps loading, forever.
func TestKeyringFileFixture(t *testing.T) {
	dir := t.TempDir()
	b, err := os.ReadFile("testdata/gossip-keyring-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "gossip-keyring.json")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	k, fromFile, err := openKeyring(file, []byte("0000000000000000"))
	if err != nil || !fromFile {
		t.Fatalf("openKeyring: fromFile %v, %v", fromFile, err)
	}
	v := k.view("n1")
	primary := KeyFingerprint([]byte("hello-cairn-gossip-key-32-bytes!"))
	other := KeyFingerprint([]byte("0123456789abcdef"))
	if v.Primary != primary || !slices.Equal(v.Keys, sortedOf(primary, other)) {
		t.Fatalf("fixture keyring = %+v", v)
	}
}

func sortedOf(s ...string) []string { slices.Sort(s); return s }

func TestKeyringOpsAndPersistence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "gossip-keyring.json")
	initial := []byte("initial-key-0123")
	k, fromFile, err := openKeyring(file, initial)
	if err != nil || fromFile {
		t.Fatalf("openKeyring without a file: fromFile %v, %v", fromFile, err)
	}
	newKey := "aGVsbG8tY2Fpcm4tZ29zc2lwLWtleS0zMi1ieXRlcyE="
	newFP := KeyFingerprint([]byte("hello-cairn-gossip-key-32-bytes!"))
	oldFP := KeyFingerprint(initial)
	for _, tc := range []struct {
		op, ref string
		want    error
	}{
		{clusterapi.KeyringInstall, "not base64!", clusterapi.ErrInvalidGossipKey},
		{clusterapi.KeyringInstall, "c2hvcnQ=", clusterapi.ErrInvalidGossipKey}, // 5 bytes
		{clusterapi.KeyringUse, newFP, clusterapi.ErrInvalidGossipKey},          // not installed yet
		{clusterapi.KeyringInstall, newKey, nil},
		{clusterapi.KeyringRemove, oldFP, clusterapi.ErrKeyringRefused}, // still primary
		{clusterapi.KeyringUse, newFP, nil},                             // by fingerprint
		{clusterapi.KeyringRemove, oldFP, nil},
		{"rotate", newKey, clusterapi.ErrInvalidGossipKey},
	} {
		if err := k.apply(tc.op, tc.ref); !errors.Is(err, tc.want) && !(tc.want == nil && err == nil) {
			t.Fatalf("%s %s: %v, want %v", tc.op, tc.ref, err, tc.want)
		}
	}
	st, err := os.Stat(file)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("keyring file: %v %v", st, err)
	}
	// A restart loads the rotated ring, not the initial key.
	k2, fromFile, err := openKeyring(file, initial)
	if err != nil || !fromFile {
		t.Fatalf("reopen: fromFile %v, %v", fromFile, err)
	}
	if v := k2.view("n1"); v.Primary != newFP || !slices.Equal(v.Keys, []string{newFP}) {
		t.Fatalf("reopened keyring = %+v, want only %s", v, newFP)
	}
	// A corrupt or unknown-version file is an error, never a silent fallback to the derived key.
	for _, bad := range []string{`{`, `{"version":2,"primary":"` + newKey + `","keys":[]}`} {
		os.WriteFile(file, []byte(bad), 0o600)
		if _, _, err := openKeyring(file, initial); err == nil {
			t.Fatalf("openKeyring accepted %s", bad)
		}
	}
}
