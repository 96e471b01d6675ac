package httpapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/cairn-dev/cairn/core"
)

// fakeFiles is an in-memory FilesV1Service with the token rules of the product (full/read, last full
// token, one invalid-token answer for everything unknown). It exists to test this package's parsing
// and error mapping; the real use cases are tested through a real cluster.
type fakeFiles struct {
	maxSize int64
	anon    bool
	keys    map[string]core.Principal // API key -> principal
	now     time.Time

	mu      sync.Mutex
	files   map[string]*fakeFile       // id -> file
	tokens  map[string]*core.TokenInfo // secret -> token
	uploads []*fakeUpload
	seq     int
	// fail makes every method called with this token (or API key) return the error instead.
	fail map[string]error
	// panicOn makes Details panic for this token, to exercise recovery.
	panicOn string
	// breakAfter makes ReadRange fail after this many bytes of a file named "broken" (-1: at once).
	breakAfter int64
	settings   core.Settings
}

type fakeFile struct {
	info core.FileInfo
	data []byte
}

func newFakeFiles() *fakeFiles {
	return &fakeFiles{
		maxSize: 1 << 10,
		keys: map[string]core.Principal{
			"key-alice": {ID: "alice", Permissions: []string{core.PermViewFiles}},
		},
		now:    time.Date(2026, 2, 9, 11, 3, 27, 179_000_000, time.UTC),
		files:  map[string]*fakeFile{},
		tokens: map[string]*core.TokenInfo{},
		fail:   map[string]error{},
	}
}

func (f *fakeFiles) failure(token string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fail[token]
}

func (f *fakeFiles) Authenticate(_ context.Context, key string) (core.Principal, error) {
	if err := f.failure(key); err != nil {
		return core.Principal{}, err
	}
	p, ok := f.keys[key]
	if !ok {
		return core.Principal{}, fmt.Errorf("key %q: %w", key, core.ErrUnauthenticated)
	}
	return p, nil
}

func (f *fakeFiles) AuthorizeUpload(p core.Principal) error {
	if p.ID == "" || p.Anonymous && !f.anon {
		return core.ErrUnauthenticated
	}
	return nil
}

func (f *fakeFiles) MaxFileSize() int64 { return f.maxSize }

func (f *fakeFiles) BeginUpload(_ context.Context, p core.Principal) (core.Upload, error) {
	if err := f.failure("begin"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	u := &fakeUpload{svc: f, principal: p}
	f.uploads = append(f.uploads, u)
	return u, nil
}

// resolve looks a token up with the product's rules; the caller holds f.mu.
func (f *fakeFiles) resolve(secret string, needFull bool) (*core.TokenInfo, *fakeFile, error) {
	if err := f.fail[secret]; err != nil {
		return nil, nil, err
	}
	t, ok := f.tokens[secret]
	if !ok || (!t.ExpiresAt.IsZero() && !f.now.Before(t.ExpiresAt)) {
		return nil, nil, fmt.Errorf("resolve %s: %w", secret, core.ErrInvalidToken)
	}
	if needFull && t.Access != core.AccessFull {
		return nil, nil, core.ErrReadOnlyToken
	}
	return t, f.files[t.FileID], nil
}

func (f *fakeFiles) fileTokens(id string) []core.TokenInfo {
	var out []core.TokenInfo
	for _, t := range f.tokens {
		if t.FileID == id {
			out = append(out, *t)
		}
	}
	return out
}

func (f *fakeFiles) Details(_ context.Context, token string) (core.FileInfo, core.TokenInfo, []core.TokenInfo, error) {
	if token != "" && token == f.panicOn {
		panic("fake: details exploded")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	t, file, err := f.resolve(token, false)
	if err != nil {
		return core.FileInfo{}, core.TokenInfo{}, nil, err
	}
	var tokens []core.TokenInfo
	if t.Access == core.AccessFull {
		tokens = f.fileTokens(file.info.ID)
	}
	return file.info, *t, tokens, nil
}

func (f *fakeFiles) OpenFile(_ context.Context, token string) (core.FileInfo, core.Content, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, file, err := f.resolve(token, false)
	if err != nil {
		return core.FileInfo{}, nil, err
	}
	c := &fakeContent{data: file.data, breakAfter: -2}
	if file.info.Name == "broken" {
		c.breakAfter = f.breakAfter
	}
	return file.info, c, nil
}

func (f *fakeFiles) DeleteFile(_ context.Context, token string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, file, err := f.resolve(token, true)
	if err != nil {
		return err
	}
	for secret, t := range f.tokens {
		if t.FileID == file.info.ID {
			delete(f.tokens, secret)
		}
	}
	delete(f.files, file.info.ID)
	return nil
}

func (f *fakeFiles) CreateToken(_ context.Context, token string, access core.AccessLevel, expiresAt time.Time) (core.TokenInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, file, err := f.resolve(token, true)
	if err != nil {
		return core.TokenInfo{}, err
	}
	return *f.newToken(file.info.ID, access, expiresAt), nil
}

func (f *fakeFiles) DeleteToken(_ context.Context, token, tokenToDelete string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, file, err := f.resolve(token, true)
	if err != nil {
		return err
	}
	victim, ok := f.tokens[tokenToDelete]
	if !ok || victim.FileID != file.info.ID {
		return core.ErrInvalidToken
	}
	if victim.Access == core.AccessFull {
		full := 0
		for _, t := range f.fileTokens(file.info.ID) {
			if t.Access == core.AccessFull {
				full++
			}
		}
		if full == 1 {
			return core.ErrLastFullToken
		}
	}
	delete(f.tokens, tokenToDelete)
	return nil
}

// newToken mints a token; the caller holds f.mu.
func (f *fakeFiles) newToken(fileID string, access core.AccessLevel, expiresAt time.Time) *core.TokenInfo {
	f.seq++
	t := &core.TokenInfo{
		ID: fmt.Sprintf("t%d", f.seq), Secret: fmt.Sprintf("secret-%04d-%s", f.seq, access),
		FileID: fileID, Access: access, CreatedAt: f.now, ExpiresAt: expiresAt,
	}
	f.tokens[t.Secret] = t
	return t
}

// addFile stores a file directly and returns its full token.
func (f *fakeFiles) addFile(name, mimetype string, data []byte) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	id := fmt.Sprintf("f%d", f.seq)
	f.files[id] = &fakeFile{data: data, info: core.FileInfo{
		ID: id, Name: name, MimeType: mimetype, CreatorID: "alice", Size: int64(len(data)),
		CreatedAt: f.now, UpdatedAt: f.now, ETag: fmt.Sprintf("etag%d", f.seq),
	}}
	return f.newToken(id, core.AccessFull, time.Time{}).Secret
}

func (f *fakeFiles) lastUpload() *fakeUpload {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.uploads) == 0 {
		return nil
	}
	return f.uploads[len(f.uploads)-1]
}

func (f *fakeFiles) committedFiles() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.files)
}

// fakeUpload buffers the bytes in memory and honours MaxFileSize like the real upload does.
type fakeUpload struct {
	svc       *fakeFiles
	principal core.Principal

	mu        sync.Mutex
	data      bytes.Buffer
	attrs     core.FileAttrs
	readFrom  int
	committed bool
	aborted   bool
}

func (u *fakeUpload) ReadFrom(r io.Reader) (int64, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.readFrom++
	n, err := io.Copy(&u.data, io.LimitReader(r, u.svc.maxSize-int64(u.data.Len())+1))
	if err != nil {
		return n, err
	}
	if int64(u.data.Len()) > u.svc.maxSize {
		return n, core.ErrFileTooLarge
	}
	// The limit reader may have stopped exactly at the limit; the rest of the part must be empty.
	if m, err := io.Copy(io.Discard, r); err != nil || m > 0 {
		if err != nil {
			return n, err
		}
		return n, core.ErrFileTooLarge
	}
	return n, nil
}

func (u *fakeUpload) Commit(_ context.Context, attrs core.FileAttrs) (core.FileInfo, []core.TokenInfo, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.committed || u.aborted {
		return core.FileInfo{}, nil, errors.New("fake: upload already ended")
	}
	s := u.svc
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.fail["commit"]; err != nil {
		return core.FileInfo{}, nil, err
	}
	u.committed = true
	u.attrs = attrs
	s.seq++
	id := fmt.Sprintf("f%d", s.seq)
	mimetype := attrs.MimeType
	if mimetype == "" {
		mimetype = "application/octet-stream"
	}
	info := core.FileInfo{
		ID: id, Name: attrs.Name, MimeType: mimetype, CreatorID: u.principal.ID,
		Size: int64(u.data.Len()), Tags: attrs.Tags, CreatedAt: s.now, UpdatedAt: s.now, ETag: "e-" + id,
	}
	s.files[id] = &fakeFile{info: info, data: bytes.Clone(u.data.Bytes())}
	return info, []core.TokenInfo{*s.newToken(id, core.AccessFull, time.Time{})}, nil
}

func (u *fakeUpload) Abort() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.committed {
		u.aborted = true
	}
}

func (u *fakeUpload) state() (committed, aborted bool, attrs core.FileAttrs, data []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.committed, u.aborted, u.attrs, bytes.Clone(u.data.Bytes())
}

// fakeContent serves a byte slice; breakAfter >= -1 injects a failure after that many bytes.
type fakeContent struct {
	data       []byte
	breakAfter int64
}

var errShardsGone = errors.New("fake: shards unavailable")

func (c *fakeContent) ReadRange(ctx context.Context, w io.Writer, off, n int64) error {
	chunk := c.data[off : off+n]
	if c.breakAfter >= -1 {
		if c.breakAfter < 0 {
			return errShardsGone
		}
		if _, err := w.Write(chunk[:min(int64(len(chunk)), c.breakAfter)]); err != nil {
			return err
		}
		return errShardsGone
	}
	for len(chunk) > 0 { // several writes, so that a stopped reader is noticed mid-range
		if err := ctx.Err(); err != nil {
			return err
		}
		k := min(len(chunk), 32<<10)
		if _, err := w.Write(chunk[:k]); err != nil {
			return err
		}
		chunk = chunk[k:]
	}
	return nil
}

// fakeOps is an OpsService with a settable readiness.
type fakeOps struct {
	mu       sync.Mutex
	notReady error
}

func (o *fakeOps) Status(context.Context) Status {
	return Status{NodeID: "n1", LeaderID: "n2", RaftState: "Follower", Term: 3, Erasure: "4+2", WriteQuorum: 5,
		Members: []MemberStatus{{ID: "n1", State: "alive", Suffrage: "voter"}}}
}

func (o *fakeOps) Ready(context.Context) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.notReady
}

// The real use cases must satisfy the interface this package declares.
var _ FilesV1Service = (*core.Service)(nil)
