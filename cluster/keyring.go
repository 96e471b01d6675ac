package cluster

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/hashicorp/memberlist"

	"github.com/cairn-dev/cairn/cluster/clusterapi"
)

// KeyFingerprint names a gossip key without revealing it: 16 hex digits of its SHA-256.
func KeyFingerprint(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:8])
}

// ParseGossipKey decodes a base64 gossip key (16, 24 or 32 bytes: AES-128, -192 or -256).
func ParseGossipKey(s string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("%w: not base64", clusterapi.ErrInvalidGossipKey)
	}
	if l := len(key); l != 16 && l != 24 && l != 32 {
		return nil, fmt.Errorf("%w: %d bytes, want 16, 24 or 32", clusterapi.ErrInvalidGossipKey, l)
	}
	return key, nil
}

// localKeyring is memberlist's keyring of this node, persisted to a file so that a restarted node
// still speaks the keys the cluster rotated to (the secret it was started with may be gone from
// the others' rings).
type localKeyring struct {
	ring *memberlist.Keyring
	file string // "" = not persisted (tests)
	mu   sync.Mutex
}

// keyringFileVersion is the version of the keyring file; a new layout gets a new version and the
// loader keeps reading every old one.
const keyringFileVersion = 1

type keyringFile struct {
	Version int      `json:"version"`
	Primary string   `json:"primary"` // base64
	Keys    []string `json:"keys"`    // base64, primary included
}

// openKeyring loads file when it exists, else starts from initial (the key derived from the
// cluster secret). fromFile reports which.
func openKeyring(file string, initial []byte) (k *localKeyring, fromFile bool, err error) {
	k = &localKeyring{file: file}
	if file != "" {
		b, err := os.ReadFile(file)
		switch {
		case err == nil:
			keys, primary, err := decodeKeyringFile(b)
			if err != nil {
				return nil, false, fmt.Errorf("gossip keyring %s: %w", file, err)
			}
			if k.ring, err = memberlist.NewKeyring(keys, primary); err != nil {
				return nil, false, fmt.Errorf("gossip keyring %s: %w", file, err)
			}
			return k, true, nil
		case !errors.Is(err, os.ErrNotExist):
			return nil, false, fmt.Errorf("gossip keyring: %w", err)
		}
	}
	if k.ring, err = memberlist.NewKeyring(nil, initial); err != nil {
		return nil, false, fmt.Errorf("gossip keyring: %w", err)
	}
	return k, false, nil
}

func decodeKeyringFile(b []byte) (keys [][]byte, primary []byte, err error) {
	var f keyringFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, nil, fmt.Errorf("decode: %w", err)
	}
	if f.Version != keyringFileVersion {
		return nil, nil, fmt.Errorf("unknown keyring file version %d", f.Version)
	}
	if primary, err = ParseGossipKey(f.Primary); err != nil {
		return nil, nil, fmt.Errorf("primary: %w", err)
	}
	for _, s := range f.Keys {
		key, err := ParseGossipKey(s)
		if err != nil {
			return nil, nil, err
		}
		keys = append(keys, key)
	}
	return keys, primary, nil
}

// save writes the keyring (0600, temp file, fsync, rename), under k.mu.
func (k *localKeyring) save() error {
	if k.file == "" {
		return nil
	}
	f := keyringFile{Version: keyringFileVersion, Primary: base64.StdEncoding.EncodeToString(k.ring.GetPrimaryKey())}
	for _, key := range k.ring.GetKeys() {
		f.Keys = append(f.Keys, base64.StdEncoding.EncodeToString(key))
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(k.file, b, 0o600); err != nil {
		return fmt.Errorf("save gossip keyring: %w", err)
	}
	return nil
}

// writeFileAtomic replaces path with data: a temp file in the same directory, fsynced, renamed.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	err = tmp.Chmod(perm)
	if err == nil {
		_, err = tmp.Write(data)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	return err
}

// view lists the keyring by fingerprint, sorted, primary first.
func (k *localKeyring) view(node string) clusterapi.MemberKeys {
	k.mu.Lock()
	defer k.mu.Unlock()
	mk := clusterapi.MemberKeys{Node: node, Primary: KeyFingerprint(k.ring.GetPrimaryKey())}
	for _, key := range k.ring.GetKeys() {
		mk.Keys = append(mk.Keys, KeyFingerprint(key))
	}
	slices.Sort(mk.Keys)
	return mk
}

// resolve finds the installed key that ref names: the base64 key itself or its fingerprint.
func (k *localKeyring) resolve(ref string) ([]byte, error) {
	var want []byte
	if key, err := ParseGossipKey(ref); err == nil {
		want = key
	}
	for _, key := range k.ring.GetKeys() {
		if want != nil && subtle.ConstantTimeCompare(key, want) == 1 || want == nil && KeyFingerprint(key) == strings.TrimSpace(ref) {
			return key, nil
		}
	}
	return nil, fmt.Errorf("%w: no installed key matches", clusterapi.ErrInvalidGossipKey)
}

// apply runs one keyring operation locally: install (a base64 key), use or remove (a key or its
// fingerprint). The ring is saved after a change; a failed save undoes nothing in memory but is
// reported, since a restart would then come back with the old ring.
func (k *localKeyring) apply(op, ref string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	switch op {
	case clusterapi.KeyringInstall:
		key, err := ParseGossipKey(ref)
		if err != nil {
			return err
		}
		if err := k.ring.AddKey(key); err != nil {
			return fmt.Errorf("%w: %v", clusterapi.ErrInvalidGossipKey, err)
		}
	case clusterapi.KeyringUse:
		key, err := k.resolve(ref)
		if err != nil {
			return err
		}
		if err := k.ring.UseKey(key); err != nil {
			return fmt.Errorf("%w: %v", clusterapi.ErrKeyringRefused, err)
		}
	case clusterapi.KeyringRemove:
		key, err := k.resolve(ref)
		if err != nil {
			return err
		}
		if subtle.ConstantTimeCompare(key, k.ring.GetPrimaryKey()) == 1 {
			return fmt.Errorf("%w: the key is this node's primary key", clusterapi.ErrKeyringRefused)
		}
		if err := k.ring.RemoveKey(key); err != nil {
			return fmt.Errorf("%w: %v", clusterapi.ErrKeyringRefused, err)
		}
	default:
		return fmt.Errorf("%w: unknown keyring operation %q", clusterapi.ErrInvalidGossipKey, op)
	}
	return k.save()
}

// LocalKeys is this node's gossip keyring, by fingerprint.
func (m *Membership) LocalKeys() clusterapi.MemberKeys { return m.keyring.view(m.cfg.NodeID) }

// ApplyKeyOp changes this node's gossip keyring: install, use or remove (see KeyringAdmin for the
// cluster-wide rules).
func (m *Membership) ApplyKeyOp(op, ref string) error {
	if err := m.keyring.apply(op, ref); err != nil {
		return err
	}
	m.log.Info("gossip keyring changed", "op", op, "primary", KeyFingerprint(m.keyring.ring.GetPrimaryKey()))
	return nil
}

// LocalKeyring is one node's gossip keyring as the cluster-wide admin reaches it; *Membership
// implements it, and the RPC server serves it to the other nodes.
type LocalKeyring interface {
	LocalKeys() clusterapi.MemberKeys
	ApplyKeyOp(op, ref string) error
}

// KeyringAdmin changes the gossip keyring on every member, over internal RPC, with the rules that
// keep gossip whole: a key becomes primary only once every member has it, and is removed only
// once no member uses it as primary. Every member that has not left must answer, or the change is
// refused: a member that cannot be asked cannot be known to be safe. Members not verified over
// the cluster port are left out (members).
type KeyringAdmin struct {
	Self    string
	Members *Membership
	RPC     *RPCClient
	// RaftServers lists the ids of the Raft configuration's servers, or nil. A member that left
	// gossip but is still one of them (a node stopped gracefully for a restart, which a 3-node
	// cluster keeps in Raft) must take part too: a rotation without it would leave it only keys
	// that no member accepts once it starts again.
	RaftServers func() []string
}

// List asks every member for its keyring. Members that cannot be asked carry an Error.
func (a *KeyringAdmin) List(ctx context.Context) []clusterapi.MemberKeys {
	var out []clusterapi.MemberKeys
	for _, mem := range a.members() {
		out = append(out, a.ask(ctx, mem))
	}
	return out
}

// Apply runs op (install, use or remove) with ref (a base64 key; for use and remove also its
// fingerprint) on every member, after checking the rules on the keyrings of all of them.
func (a *KeyringAdmin) Apply(ctx context.Context, op, ref string) ([]clusterapi.MemberKeys, error) {
	switch op {
	case clusterapi.KeyringInstall:
		if _, err := ParseGossipKey(ref); err != nil {
			return nil, err
		}
	case clusterapi.KeyringUse, clusterapi.KeyringRemove:
		if strings.TrimSpace(ref) == "" {
			return nil, fmt.Errorf("%w: a key or its fingerprint is required", clusterapi.ErrInvalidGossipKey)
		}
	default:
		return nil, fmt.Errorf("%w: unknown keyring operation %q", clusterapi.ErrInvalidGossipKey, op)
	}
	fp := strings.TrimSpace(ref)
	if key, err := ParseGossipKey(ref); err == nil {
		fp = KeyFingerprint(key)
	}
	before := a.List(ctx)
	var problems []string
	for _, mk := range before {
		switch {
		case mk.Error != "":
			problems = append(problems, fmt.Sprintf("%s cannot be asked (%s)", mk.Node, mk.Error))
		case op == clusterapi.KeyringUse && !slices.Contains(mk.Keys, fp):
			problems = append(problems, fmt.Sprintf("%s does not have key %s (install it first)", mk.Node, fp))
		case op == clusterapi.KeyringRemove && mk.Primary == fp:
			problems = append(problems, fmt.Sprintf("%s uses key %s as primary (use another key first)", mk.Node, fp))
		}
	}
	// Install is harmless on a subset, so it goes ahead on every member it can reach; the others
	// are reported and the operator runs it again.
	if len(problems) > 0 && op != clusterapi.KeyringInstall {
		return before, fmt.Errorf("%w: %s", clusterapi.ErrKeyringRefused, strings.Join(problems, "; "))
	}
	var failed []string
	for _, mem := range a.members() {
		var err error
		if mem.Meta.ID == a.Self {
			err = a.Members.ApplyKeyOp(op, ref)
		} else if mem.State != StateAlive {
			continue // already reported
		} else {
			err = a.RPC.KeyringOp(ctx, mem.Meta.ClusterAddr, op, ref)
		}
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", mem.Meta.ID, err))
		}
	}
	after := a.List(ctx)
	if failed = append(problems, failed...); len(failed) > 0 {
		return after, fmt.Errorf("%w: %s %s did not reach every member: %s", clusterapi.ErrKeyringRefused, op, fp, strings.Join(failed, "; "))
	}
	return after, nil
}

// members are the members that have not left, and those that left but are still Raft servers:
// each must take part in a keyring change. An alive
// member that has not proven its id over the cluster port (Member.Verified) is not one: it could
// not be asked anyway, and a process that holds only the gossip key must not block the rotation
// that shuts it out.
func (a *KeyringAdmin) members() []Member {
	var servers []string
	if a.RaftServers != nil {
		servers = a.RaftServers()
	}
	var out []Member
	for _, mem := range a.Members.Members() {
		server := slices.Contains(servers, mem.Meta.ID)
		switch {
		case mem.State == StateLeft && !server:
		case mem.State == StateAlive && !mem.Verified && !server:
			// A Raft server that is not verified yet (it just rejoined) is still asked: left
			// out, it could miss the new key and be locked out by the remove.
		default:
			out = append(out, mem)
		}
	}
	return out
}

func (a *KeyringAdmin) ask(ctx context.Context, mem Member) clusterapi.MemberKeys {
	if mem.Meta.ID == a.Self {
		return a.Members.LocalKeys()
	}
	if mem.State == StateLeft {
		return clusterapi.MemberKeys{Node: mem.Meta.ID, Error: "member left but is still a raft server (start it again, or decommission it, before rotating)"}
	}
	if mem.State != StateAlive {
		return clusterapi.MemberKeys{Node: mem.Meta.ID, Error: "member is " + mem.State}
	}
	mk, err := a.RPC.Keyring(ctx, mem.Meta.ClusterAddr)
	if err != nil {
		return clusterapi.MemberKeys{Node: mem.Meta.ID, Error: err.Error()}
	}
	mk.Node = mem.Meta.ID
	return mk
}
