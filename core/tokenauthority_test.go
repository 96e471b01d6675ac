package core_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/cairn-dev/cairn/core"
	"github.com/cairn-dev/cairn/fsm"
	"github.com/cairn-dev/cairn/internal/coretest"
)

// tokenAuthorityHarness is a harness whose cluster speaks fsm.ProtocolTokenAuthority (enabled) or
// not, and counts the read indexes and token-create proposals made since reset. refuseCreate, when
// set, is the result of the next token-create proposal, which then does not apply.
type tokenAuthorityHarness struct {
	*coretest.Harness
	reads, creates int
	refuseCreate   error
}

func newTokenAuthorityHarness(t *testing.T, enabled bool) *tokenAuthorityHarness {
	h := &tokenAuthorityHarness{Harness: coretest.New(t, coretest.Options{
		Configure: func(c *core.Config) { c.TokenAuthority = func() bool { return enabled } },
	})}
	h.Consensus.SetFault(func(read bool, typ fsm.CommandType) error {
		switch {
		case read:
			h.reads++
		case typ == fsm.CmdCreateToken:
			h.creates++
			err := h.refuseCreate
			h.refuseCreate = nil
			return err
		}
		return nil
	})
	return h
}

func (h *tokenAuthorityHarness) reset() { h.reads, h.creates = 0, 0 }

// newKey creates an API key without permissions and returns its secret and its principal.
func newKey(t *testing.T, h *tokenAuthorityHarness, name string) (string, core.Principal) {
	t.Helper()
	_, secret, err := h.Service.CreateAPIKey(context.Background(), h.Root, name, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := h.Service.Authenticate(context.Background(), secret)
	if err != nil {
		t.Fatal(err)
	}
	return secret, p
}

// TestTokenCreateByKeyNeedsNoReadIndex: with the cluster on fsm.ProtocolTokenAuthority, a persisted
// token created for a key that AuthenticateUnconfirmed resolved is one proposal and no read index
// (the FSM checks the key at apply); an ephemeral one, or any token while some server does not
// speak the protocol, still takes the read index first.
func TestTokenCreateByKeyNeedsNoReadIndex(t *testing.T) {
	for _, tt := range []struct {
		name      string
		enabled   bool
		kind      core.TokenKind
		wantReads int
	}{
		{"persisted, at apply", true, core.TokenPersisted, 0},
		{"ephemeral", true, core.TokenEphemeral, 1},
		{"persisted, older cluster", false, core.TokenPersisted, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newTokenAuthorityHarness(t, tt.enabled)
			ctx := context.Background()
			aliceKey, alice := newKey(t, h, "alice")
			file, _ := mustUpload(t, h.Harness, alice, "a.txt", []byte("alice's"))
			h.reset()

			req := core.WithReadScope(ctx)
			p, err := h.Service.AuthenticateUnconfirmed(req, aliceKey)
			if err != nil {
				t.Fatal(err)
			}
			tok, err := h.Service.CreateTokenByID(req, p, file.ID, file.ExpiresAt, tt.kind)
			if err != nil {
				t.Fatal(err)
			}
			if h.reads != tt.wantReads {
				t.Errorf("%d read indexes, want %d", h.reads, tt.wantReads)
			}
			if tt.kind == core.TokenEphemeral {
				return
			}
			if h.creates != 1 {
				t.Errorf("%d token proposals, want 1", h.creates)
			}
			got, _, _, err := h.Service.Details(ctx, tok.Secret)
			if err != nil || got.ID != file.ID {
				t.Fatalf("the new token: %+v, %v", got, err)
			}
		})
	}
}

// TestRevokedKeyCreatesNoToken: a key revoked after the request resolved it from the local state
// (what a follower behind the leader sees) is refused when the create applies, and no token
// exists; a key that may not see the file gets it no more than through the read index.
func TestRevokedKeyCreatesNoToken(t *testing.T) {
	h := newTokenAuthorityHarness(t, true)
	ctx := context.Background()
	aliceInfo, aliceKey, _ := h.Service.CreateAPIKey(ctx, h.Root, "alice", nil)
	_, bobKey, _ := h.Service.CreateAPIKey(ctx, h.Root, "bob", nil)
	file, _ := mustUpload(t, h.Harness, h.Root, "root.txt", []byte("root's"))
	alice, _ := h.Service.Authenticate(ctx, aliceKey)
	own, _ := mustUpload(t, h.Harness, alice, "own.txt", []byte("alice's"))

	// Bob may not see root's file: the local miss takes the read index, and the answer is the
	// read index's, not found.
	req := core.WithReadScope(ctx)
	bob, err := h.Service.AuthenticateUnconfirmed(req, bobKey)
	if err != nil {
		t.Fatal(err)
	}
	h.reset()
	if _, err := h.Service.CreateTokenByID(req, bob, file.ID, file.ExpiresAt, core.TokenPersisted); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("token for a file bob may not see: %v, want ErrNotFound", err)
	}
	if h.reads != 1 || h.creates != 0 {
		t.Errorf("%d read indexes and %d proposals, want 1 and 0", h.reads, h.creates)
	}

	req = core.WithReadScope(ctx)
	p, err := h.Service.AuthenticateUnconfirmed(req, aliceKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Service.RevokeAPIKey(ctx, h.Root, aliceInfo.ID); err != nil {
		t.Fatal(err)
	}
	tokensBefore := len(h.FSM.FileTokens(own.ID))
	h.reset()
	if _, err := h.Service.CreateTokenByID(req, p, own.ID, own.ExpiresAt, core.TokenPersisted); !errors.Is(err, core.ErrUnauthenticated) {
		t.Fatalf("token by a revoked key: %v, want ErrUnauthenticated", err)
	}
	if h.creates != 1 || h.reads != 0 {
		t.Errorf("%d proposals and %d read indexes, want the refused proposal alone", h.creates, h.reads)
	}
	if n := len(h.FSM.FileTokens(own.ID)); n != tokensBefore {
		t.Errorf("the file has %d tokens, had %d: the revoked key created one", n, tokensBefore)
	}
}

// TestUnconfirmedPrincipalFailsClosed: a principal resolved without a read index is refused by
// every check that has no read index to confirm it, is confirmed by its request's read index, and
// a key revoked meanwhile fails that read index.
func TestUnconfirmedPrincipalFailsClosed(t *testing.T) {
	h := newTokenAuthorityHarness(t, true)
	ctx := context.Background()
	tmpInfo, tmpKey, _ := h.Service.CreateAPIKey(ctx, h.Root, "tmp", core.AllPermissions)

	req := core.WithReadScope(ctx)
	p, err := h.Service.AuthenticateUnconfirmed(req, coretest.RootKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Service.Authorize(p, core.PermManageAPIKeys); !errors.Is(err, core.ErrUnauthenticated) {
		t.Errorf("Authorize of an unconfirmed principal: %v, want ErrUnauthenticated", err)
	}
	if err := h.Service.AuthorizeUpload(p); !errors.Is(err, core.ErrUnauthenticated) {
		t.Errorf("AuthorizeUpload of an unconfirmed principal: %v, want ErrUnauthenticated", err)
	}
	if _, err := h.Service.ListAPIKeys(req, p); !errors.Is(err, core.ErrUnauthenticated) {
		t.Errorf("ListAPIKeys of an unconfirmed principal: %v, want ErrUnauthenticated", err)
	}
	// A use case with a read index of its own confirms the key, and then everything works.
	if err := h.Service.ScanFiles(req, p, false, func(core.FileInfo) bool { return true }); err != nil {
		t.Fatalf("ScanFiles: %v", err)
	}
	if _, err := h.Service.ListAPIKeys(req, p); err != nil {
		t.Errorf("ListAPIKeys once the read index confirmed the key: %v", err)
	}

	req = core.WithReadScope(ctx)
	tmp, err := h.Service.AuthenticateUnconfirmed(req, tmpKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Service.RevokeAPIKey(ctx, h.Root, tmpInfo.ID); err != nil {
		t.Fatal(err)
	}
	if err := h.Service.ScanFiles(req, tmp, false, func(core.FileInfo) bool { return true }); !errors.Is(err, core.ErrUnauthenticated) {
		t.Errorf("ScanFiles for a key revoked before the read index: %v, want ErrUnauthenticated", err)
	}
	if _, err := h.Service.TokenByID(req, tmp, "TOKunknown"); !errors.Is(err, core.ErrUnauthenticated) {
		t.Errorf("the next use case of that request: %v, want ErrUnauthenticated", err)
	}
	if _, err := h.Service.AuthenticateUnconfirmed(core.WithReadScope(ctx), tmpKey); !errors.Is(err, core.ErrUnauthenticated) {
		t.Errorf("a revoked key, authenticated again: %v, want ErrUnauthenticated", err)
	}
}

// TestTokenCreateByFullTokenNeedsNoReadIndex: on /files/v1 a full token found in the local state
// is named as the authority (no read index); a read token still gets ErrReadOnlyToken, after the
// read index, and never a full token.
func TestTokenCreateByFullTokenNeedsNoReadIndex(t *testing.T) {
	h := newTokenAuthorityHarness(t, true)
	ctx := context.Background()
	_, full := mustUpload(t, h.Harness, h.Root, "f.txt", []byte("content"))
	h.reset()
	read, err := h.Service.CreateToken(core.WithReadScope(ctx), full, core.AccessRead, h.Clock.Now().AddDate(0, 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	if h.reads != 0 || h.creates != 1 {
		t.Errorf("%d read indexes and %d proposals, want 0 and 1", h.reads, h.creates)
	}
	h.reset()
	if _, err := h.Service.CreateToken(core.WithReadScope(ctx), read.Secret, core.AccessFull, h.Clock.Now().AddDate(0, 0, 1)); !errors.Is(err, core.ErrReadOnlyToken) {
		t.Fatalf("full token by a read token: %v, want ErrReadOnlyToken", err)
	}
	if h.reads != 1 || h.creates != 0 {
		t.Errorf("%d read indexes and %d proposals, want 1 and 0", h.reads, h.creates)
	}
}

// TestTokenCreateFallsBackWhenTheLeaderRefusesTheAuthority: the proposer believes every server
// speaks fsm.ProtocolTokenAuthority, but the leader sees one that does not (a server of an older
// build that joined, in the leader's gossip view first) and refuses the authority field as
// not_enabled. The create then takes the read index and is sent without the field, and succeeds:
// by key on /api/v2 and by full token on /files/v1.
func TestTokenCreateFallsBackWhenTheLeaderRefusesTheAuthority(t *testing.T) {
	h := newTokenAuthorityHarness(t, true)
	ctx := context.Background()
	notEnabled := fmt.Errorf("%w: this createToken sets a field of protocol %d", fsm.ErrNotEnabled, fsm.ProtocolTokenAuthority)
	aliceKey, alice := newKey(t, h, "alice")
	file, full := mustUpload(t, h.Harness, alice, "a.txt", []byte("alice's"))

	check := func(what string, tok core.TokenInfo, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if h.creates != 2 || h.reads != 1 {
			t.Errorf("%s: %d proposals and %d read indexes, want the refused one, then the read index and one more", what, h.creates, h.reads)
		}
		got, _, _, err := h.Service.Details(ctx, tok.Secret)
		if err != nil || got.ID != file.ID {
			t.Fatalf("%s: the new token: %+v, %v", what, got, err)
		}
	}

	req := core.WithReadScope(ctx)
	p, err := h.Service.AuthenticateUnconfirmed(req, aliceKey)
	if err != nil {
		t.Fatal(err)
	}
	h.reset()
	h.refuseCreate = notEnabled
	tok, err := h.Service.CreateTokenByID(req, p, file.ID, file.ExpiresAt, core.TokenPersisted)
	check("by key", tok, err)

	h.reset()
	h.refuseCreate = notEnabled
	tok, err = h.Service.CreateToken(core.WithReadScope(ctx), full, core.AccessRead, h.Clock.Now().AddDate(0, 0, 1))
	check("by full token", tok, err)
}
