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

// fakeEnmeshed is an in-memory EnmeshedService with the product's rules: a principal sees the files
// it created, or every file with VIEW_FILES; expired files and tokens are gone; ephemeral tokens are
// never stored; a token never outlives its file. It exists to test this package's wire format.
type fakeEnmeshed struct {
	maxSize int64
	keys    map[string]core.Principal // API key -> principal

	mu      sync.Mutex
	files   map[string]*fakeFile      // id -> file
	tokens  map[string]core.TokenInfo // id -> persisted token
	minted  []core.TokenInfo          // every token issued, ephemeral ones included
	uploads []*fakeV2Upload
	// fail makes the named method return the error instead.
	fail map[string]error
	// panicOn makes FileByID panic for this id, to exercise recovery.
	panicOn string
}

func newFakeEnmeshed() *fakeEnmeshed {
	return &fakeEnmeshed{
		maxSize: 1 << 10,
		keys: map[string]core.Principal{
			"key-alice": {ID: "alice"},
			"key-bob":   {ID: "bob"},
			"key-admin": {ID: "admin", Permissions: []string{core.PermViewFiles}},
		},
		files:  map[string]*fakeFile{},
		tokens: map[string]core.TokenInfo{},
		fail:   map[string]error{},
	}
}

func (f *fakeEnmeshed) failure(method string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fail[method]
}

func (f *fakeEnmeshed) Authenticate(_ context.Context, key string) (core.Principal, error) {
	if err := f.failure("Authenticate"); err != nil {
		return core.Principal{}, err
	}
	p, ok := f.keys[key]
	if !ok {
		return core.Principal{}, fmt.Errorf("key %q: %w", key, core.ErrUnauthenticated)
	}
	return p, nil
}

func (f *fakeEnmeshed) MaxFileSize() int64 { return f.maxSize }

func (f *fakeEnmeshed) BeginUpload(_ context.Context, p core.Principal) (core.Upload, error) {
	if err := f.failure("BeginUpload"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	u := &fakeV2Upload{svc: f, principal: p}
	f.uploads = append(f.uploads, u)
	return u, nil
}

// visible resolves a live file p may see; the caller holds f.mu.
func (f *fakeEnmeshed) visible(p core.Principal, id string) (*fakeFile, error) {
	file, ok := f.files[id]
	if !ok || expiredAt(file.info.ExpiresAt) || (file.info.CreatorID != p.ID && !p.Has(core.PermViewFiles)) {
		return nil, fmt.Errorf("file %s: %w", id, core.ErrNotFound)
	}
	return file, nil
}

func expiredAt(t time.Time) bool { return !t.IsZero() && !time.Now().Before(t) }

func (f *fakeEnmeshed) FileByID(_ context.Context, p core.Principal, id string) (core.FileInfo, error) {
	if id == f.panicOn {
		panic("fake: FileByID exploded")
	}
	if err := f.failure("FileByID"); err != nil {
		return core.FileInfo{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	file, err := f.visible(p, id)
	if err != nil {
		return core.FileInfo{}, err
	}
	return file.info, nil
}

func (f *fakeEnmeshed) ListFiles(_ context.Context, p core.Principal, ownOnly bool) ([]core.FileInfo, error) {
	if err := f.failure("ListFiles"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []core.FileInfo
	for id, file := range f.files {
		if _, err := f.visible(p, id); err == nil && (!ownOnly || file.info.CreatorID == p.ID) {
			out = append(out, file.info)
		}
	}
	return out, nil
}

func (f *fakeEnmeshed) OpenFileByID(_ context.Context, p core.Principal, id string) (core.FileInfo, core.Content, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	file, err := f.visible(p, id)
	if err != nil {
		return core.FileInfo{}, nil, err
	}
	return file.info, &fakeContent{data: file.data, breakAfter: -2}, nil
}

func (f *fakeEnmeshed) DeleteFileByID(_ context.Context, p core.Principal, id string) error {
	if err := f.failure("DeleteFileByID"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.visible(p, id); err != nil {
		return err
	}
	delete(f.files, id)
	for tid, t := range f.tokens {
		if t.FileID == id {
			delete(f.tokens, tid)
		}
	}
	return nil
}

func (f *fakeEnmeshed) CreateFileToken(_ context.Context, p core.Principal, fileID string, expiresAt time.Time, kind core.TokenKind) (core.TokenInfo, error) {
	if err := f.failure("CreateFileToken"); err != nil {
		return core.TokenInfo{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	file, err := f.visible(p, fileID)
	if err != nil {
		return core.TokenInfo{}, err
	}
	if !expiresAt.IsZero() && !expiresAt.After(time.Now()) {
		return core.TokenInfo{}, fmt.Errorf("%w: 'expiresAt' must be in the future", core.ErrInvalidInput)
	}
	fileExpiry := file.info.ExpiresAt
	if expiresAt.IsZero() || (!fileExpiry.IsZero() && expiresAt.After(fileExpiry)) {
		expiresAt = fileExpiry
	}
	t := core.TokenInfo{
		ID: core.NewTokenID(), Secret: core.NewSecret(), FileID: fileID, Access: core.AccessRead,
		CreatorID: p.ID, CreatedAt: time.Now().UTC(), ExpiresAt: expiresAt, Kind: kind,
	}
	if kind == core.TokenPersisted {
		f.tokens[t.ID] = t
	}
	f.minted = append(f.minted, t)
	return t, nil
}

func (f *fakeEnmeshed) TokenByID(_ context.Context, p core.Principal, id string) (core.TokenInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tokens[id]
	if !ok || expiredAt(t.ExpiresAt) || (t.CreatorID != p.ID && !p.Has(core.PermViewFiles)) {
		return core.TokenInfo{}, core.ErrNotFound
	}
	return t, nil
}

// addFile stores a file directly; info.ID, CreatedAt and Size are filled in when empty.
func (f *fakeEnmeshed) addFile(info core.FileInfo, data string) core.FileInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	if info.ID == "" {
		info.ID = core.NewFileID()
	}
	if info.CreatedAt.IsZero() {
		info.CreatedAt = time.Date(2026, 2, 9, 11, 3, 27, 179_654_321, time.UTC)
	}
	info.UpdatedAt = info.CreatedAt
	info.Size = int64(len(data))
	f.files[info.ID] = &fakeFile{info: info, data: []byte(data)}
	return info
}

// addToken stores a persisted token directly.
func (f *fakeEnmeshed) addToken(t core.TokenInfo) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokens[t.ID] = t
}

func (f *fakeEnmeshed) lastMinted() core.TokenInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.minted[len(f.minted)-1]
}

func (f *fakeEnmeshed) mintedCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.minted)
}

func (f *fakeEnmeshed) fileCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.files)
}

func (f *fakeEnmeshed) lastUpload() *fakeV2Upload {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.uploads) == 0 {
		return nil
	}
	return f.uploads[len(f.uploads)-1]
}

// fakeV2Upload buffers the bytes and honours MaxFileSize like the real upload does.
type fakeV2Upload struct {
	svc       *fakeEnmeshed
	principal core.Principal

	mu        sync.Mutex
	data      bytes.Buffer
	committed bool
	aborted   bool
}

func (u *fakeV2Upload) ReadFrom(r io.Reader) (int64, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	n, err := io.Copy(&u.data, io.LimitReader(r, u.svc.maxSize+1))
	if err != nil {
		return n, err
	}
	if int64(u.data.Len()) > u.svc.maxSize {
		return n, core.ErrFileTooLarge
	}
	return n, nil
}

func (u *fakeV2Upload) Commit(_ context.Context, attrs core.FileAttrs) (core.FileInfo, []core.TokenInfo, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.committed || u.aborted {
		return core.FileInfo{}, nil, errors.New("fake: upload already ended")
	}
	if err := u.svc.failure("Commit"); err != nil {
		return core.FileInfo{}, nil, err
	}
	u.committed = true
	info := u.svc.addFile(core.FileInfo{
		Name: attrs.Name, MimeType: attrs.MimeType, CreatorID: u.principal.ID, CreatedByNode: "node-1",
		Tags: attrs.Tags, Title: attrs.Title, Description: attrs.Description, ExpiresAt: attrs.ExpiresAt,
		CreatedAt: time.Now().UTC(),
	}, u.data.String())
	return info, nil, nil
}

func (u *fakeV2Upload) Abort() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.committed {
		u.aborted = true
	}
}

func (u *fakeV2Upload) state() (committed, aborted bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.committed, u.aborted
}

// The real use cases must satisfy the interface this package declares.
var _ EnmeshedService = (*core.Service)(nil)

func (f *fakeEnmeshed) FileReference(file core.FileInfo) (string, error) {
	return "ref-" + file.ID, nil
}
