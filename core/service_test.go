package core_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/core"
	"github.com/cairn-dev/cairn/erasure"
	"github.com/cairn-dev/cairn/fsm"
	"github.com/cairn-dev/cairn/internal/coretest"
	"github.com/cairn-dev/cairn/internal/testutil"
)

// These tests run core's use cases on the real FSM without a cluster (internal/coretest): 4 KiB
// blocks, 4 blocks per segment, 2+1 on three in-memory nodes.

const block = 4 << 10

func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range b {
		b[i] = byte(r.UintN(256))
	}
	return b
}

func fullToken(t *testing.T, tokens []core.TokenInfo) string {
	t.Helper()
	for _, tk := range tokens {
		if tk.Access == core.AccessFull {
			return tk.Secret
		}
	}
	t.Fatalf("no full token among %+v", tokens)
	return ""
}

func mustUpload(t *testing.T, h *coretest.Harness, p core.Principal, name string, data []byte) (core.FileInfo, string) {
	t.Helper()
	info, tokens, err := h.Upload(context.Background(), p, core.FileAttrs{Name: name}, data)
	if err != nil {
		t.Fatalf("upload %s: %v", name, err)
	}
	return info, fullToken(t, tokens)
}

func TestUploadAndReadAcrossBlocksAndSegments(t *testing.T) {
	h := coretest.New(t, coretest.Options{})
	ctx := context.Background()
	for _, size := range []int{0, 1, block - 1, block, block + 1, 4*block - 1, 4 * block, 4*block + 1, 9*block + 17} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			data := randomBytes(uint64(size), size)
			info, tokens, err := h.Upload(ctx, h.Root, core.FileAttrs{Name: "f.bin", Tags: []string{"x"}}, data)
			if err != nil {
				t.Fatal(err)
			}
			if info.Size != int64(size) || info.CreatorID != "root" || info.Name != "f.bin" || len(tokens) != 1 {
				t.Fatalf("upload = %+v, tokens %+v", info, tokens)
			}
			got, err := h.Read(ctx, tokens[0].Secret)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read back %d bytes (err %v), want %d identical", len(got), err, size)
			}
			if size > 10 {
				_, content, err := h.Service.OpenFile(ctx, tokens[0].Secret)
				if err != nil {
					t.Fatal(err)
				}
				var part bytes.Buffer
				off, n := int64(size/3), int64(size/2)
				if err := content.ReadRange(ctx, &part, off, n); err != nil || !bytes.Equal(part.Bytes(), data[off:off+n]) {
					t.Fatalf("range %d+%d: %v", off, n, err)
				}
			}
			file, tok, all, err := h.Service.Details(ctx, tokens[0].Secret)
			if err != nil || file.ID != info.ID || tok.Access != core.AccessFull || len(all) != 1 || file.ETag == "" {
				t.Fatalf("details = %+v %+v %+v %v", file, tok, all, err)
			}
		})
	}
}

func TestUploadRules(t *testing.T) {
	h := coretest.New(t, coretest.Options{Configure: func(c *core.Config) { c.MaxFileSize = 10 * block }})
	ctx := context.Background()
	if _, _, err := h.Upload(ctx, h.Root, core.FileAttrs{Name: "big"}, make([]byte, 10*block+1)); !errors.Is(err, core.ErrFileTooLarge) {
		t.Errorf("oversized upload: %v, want ErrFileTooLarge", err)
	}
	if _, err := h.Service.BeginUpload(ctx, core.Principal{}); !errors.Is(err, core.ErrUnauthenticated) {
		t.Errorf("upload without principal: %v", err)
	}

	// One node down: 2+1 still meets its write quorum of 2, and the file reads back.
	h.Shards.SetDown("n2", true, h.Clock.Now())
	data := randomBytes(7, 5*block)
	info, secret := mustUpload(t, h, h.Root, "degraded", data)
	if got, err := h.Read(ctx, secret); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("degraded read: %v", err)
	}
	// Two down: no quorum, and nothing is committed.
	h.Shards.SetDown("n3", true, h.Clock.Now())
	before := h.Consensus.Proposals()
	if _, _, err := h.Upload(ctx, h.Root, core.FileAttrs{Name: "lost"}, data); !errors.Is(err, core.ErrUnavailable) {
		t.Errorf("upload without quorum: %v, want ErrUnavailable", err)
	}
	if h.Consensus.Proposals() != before {
		t.Error("an upload without quorum was proposed")
	}
	// With two of three nodes down a 2+1 file cannot be read either.
	if _, err := h.Read(ctx, secret); !errors.Is(err, core.ErrUnavailable) {
		t.Errorf("read of %s with one shard left: %v, want ErrUnavailable", info.ID, err)
	}
}

func TestCorruptShardIsReadAroundAndDetected(t *testing.T) {
	h := coretest.New(t, coretest.Options{})
	ctx := context.Background()
	data := randomBytes(3, 3*block)
	info, secret := mustUpload(t, h, h.Root, "c.bin", data)
	f, _ := h.FSM.File(info.ID)
	if !h.Shards.Corrupt(f.Layout.Segments[0].Nodes[0], erasure.ShardID{File: info.ID, Segment: 0, Index: 0}, 100) {
		t.Fatal("no shard to corrupt")
	}
	if got, err := h.Read(ctx, secret); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read with a corrupt data shard: %v", err)
	}
	if _, failures := h.Service.StorageCounters(); failures == 0 {
		t.Error("the corrupt chunk was not counted")
	}
}

func TestTokenRules(t *testing.T) {
	h := coretest.New(t, coretest.Options{})
	ctx := context.Background()
	data := []byte("token rules")
	_, full := mustUpload(t, h, h.Root, "t.txt", data)

	read, err := h.Service.CreateToken(ctx, full, core.AccessRead, time.Time{})
	if err != nil || read.Access != core.AccessRead {
		t.Fatalf("create read token: %+v %v", read, err)
	}
	if got, err := h.Read(ctx, read.Secret); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read through the read token: %v", err)
	}
	// A read token never does what a full token does.
	if _, err := h.Service.CreateToken(ctx, read.Secret, core.AccessRead, time.Time{}); !errors.Is(err, core.ErrReadOnlyToken) {
		t.Errorf("read token creating a token: %v", err)
	}
	if err := h.Service.DeleteFile(ctx, read.Secret); !errors.Is(err, core.ErrReadOnlyToken) {
		t.Errorf("read token deleting the file: %v", err)
	}
	if err := h.Service.DeleteToken(ctx, read.Secret, full); !errors.Is(err, core.ErrReadOnlyToken) {
		t.Errorf("read token deleting the full token: %v", err)
	}
	_, _, list, _ := h.Service.Details(ctx, read.Secret)
	if len(list) != 0 {
		t.Errorf("a read token sees the token list: %+v", list)
	}
	// Bad input.
	if _, err := h.Service.CreateToken(ctx, full, "admin", time.Time{}); !errors.Is(err, core.ErrInvalidInput) {
		t.Errorf("unknown access level: %v", err)
	}
	if _, err := h.Service.CreateToken(ctx, full, core.AccessRead, h.Clock.Now().Add(-time.Second)); !errors.Is(err, core.ErrInvalidInput) {
		t.Errorf("expiry in the past: %v", err)
	}
	// The last full token stays; another full one makes it deletable.
	if err := h.Service.DeleteToken(ctx, full, full); !errors.Is(err, core.ErrLastFullToken) {
		t.Errorf("deleting the last full token: %v", err)
	}
	full2, err := h.Service.CreateToken(ctx, full, core.AccessFull, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Service.DeleteToken(ctx, full2.Secret, full); err != nil {
		t.Fatalf("delete the first full token through the second: %v", err)
	}
	if err := h.Service.DeleteToken(ctx, full2.Secret, read.Secret); err != nil {
		t.Fatal(err)
	}
	for name, secret := range map[string]string{"deleted full": full, "deleted read": read.Secret, "garbage": "nope", "unknown": fsm.HashSecret("x")[:43]} {
		if _, err := h.Read(ctx, secret); !errors.Is(err, core.ErrInvalidToken) {
			t.Errorf("%s token: %v, want ErrInvalidToken", name, err)
		}
	}
	// A token of one file cannot delete another file's token.
	_, other := mustUpload(t, h, h.Root, "other.txt", data)
	if err := h.Service.DeleteToken(ctx, other, full2.Secret); !errors.Is(err, core.ErrInvalidToken) {
		t.Errorf("cross-file token delete: %v", err)
	}
}

func TestDeleteFile(t *testing.T) {
	h := coretest.New(t, coretest.Options{})
	ctx := context.Background()
	info, full := mustUpload(t, h, h.Root, "d.bin", randomBytes(1, 6*block))
	read, err := h.Service.CreateToken(ctx, full, core.AccessRead, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if h.Shards.Count(info.ID) != 2*3 {
		t.Fatalf("%d shards stored, want 6 (2 segments of 2+1)", h.Shards.Count(info.ID))
	}
	if err := h.Service.DeleteFile(ctx, full); err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{full, read.Secret} {
		if _, err := h.Read(ctx, secret); !errors.Is(err, core.ErrInvalidToken) {
			t.Errorf("token of a deleted file: %v", err)
		}
	}
	if err := h.Service.DeleteFile(ctx, full); !errors.Is(err, core.ErrInvalidToken) {
		t.Errorf("second delete: %v", err)
	}
	testutil.WaitFor(t, 10*time.Second, "the deleted file's shards removed", func() bool { return h.Shards.Count(info.ID) == 0 })
}

func TestAPIKeys(t *testing.T) {
	h := coretest.New(t, coretest.Options{})
	ctx := context.Background()
	info, secret, err := h.Service.CreateAPIKey(ctx, h.Root, "viewer", []string{core.PermViewFiles})
	if err != nil {
		t.Fatal(err)
	}
	p, err := h.Service.Authenticate(ctx, secret)
	if err != nil || p.ID != info.ID || !p.Has(core.PermViewFiles) || p.Has(core.PermManageAPIKeys) {
		t.Fatalf("authenticate new key: %+v %v", p, err)
	}
	if _, _, err := h.Service.CreateAPIKey(ctx, p, "escalate", core.AllPermissions); !errors.Is(err, core.ErrPermissionDenied) {
		t.Errorf("key without MANAGE_API_KEYS creating a key: %v", err)
	}
	if _, _, err := h.Service.CreateAPIKey(ctx, h.Root, "bad", []string{"ROOT"}); !errors.Is(err, core.ErrInvalidInput) {
		t.Errorf("unknown permission: %v", err)
	}
	keys, err := h.Service.ListAPIKeys(ctx, h.Root)
	if err != nil || len(keys) != 2 {
		t.Fatalf("list keys: %+v %v", keys, err)
	}
	if err := h.Service.RevokeAPIKey(ctx, h.Root, info.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Service.Authenticate(ctx, secret); !errors.Is(err, core.ErrUnauthenticated) {
		t.Errorf("revoked key: %v", err)
	}
	if err := h.Service.RevokeAPIKey(ctx, h.Root, "root"); err == nil {
		t.Error("revoking the last key that manages keys succeeded")
	}
	if _, err := h.Service.Authenticate(ctx, "wrong"); !errors.Is(err, core.ErrUnauthenticated) {
		t.Errorf("unknown key: %v", err)
	}
}

func TestEphemeralTokens(t *testing.T) {
	h := coretest.New(t, coretest.Options{})
	ctx := context.Background()
	data := []byte("ephemeral")
	info, full := mustUpload(t, h, h.Root, "e.txt", data)
	before := h.Consensus.Proposals()
	eph, err := h.Service.CreateTokenByID(ctx, h.Root, info.ID, h.Clock.Now().Add(time.Hour), core.TokenEphemeral)
	if err != nil || eph.Kind != core.TokenEphemeral || eph.Access != core.AccessRead {
		t.Fatalf("mint: %+v %v", eph, err)
	}
	if h.Consensus.Proposals() != before {
		t.Error("minting an ephemeral token wrote to Raft")
	}
	if got, err := h.Read(ctx, eph.Secret); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read through the ephemeral token: %v", err)
	}
	if err := h.Service.DeleteFile(ctx, eph.Secret); !errors.Is(err, core.ErrReadOnlyToken) {
		t.Errorf("ephemeral token deleting: %v", err)
	}
	// Forged: one character changed.
	forged := []byte(eph.Secret)
	forged[len(forged)-2] ^= 1
	if _, err := h.Read(ctx, string(forged)); !errors.Is(err, core.ErrInvalidToken) {
		t.Errorf("forged ephemeral token: %v", err)
	}
	// It dies when it expires...
	h.Clock.Advance(2 * time.Hour)
	if _, err := h.Read(ctx, eph.Secret); !errors.Is(err, core.ErrInvalidToken) {
		t.Errorf("expired ephemeral token: %v", err)
	}
	// ...when the signing key rotates...
	eph, _ = h.Service.CreateTokenByID(ctx, h.Root, info.ID, time.Time{}, core.TokenEphemeral)
	if err := h.Service.RotateSigningKey(ctx, h.Root); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Read(ctx, eph.Secret); !errors.Is(err, core.ErrInvalidToken) {
		t.Errorf("ephemeral token after rotation: %v", err)
	}
	// ...and when its file is deleted.
	eph, _ = h.Service.CreateTokenByID(ctx, h.Root, info.ID, time.Time{}, core.TokenEphemeral)
	if err := h.Service.DeleteFile(ctx, full); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Read(ctx, eph.Secret); !errors.Is(err, core.ErrInvalidToken) {
		t.Errorf("ephemeral token of a deleted file: %v", err)
	}
}

func TestListingAndVisibility(t *testing.T) {
	h := coretest.New(t, coretest.Options{})
	ctx := context.Background()
	_, aliceKey, _ := h.Service.CreateAPIKey(ctx, h.Root, "alice", nil)
	_, viewerKey, _ := h.Service.CreateAPIKey(ctx, h.Root, "viewer", []string{core.PermViewFiles})
	alice, _ := h.Service.Authenticate(ctx, aliceKey)
	viewer, _ := h.Service.Authenticate(ctx, viewerKey)
	mine, _ := mustUpload(t, h, alice, "alice.txt", []byte("a"))
	theirs, _ := mustUpload(t, h, h.Root, "root.txt", []byte("r"))

	ids := func(files []core.FileInfo) []string {
		var out []string
		for _, f := range files {
			out = append(out, f.ID)
		}
		slices.Sort(out)
		return out
	}
	both := []string{mine.ID, theirs.ID}
	slices.Sort(both)
	for _, tt := range []struct {
		name    string
		p       core.Principal
		ownOnly bool
		want    []string
	}{
		{"alice sees her own", alice, false, []string{mine.ID}},
		{"viewer sees all", viewer, false, both},
		{"viewer, own only", viewer, true, nil},
		{"root, own only", h.Root, true, []string{theirs.ID}},
	} {
		var got []core.FileInfo
		err := h.Service.ScanFiles(ctx, tt.p, tt.ownOnly, func(f core.FileInfo) bool { got = append(got, f); return true })
		if err != nil || !slices.Equal(ids(got), tt.want) {
			t.Errorf("%s: %v %v, want %v", tt.name, ids(got), err, tt.want)
		}
	}
	if _, err := h.Service.FileByID(ctx, alice, theirs.ID); !errors.Is(err, core.ErrNotFound) {
		t.Errorf("alice reading root's file by id: %v, want ErrNotFound", err)
	}
	if _, err := h.Service.FileByID(ctx, viewer, mine.ID); err != nil {
		t.Errorf("viewer reading alice's file: %v", err)
	}
	if err := h.Service.DeleteFileByID(ctx, viewer, mine.ID); !errors.Is(err, core.ErrPermissionDenied) && !errors.Is(err, core.ErrNotFound) {
		t.Errorf("viewer deleting alice's file: %v", err)
	}
	if err := h.Service.DeleteFileByID(ctx, alice, mine.ID); err != nil {
		t.Errorf("alice deleting her file: %v", err)
	}
	var list []core.FileListing
	collect := func(l core.FileListing) bool { list = append(list, l); return true }
	if err := h.Service.ScanFilesWithTokens(ctx, alice, collect); !errors.Is(err, core.ErrPermissionDenied) || list != nil {
		t.Errorf("admin listing without VIEW_FILES: %v (%d files)", err, len(list))
	}
	if err := h.Service.ScanFilesWithTokens(ctx, viewer, collect); err != nil || len(list) != 1 || len(list[0].Tokens) == 0 {
		t.Errorf("admin listing: %d files, %v", len(list), err)
	}
}

func TestExpiry(t *testing.T) {
	h := coretest.New(t, coretest.Options{})
	ctx := context.Background()
	now := h.Clock.Now()
	info, tokens, err := h.Upload(ctx, h.Root, core.FileAttrs{Name: "x", ExpiresAt: now.Add(time.Hour)}, randomBytes(2, block+1))
	if err != nil {
		t.Fatal(err)
	}
	full := fullToken(t, tokens)
	_, lasting := mustUpload(t, h, h.Root, "lasting", []byte("stays"))
	short, err := h.Service.CreateToken(ctx, lasting, core.AccessRead, now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if files, toks, err := h.Service.ReapExpired(ctx); err != nil || files+toks != 0 {
		t.Fatalf("reaped %d files and %d tokens before anything expired (%v)", files, toks, err)
	}
	h.Clock.Advance(2 * time.Minute)
	if _, err := h.Read(ctx, short.Secret); !errors.Is(err, core.ErrInvalidToken) {
		t.Errorf("expired token: %v, want ErrInvalidToken at once, before any reaping", err)
	}
	h.Clock.Advance(time.Hour)
	if _, err := h.Read(ctx, full); !errors.Is(err, core.ErrInvalidToken) {
		t.Errorf("token of an expired file: %v", err)
	}
	if files, toks, err := h.Service.ReapExpired(ctx); err != nil || files != 1 || toks != 1 {
		t.Fatalf("reaped %d files and %d tokens (%v), want 1 and 1", files, toks, err)
	}
	if _, ok := h.FSM.File(info.ID); ok {
		t.Error("the expired file is still in the state")
	}
	if got, err := h.Read(ctx, lasting); err != nil || string(got) != "stays" {
		t.Errorf("the lasting file: %q %v", got, err)
	}
}

// TestProposalRefusedByTheLeaderIsUnavailable: while the cluster does not speak a command's
// protocol yet, the use case fails as unavailable (retry later) and nothing changes.
func TestProposalRefusedByTheLeaderIsUnavailable(t *testing.T) {
	h := coretest.New(t, coretest.Options{})
	ctx := context.Background()
	_, full := mustUpload(t, h, h.Root, "p.txt", []byte("p"))
	h.Consensus.Refuse(fsm.CmdCreateToken)
	if _, err := h.Service.CreateToken(ctx, full, core.AccessRead, time.Time{}); !errors.Is(err, core.ErrUnavailable) || !errors.Is(err, fsm.ErrNotEnabled) {
		t.Fatalf("refused command: %v, want ErrUnavailable wrapping fsm.ErrNotEnabled", err)
	}
}

func TestAnonymousUploads(t *testing.T) {
	ctx := context.Background()
	for _, allowed := range []bool{false, true} {
		t.Run(fmt.Sprintf("allowed=%v", allowed), func(t *testing.T) {
			h := coretest.New(t, coretest.Options{Configure: func(c *core.Config) { c.AllowAnonymousUpload = allowed }})
			if err := h.Service.AuthorizeUpload(h.Root); err != nil {
				t.Errorf("a key's principal may not upload: %v", err)
			}
			if err := h.Service.AuthorizeUpload(core.Principal{}); !errors.Is(err, core.ErrUnauthenticated) {
				t.Errorf("no principal: %v, want ErrUnauthenticated", err)
			}
			err := h.Service.AuthorizeUpload(core.Anonymous)
			_, _, uploadErr := h.Upload(ctx, core.Anonymous, core.FileAttrs{Name: "anon.txt"}, []byte("hello"))
			if !allowed {
				if !errors.Is(err, core.ErrUnauthenticated) || !errors.Is(uploadErr, core.ErrUnauthenticated) {
					t.Fatalf("anonymous where not allowed: authorize %v, upload %v, want ErrUnauthenticated", err, uploadErr)
				}
				return
			}
			if err != nil || uploadErr != nil {
				t.Fatalf("anonymous where allowed: authorize %v, upload %v", err, uploadErr)
			}
			// Anonymous holds no permission, whatever uploads it may make.
			if err := h.Service.Authorize(core.Anonymous, core.PermViewFiles); !errors.Is(err, core.ErrUnauthenticated) {
				t.Errorf("anonymous VIEW_FILES: %v, want ErrUnauthenticated", err)
			}
		})
	}
}

// TestMimeTypeOverMaxMimeTypeLenIsNeverStored: a type/subtype longer than core.MaxMimeTypeLen
// (RFC 6838's 127 + "/" + 127) is unusable, as a malformed one is: an upload falls back to the
// name's extension, and a settings entry is refused. Any length was kept before.
func TestMimeTypeOverMaxMimeTypeLenIsNeverStored(t *testing.T) {
	h := coretest.New(t, coretest.Options{})
	ctx := context.Background()
	longest := "application/" + strings.Repeat("a", core.MaxMimeTypeLen-len("application/"))
	for _, tc := range []struct{ mimeType, want string }{
		{longest, longest},
		{longest + "a", "text/plain"}, // from .txt
	} {
		info, _, err := h.Upload(ctx, h.Root, core.FileAttrs{Name: "a.txt", MimeType: tc.mimeType}, []byte("x"))
		if err != nil {
			t.Fatalf("upload: %v", err)
		}
		if info.MimeType != tc.want {
			t.Errorf("a %d-byte type stored as %.40q (%d bytes), want %.40q", len(tc.mimeType), info.MimeType, len(info.MimeType), tc.want)
		}
	}
	types := []string{longest + "a"}
	if _, err := h.Service.UpdateSettings(ctx, h.Root, core.SettingsPatch{DisableForceDownloadForMimeTypes: &types}); !errors.Is(err, core.ErrInvalidInput) {
		t.Errorf("settings entry of %d bytes: %v, want ErrInvalidInput", len(types[0]), err)
	}
}
