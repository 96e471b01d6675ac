package core

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/cairn-dev/cairn/fsm"
)

// APIKeyInfo describes an API key; its secret is shown only once, when it is created.
type APIKeyInfo struct {
	ID          string
	Name        string
	Permissions []string
	CreatedAt   time.Time
}

// Settings are the file service's operator settings.
type Settings struct {
	DisableForceDownloadForMimeTypes []string
	UpdatedAt                        time.Time
}

// SettingsPatch is a partial settings update: nil fields stay as they are.
type SettingsPatch struct {
	DisableForceDownloadForMimeTypes *[]string
}

// FileListing is a file with its live persisted tokens, as the admin listing shows it.
type FileListing struct {
	File   FileInfo
	Tokens []TokenInfo
}

// Authorize is nil when p is an authenticated principal holding perm; otherwise
// ErrUnauthenticated, or a MissingPermissionError (which is ErrPermissionDenied) naming perm.
func (s *Service) Authorize(p Principal, perm string) error { return s.require(p, perm) }

func (s *Service) require(p Principal, perm string) error {
	if p.ID == "" || p.Anonymous || p.unconfirmed() {
		return ErrUnauthenticated
	}
	if !p.Has(perm) {
		return &MissingPermissionError{Permission: perm}
	}
	return nil
}

// CreateAPIKey creates a key for a new principal. The returned secret is never stored and cannot
// be shown again.
func (s *Service) CreateAPIKey(ctx context.Context, p Principal, name string, perms []string) (APIKeyInfo, string, error) {
	if err := s.require(p, PermManageAPIKeys); err != nil {
		return APIKeyInfo{}, "", err
	}
	if len(name) > 200 || !utf8.ValidString(name) {
		return APIKeyInfo{}, "", fmt.Errorf("%w: name must be valid UTF-8 of at most 200 bytes", ErrInvalidInput)
	}
	clean := make([]string, 0, len(perms))
	for _, perm := range perms {
		if !slices.Contains(AllPermissions, perm) {
			return APIKeyInfo{}, "", fmt.Errorf("%w: unknown permission %q (known: %s)", ErrInvalidInput, perm, strings.Join(AllPermissions, ", "))
		}
		if !slices.Contains(clean, perm) {
			clean = append(clean, perm)
		}
	}
	secret := "ck_" + NewSecret()
	key := fsm.APIKey{
		ID: "key_" + randomAlnum(17), Name: name, Hash: fsm.HashSecret(secret),
		Permissions: clean, CreatedAt: s.now(),
	}
	if err := s.propose(ctx, fsm.CmdCreateAPIKey, fsm.CreateAPIKey{Key: key}); err != nil {
		return APIKeyInfo{}, "", err
	}
	return apiKeyInfo(key), secret, nil
}

// ListAPIKeys lists every key (never their secrets).
func (s *Service) ListAPIKeys(ctx context.Context, p Principal) ([]APIKeyInfo, error) {
	if err := s.require(p, PermManageAPIKeys); err != nil {
		return nil, err
	}
	if err := s.readIndex(ctx); err != nil {
		return nil, err
	}
	var out []APIKeyInfo
	for _, k := range s.state.APIKeys() {
		out = append(out, apiKeyInfo(k))
	}
	return out, nil
}

// RevokeAPIKey removes a key; once this returns, no node accepts it.
func (s *Service) RevokeAPIKey(ctx context.Context, p Principal, id string) error {
	if err := s.require(p, PermManageAPIKeys); err != nil {
		return err
	}
	err := s.propose(ctx, fsm.CmdRevokeAPIKey, fsm.RevokeAPIKey{ID: id})
	if errors.Is(err, fsm.ErrLastAdminKey) {
		return fmt.Errorf("%w: cannot revoke the last key that holds %s", ErrConflict, PermManageAPIKeys)
	}
	return err
}

func apiKeyInfo(k fsm.APIKey) APIKeyInfo {
	return APIKeyInfo{ID: k.ID, Name: k.Name, Permissions: slices.Clone(k.Permissions), CreatedAt: k.CreatedAt}
}

// Settings returns the service settings (needs VIEW_FILE_SERVICE_SETTINGS).
func (s *Service) Settings(ctx context.Context, p Principal) (Settings, error) {
	if err := s.require(p, PermViewFileServiceSettings); err != nil {
		return Settings{}, err
	}
	if err := s.readIndex(ctx); err != nil {
		return Settings{}, err
	}
	return s.CurrentSettings(), nil
}

// CurrentSettings reads the settings from the local state without a read index: downloads use
// it, and a settings change reaching them a heartbeat late is harmless. Every download asks,
// so the decoded settings are kept while the state has applied nothing new (settingsCache).
func (s *Service) CurrentSettings() Settings {
	if cached, ok := s.settings.get(s.state); ok {
		return cached
	}
	index, indexed := appliedIndex(s.state) // before the read: the settings are at least this new
	cfg, ok := s.state.Config()
	if !ok {
		return Settings{}
	}
	updated := cfg.Settings.UpdatedAt
	if updated.IsZero() {
		updated = cfg.CreatedAt // never changed: the defaults date from the cluster's creation
	}
	cur := Settings{DisableForceDownloadForMimeTypes: cfg.Settings.DisableForceDownloadForMimeTypes, UpdatedAt: updated}
	if indexed {
		s.settings.put(index, cur)
	}
	cur.DisableForceDownloadForMimeTypes = slices.Clone(cur.DisableForceDownloadForMimeTypes)
	return cur
}

// appliedIndexer is the optional part of State that says how far it has applied the log (the
// fsm has it). Without it nothing is cached.
type appliedIndexer interface{ AppliedIndex() uint64 }

func appliedIndex(st State) (uint64, bool) {
	if ai, ok := st.(appliedIndexer); ok {
		return ai.AppliedIndex(), true
	}
	return 0, false
}

// settingsCache holds the settings as read at one applied index. The index is taken before the
// read, so the cached value is never older than the state at that index; any command applied
// since (not only a settings change) makes the next call read the state again. It saves every
// download a read transaction and a JSON decode of the cluster config.
type settingsCache struct {
	mu       sync.Mutex
	valid    bool
	index    uint64
	settings Settings // never handed out: callers get a copy of the slice
}

func (c *settingsCache) get(st State) (Settings, bool) {
	index, ok := appliedIndex(st)
	if !ok {
		return Settings{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.valid || c.index != index {
		return Settings{}, false
	}
	out := c.settings
	out.DisableForceDownloadForMimeTypes = slices.Clone(out.DisableForceDownloadForMimeTypes)
	return out, true
}

func (c *settingsCache) put(index uint64, v Settings) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.valid, c.index = true, index
	v.DisableForceDownloadForMimeTypes = slices.Clone(v.DisableForceDownloadForMimeTypes)
	c.settings = v
}

// UpdateSettings applies a partial update (needs UPDATE_FILE_SERVICE_SETTINGS).
func (s *Service) UpdateSettings(ctx context.Context, p Principal, patch SettingsPatch) (Settings, error) {
	if err := s.require(p, PermUpdateFileServiceSettings); err != nil {
		return Settings{}, err
	}
	if err := s.readIndex(ctx); err != nil {
		return Settings{}, err
	}
	cur := s.CurrentSettings()
	next := fsm.ServiceSettings{DisableForceDownloadForMimeTypes: cur.DisableForceDownloadForMimeTypes, UpdatedAt: s.now()}
	if patch.DisableForceDownloadForMimeTypes != nil {
		var types []string
		for _, t := range *patch.DisableForceDownloadForMimeTypes {
			mt := strings.ToLower(strings.TrimSpace(t))
			if mt != "*/*" && normalizeMimeType(mt) != mt {
				return Settings{}, fmt.Errorf("%w: %q is not a mimetype (type/subtype)", ErrInvalidInput, t)
			}
			if !slices.Contains(types, mt) {
				types = append(types, mt)
			}
		}
		next.DisableForceDownloadForMimeTypes = types
	}
	if next.DisableForceDownloadForMimeTypes == nil {
		next.DisableForceDownloadForMimeTypes = []string{}
	}
	if err := s.propose(ctx, fsm.CmdUpdateSettings, fsm.UpdateSettings{Settings: next}); err != nil {
		return Settings{}, err
	}
	return s.CurrentSettings(), nil
}

// RotateSigningKey replaces the ephemeral-token signing key (needs MANAGE_CLUSTER): every ephemeral
// token minted before stops working on every node once this returns.
func (s *Service) RotateSigningKey(ctx context.Context, p Principal) error {
	if err := s.require(p, PermManageCluster); err != nil {
		return err
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("draw signing key: %w", err)
	}
	return s.propose(ctx, fsm.CmdRotateSigningKey, fsm.RotateSigningKey{Key: key})
}

// ScanFilesWithTokens calls fn with every live file and its live tokens, in id order, until fn
// returns false; for the admin listing (needs VIEW_FILES). It holds one file at a time, so a
// listing's memory is what fn keeps (the RQL pager keeps a page). The scan reads the state in
// chunks, each a consistent view (fsm's Files).
func (s *Service) ScanFilesWithTokens(ctx context.Context, p Principal, fn func(FileListing) bool) error {
	if err := s.require(p, PermViewFiles); err != nil {
		return err
	}
	if err := s.readIndex(ctx); err != nil {
		return err
	}
	now := s.now()
	s.state.Files(func(f fsm.File) bool {
		if f.Expired(now) {
			return true
		}
		return ctx.Err() == nil && fn(FileListing{File: fileInfo(f), Tokens: s.liveTokens(f.ID)})
	})
	return ctx.Err()
}

// visible reports whether p may see f through the id-addressed API: its creator, or VIEW_FILES.
func visible(p Principal, f fsm.File) bool {
	return (p.ID != "" && f.CreatorID == p.ID) || p.Has(PermViewFiles)
}

// fileByID resolves a file id for p after a read index; invisible, unknown and expired files are
// all ErrNotFound, so existence does not leak.
func (s *Service) fileByID(ctx context.Context, p Principal, id string) (fsm.File, error) {
	if p.ID == "" {
		return fsm.File{}, ErrUnauthenticated
	}
	if err := s.readIndex(ctx); err != nil {
		return fsm.File{}, err
	}
	f, ok := s.state.File(id)
	if !ok || f.Expired(s.now()) || !visible(p, f) {
		return fsm.File{}, ErrNotFound
	}
	return f, nil
}

// FileByID returns a file p may see.
func (s *Service) FileByID(ctx context.Context, p Principal, id string) (FileInfo, error) {
	f, err := s.fileByID(ctx, p, id)
	if err != nil {
		return FileInfo{}, err
	}
	return fileInfo(f), nil
}

// ScanFiles calls fn with the live files p may see (ownOnly: only those p created) in creation
// order (CreatedAt, then id, through the creation index), until fn returns false. It holds one
// file at a time.
func (s *Service) ScanFiles(ctx context.Context, p Principal, ownOnly bool, fn func(FileInfo) bool) error {
	if p.ID == "" {
		return ErrUnauthenticated
	}
	if err := s.readIndex(ctx); err != nil {
		return err
	}
	now := s.now()
	s.state.FilesByCreation(func(f fsm.File) bool {
		own := f.CreatorID == p.ID
		if f.Expired(now) || !(own || (!ownOnly && visible(p, f))) {
			return true
		}
		return ctx.Err() == nil && fn(fileInfo(f))
	})
	return ctx.Err()
}

// OpenFileByID is OpenFile addressed by id and principal instead of by token.
func (s *Service) OpenFileByID(ctx context.Context, p Principal, id string) (FileInfo, Content, error) {
	f, err := s.fileByID(ctx, p, id)
	if err != nil {
		return FileInfo{}, nil, err
	}
	return s.content(f)
}

// DeleteFileByID deletes a file p created, its tokens, and (best effort) its shards.
// Only the file's creator may delete it: VIEW_FILES lets a principal see and read every file, not
// destroy it (ErrPermissionDenied).
func (s *Service) DeleteFileByID(ctx context.Context, p Principal, id string) error {
	f, err := s.fileByID(ctx, p, id)
	if err != nil {
		return err
	}
	if f.CreatorID != p.ID {
		return ErrPermissionDenied
	}
	return s.deleteFile(ctx, f)
}

// CreateTokenByID issues a read token for a file p may see. expiresAt zero means the file's own
// expiry. A TokenEphemeral is signed, not stored: no Raft write.
//
// For a principal AuthenticateUnconfirmed resolved without a read index, a persisted token of a
// file visible in the local state names the key as its authority, and the FSM checks at apply
// that the key still exists and may see the file: one proposal, no read index. Anything else
// (an ephemeral token, a file not visible here yet, a cluster that does not speak
// fsm.ProtocolTokenAuthority) takes the read index first, which confirms the key.
func (s *Service) CreateTokenByID(ctx context.Context, p Principal, fileID string, expiresAt time.Time, kind TokenKind) (TokenInfo, error) {
	atApply := false
	var f fsm.File
	if kind == TokenPersisted && p.unconfirmed() && s.tokenAuthority() {
		f, atApply = s.state.File(fileID)
		atApply = atApply && !f.Expired(s.now()) && visible(p, f)
	}
	if !atApply {
		var err error
		if f, err = s.fileByID(ctx, p, fileID); err != nil {
			return TokenInfo{}, err
		}
	}
	now := s.now()
	if expiresAt.IsZero() {
		expiresAt = f.ExpiresAt
	} else if !expiresAt.After(now) {
		return TokenInfo{}, fmt.Errorf("%w: 'expiresAt' must be in the future", ErrInvalidInput)
	}
	if !f.ExpiresAt.IsZero() && expiresAt.After(f.ExpiresAt) {
		expiresAt = f.ExpiresAt // a token never outlives its file
	}
	tok := TokenInfo{
		ID: NewTokenID(), FileID: f.ID, Access: AccessRead, CreatorID: p.ID, CreatedAt: now,
		ExpiresAt: expiresAt.UTC(), Kind: kind, CreatedByNode: s.cfg.NodeID,
	}
	if expiresAt.IsZero() {
		tok.ExpiresAt = time.Time{}
	}
	if kind == TokenEphemeral {
		cfg, err := s.clusterConfig()
		if err != nil {
			return TokenInfo{}, err
		}
		tok.Secret = mintEphemeral(cfg.SigningKey, f.ID, tok.ExpiresAt)
		s.metrics.tokenCreated(TokenEphemeral)
		return tok, nil
	}
	tok.Secret = NewSecret()
	stored := fsm.Token{
		ID: tok.ID, Secret: tok.Secret, FileID: f.ID, Access: fsm.AccessRead, CreatorID: p.ID,
		CreatedAt: now, ExpiresAt: tok.ExpiresAt, CreatedBy: s.cfg.NodeID,
	}
	cmd := fsm.CreateToken{Token: stored}
	if atApply {
		cmd.Authority = &fsm.TokenAuthority{APIKeyID: p.ID}
	}
	err := s.propose(ctx, fsm.CmdCreateToken, cmd)
	if atApply && errors.Is(err, fsm.ErrNotEnabled) {
		// The leader sees a server that does not speak the authority field yet (its view of the
		// servers' protocols is not ours): confirm the key by the read index, and send the
		// command as an older cluster takes it. The refused one never reached the log.
		if _, err := s.fileByID(ctx, p, fileID); err != nil {
			return TokenInfo{}, err
		}
		cmd.Authority = nil
		err = s.propose(ctx, fsm.CmdCreateToken, cmd)
	}
	if err != nil {
		if errors.Is(err, errNoAuthority) {
			return TokenInfo{}, ErrUnauthenticated // the key was revoked before the create applied
		}
		return TokenInfo{}, err
	}
	s.metrics.tokenCreated(TokenPersisted)
	return tok, nil
}

// TokenByID returns a persisted, live token visible to p (its creator, or VIEW_FILES).
func (s *Service) TokenByID(ctx context.Context, p Principal, id string) (TokenInfo, error) {
	if p.ID == "" {
		return TokenInfo{}, ErrUnauthenticated
	}
	if err := s.readIndex(ctx); err != nil {
		return TokenInfo{}, err
	}
	t, ok := s.state.Token(id)
	now := s.now()
	if !ok || t.Expired(now) || (t.CreatorID != p.ID && !p.Has(PermViewFiles)) {
		return TokenInfo{}, ErrNotFound
	}
	if f, ok := s.state.File(t.FileID); !ok || f.Expired(now) {
		return TokenInfo{}, ErrNotFound
	}
	return tokenInfo(t), nil
}

// FileReference returns a shareable read reference to a file the caller has already resolved:
// a stable ephemeral token (no Raft write) that expires with the file and dies with it or with a
// key rotation. The enmeshed FileDTO carries it as truncatedReference.
func (s *Service) FileReference(f FileInfo) (string, error) {
	cfg, err := s.clusterConfig()
	if err != nil {
		return "", err
	}
	return fileReference(cfg.SigningKey, f.ID, f.ExpiresAt), nil
}
