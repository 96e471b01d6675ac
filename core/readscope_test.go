package core_test

import (
	"context"
	"errors"
	"testing"

	"github.com/cairn-dev/cairn/core"
	"github.com/cairn-dev/cairn/fsm"
	"github.com/cairn-dev/cairn/internal/coretest"
)

// TestReadScopeSharesOneReadIndex: the use cases one request calls under WithReadScope share a
// single read index, taken before the first read; without a scope each linearizes on its own.
func TestReadScopeSharesOneReadIndex(t *testing.T) {
	h := coretest.New(t, coretest.Options{})
	info, secret := mustUpload(t, h, h.Root, "s.bin", randomBytes(14, 10))
	var reads int
	h.Consensus.SetFault(func(read bool, _ fsm.CommandType) error {
		if read {
			reads++
		}
		return nil
	})
	request := func(ctx context.Context) {
		t.Helper()
		p, err := h.Service.Authenticate(ctx, coretest.RootKey)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.Service.FileByID(ctx, p, info.ID); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := h.Service.Details(ctx, secret); err != nil {
			t.Fatal(err)
		}
	}
	request(core.WithReadScope(context.Background()))
	if reads != 1 {
		t.Fatalf("one scoped request took %d read indexes, want 1", reads)
	}
	reads = 0
	request(context.Background())
	if reads != 3 {
		t.Fatalf("three unscoped calls took %d read indexes, want 3", reads)
	}

	// A scope whose read index failed has not linearized anything: the next call tries again.
	reads = 0
	h.Consensus.SetFault(func(read bool, _ fsm.CommandType) error {
		if !read {
			return nil
		}
		if reads++; reads == 1 {
			return errors.New("no leader")
		}
		return nil
	})
	ctx := core.WithReadScope(context.Background())
	if _, err := h.Service.Authenticate(ctx, coretest.RootKey); !errors.Is(err, core.ErrUnavailable) {
		t.Fatalf("Authenticate = %v, want ErrUnavailable", err)
	}
	if _, _, _, err := h.Service.Details(ctx, secret); err != nil {
		t.Fatalf("the next call in the scope: %v", err)
	}
	if reads != 2 {
		t.Fatalf("%d read indexes, want the failed one and a second", reads)
	}
}
