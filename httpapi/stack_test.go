package httpapi

import (
	"bytes"
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/core"
	"github.com/cairn-dev/cairn/fsm"
	"github.com/cairn-dev/cairn/internal/coretest"
	"github.com/cairn-dev/cairn/internal/testutil"
)

// The API keys of the principals every test stack holds: alice and bob own files, admin holds
// VIEW_FILES. The root key (coretest.RootKey) holds every permission.
const (
	keyAlice = "key-alice"
	keyBob   = "key-bob"
	keyAdmin = "key-admin"
)

// testMaxFileSize is the stacks' maximum file size, small so that limits are cheap to cross.
const testMaxFileSize = 1 << 10

// stackStart is when every stack's clock starts: the timestamps the tests expect.
var stackStart = time.Date(2026, 2, 9, 11, 3, 27, 179_654_321, time.UTC)

// stack is the real core under test: core.Service over the real FSM (coretest), observed by a
// recorder, with alice, bob and admin as principals. Nothing in it copies a product rule.
type stack struct {
	core       *coretest.Harness
	svc        *recordingService
	principals map[string]core.Principal // by id: alice, bob, admin
}

// stackOption adjusts the harness before the stack starts.
type stackOption func(*coretest.Options)

// configure adds f to the adjustments of core's configuration.
func configure(f func(*core.Config)) stackOption {
	return func(o *coretest.Options) {
		prev := o.Configure
		o.Configure = func(c *core.Config) {
			if prev != nil {
				prev(c)
			}
			f(c)
		}
	}
}

// anonymousUploads lets uploads without an API key in.
var anonymousUploads = configure(func(c *core.Config) { c.AllowAnonymousUpload = true })

// maxFileSize sets the maximum file size.
func maxFileSize(n int64) stackOption { return configure(func(c *core.Config) { c.MaxFileSize = n }) }

// uninitialized leaves the cluster uninitialised: no configuration and no principals.
func uninitialized(o *coretest.Options) { o.Uninitialized = true }

func newStack(t testing.TB, opts ...stackOption) *stack {
	t.Helper()
	o := coretest.Options{Start: stackStart, Configure: func(c *core.Config) { c.MaxFileSize = testMaxFileSize }}
	for _, opt := range opts {
		opt(&o)
	}
	h := coretest.New(t, o)
	s := &stack{core: h, svc: &recordingService{Service: h.Service}, principals: map[string]core.Principal{}}
	if o.Uninitialized {
		return s
	}
	s.principals["alice"] = h.AddKey(t, "alice", keyAlice)
	s.principals["bob"] = h.AddKey(t, "bob", keyBob)
	s.principals["admin"] = h.AddKey(t, "admin", keyAdmin, core.PermViewFiles)
	return s
}

// upload stores a file of the named principal through the real upload path.
func (s *stack) upload(t testing.TB, creator string, attrs core.FileAttrs, data string) (core.FileInfo, core.TokenInfo) {
	t.Helper()
	p, ok := s.principals[creator]
	if !ok {
		t.Fatalf("no principal %q", creator)
	}
	info, tokens, err := s.core.Upload(context.Background(), p, attrs, []byte(data))
	if err != nil {
		t.Fatalf("upload %q: %v", attrs.Name, err)
	}
	return info, tokens[0]
}

// fail makes the consensus answer err: to read indexes when read, to proposals of typ otherwise
// ("" matches every proposal).
func (s *stack) fail(read bool, typ fsm.CommandType, err error) {
	s.core.Consensus.SetFault(func(r bool, got fsm.CommandType) error {
		if r == read && (read || typ == "" || got == typ) {
			return err
		}
		return nil
	})
}

// panicOnRead makes every later read index panic with msg, as a bug below core would.
func (s *stack) panicOnRead(msg string) {
	s.core.Consensus.SetFault(func(read bool, _ fsm.CommandType) error {
		if read {
			panic(msg)
		}
		return nil
	})
}

// waitNoStrayShards waits until the shard nodes hold only shards of committed files: what an
// aborted upload wrote is deleted in the background.
func (s *stack) waitNoStrayShards(t testing.TB) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, "the shards of aborted uploads deleted", func() bool { return s.core.Stray() == 0 })
}

// recordingService is the real core.Service, observed: it keeps the uploads a front-end begins
// and the tokens core mints for it, so that a test can check the calls a front-end makes (every
// begun upload ends in Commit or Abort) next to what they did. It changes no answer.
type recordingService struct {
	*core.Service

	mu      sync.Mutex
	uploads []*recordedUpload
	minted  []core.TokenInfo
}

func (s *recordingService) BeginUpload(ctx context.Context, p core.Principal) (core.Upload, error) {
	up, err := s.Service.BeginUpload(ctx, p)
	if err != nil {
		return nil, err
	}
	r := &recordedUpload{Upload: up}
	s.mu.Lock()
	s.uploads = append(s.uploads, r)
	s.mu.Unlock()
	return r, nil
}

func (s *recordingService) CreateTokenByID(ctx context.Context, p core.Principal, fileID string, expiresAt time.Time, kind core.TokenKind) (core.TokenInfo, error) {
	tok, err := s.Service.CreateTokenByID(ctx, p, fileID, expiresAt, kind)
	if err == nil {
		s.mu.Lock()
		s.minted = append(s.minted, tok)
		s.mu.Unlock()
	}
	return tok, err
}

// lastUpload is the upload begun last, nil if none was.
func (s *recordingService) lastUpload() *recordedUpload {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.uploads) == 0 {
		return nil
	}
	return s.uploads[len(s.uploads)-1]
}

// lastMinted is the token core minted last.
func (s *recordingService) lastMinted(t testing.TB) core.TokenInfo {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.minted) == 0 {
		t.Fatal("no token minted")
	}
	return s.minted[len(s.minted)-1]
}

func (s *recordingService) mintedCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.minted)
}

// recordedUpload is a real core.Upload with the calls made on it.
type recordedUpload struct {
	core.Upload

	mu        sync.Mutex
	data      bytes.Buffer
	attrs     core.FileAttrs
	committed bool
	aborted   bool
}

// teeWriter records what the front-end streams into the upload.
type teeWriter struct{ u *recordedUpload }

func (w teeWriter) Write(p []byte) (int, error) {
	w.u.mu.Lock()
	defer w.u.mu.Unlock()
	return w.u.data.Write(p)
}

func (u *recordedUpload) ReadFrom(r io.Reader) (int64, error) {
	return u.Upload.ReadFrom(io.TeeReader(r, teeWriter{u}))
}

func (u *recordedUpload) Commit(ctx context.Context, attrs core.FileAttrs) (core.FileInfo, []core.TokenInfo, error) {
	info, tokens, err := u.Upload.Commit(ctx, attrs)
	u.mu.Lock()
	defer u.mu.Unlock()
	u.attrs = attrs
	u.committed = u.committed || err == nil
	return info, tokens, err
}

func (u *recordedUpload) Abort() {
	u.Upload.Abort()
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.committed {
		u.aborted = true
	}
}

func (u *recordedUpload) state() (committed, aborted bool, attrs core.FileAttrs, data []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.committed, u.aborted, u.attrs, bytes.Clone(u.data.Bytes())
}

// The real use cases serve both front-ends.
var (
	_ FilesV1Service  = (*core.Service)(nil)
	_ EnmeshedService = (*core.Service)(nil)
)
