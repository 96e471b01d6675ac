package core

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"time"

	"github.com/cairn-dev/cairn/erasure"
	"github.com/cairn-dev/cairn/fsm"
)

// Authenticate resolves an API key to its principal, linearizably: a key revoked before this call
// began is refused.
func (s *Service) Authenticate(ctx context.Context, apiKey string) (Principal, error) {
	if apiKey == "" || len(apiKey) > 256 {
		return Principal{}, ErrUnauthenticated
	}
	if err := s.readIndex(ctx); err != nil {
		return Principal{}, err
	}
	key, ok := s.state.APIKeyBySecret(apiKey)
	if !ok {
		return Principal{}, ErrUnauthenticated
	}
	return Principal{ID: key.ID, Permissions: slices.Clone(key.Permissions)}, nil
}

// AuthenticateUnconfirmed is Authenticate without the read index, for a request whose use case has
// the FSM check the key at apply instead (CreateTokenByID of a persisted token): a key found in the
// local state gives a principal marked unconfirmed. Anything that needs more than that confirms it
// through the request's read index (readIndex), and require and AuthorizeUpload refuse it, so a
// front-end that uses this for another route fails closed. A key unknown here (created moments
// ago on another node), a request without a read scope, or one whose read index already ran,
// gets Authenticate.
func (s *Service) AuthenticateUnconfirmed(ctx context.Context, apiKey string) (Principal, error) {
	scope, _ := ctx.Value(readScopeKey{}).(*readScope)
	if apiKey == "" || len(apiKey) > 256 || scope == nil || scope.done.Load() || scope.pending != nil {
		return s.Authenticate(ctx, apiKey)
	}
	key, ok := s.state.APIKeyBySecret(apiKey)
	if !ok {
		return s.Authenticate(ctx, apiKey)
	}
	scope.pending = &pendingKey{id: key.ID, secret: apiKey}
	return Principal{ID: key.ID, Permissions: slices.Clone(key.Permissions), pending: scope.pending}, nil
}

// tokenAuthority reports whether token creates may name their authority for the FSM to check.
func (s *Service) tokenAuthority() bool { return s.cfg.TokenAuthority != nil && s.cfg.TokenAuthority() }

// resolve turns a bearer token, persisted or ephemeral, into what it grants and its file, after a
// read index; anything else is ErrInvalidToken.
func (s *Service) resolve(ctx context.Context, secret string) (TokenInfo, fsm.File, error) {
	ephemeral := isEphemeral(secret)
	if ephemeral && len(secret) != ephemeralLen || !ephemeral && !plausibleSecret(secret) {
		return TokenInfo{}, fsm.File{}, ErrInvalidToken
	}
	if err := s.readIndex(ctx); err != nil {
		return TokenInfo{}, fsm.File{}, err
	}
	var tok TokenInfo
	if ephemeral {
		cfg, ok := s.state.Config()
		if !ok {
			return TokenInfo{}, fsm.File{}, ErrInvalidToken
		}
		fileID, expiresAt, ok := verifyEphemeral(cfg.SigningKey, secret)
		if !ok {
			return TokenInfo{}, fsm.File{}, ErrInvalidToken
		}
		tok = TokenInfo{Secret: secret, FileID: fileID, Access: AccessRead, ExpiresAt: expiresAt, Kind: TokenEphemeral}
	} else {
		t, ok := s.state.TokenBySecret(secret)
		if !ok {
			return TokenInfo{}, fsm.File{}, ErrInvalidToken
		}
		tok = tokenInfo(t)
	}
	now := s.now()
	if fsm.Expired(tok.ExpiresAt, now) {
		return TokenInfo{}, fsm.File{}, ErrInvalidToken
	}
	file, ok := s.state.File(tok.FileID)
	if !ok || file.Expired(now) {
		return TokenInfo{}, fsm.File{}, ErrInvalidToken
	}
	return tok, file, nil
}

// resolveFull is resolve plus the rule that the token must grant full access.
func (s *Service) resolveFull(ctx context.Context, secret string) (TokenInfo, fsm.File, error) {
	tok, file, err := s.resolve(ctx, secret)
	if err != nil {
		return tok, file, err
	}
	if tok.Access != fsm.AccessFull {
		return TokenInfo{}, fsm.File{}, ErrReadOnlyToken
	}
	return tok, file, nil
}

// Details returns a file's metadata. With a full token it also lists the file's live tokens.
func (s *Service) Details(ctx context.Context, secret string) (FileInfo, TokenInfo, []TokenInfo, error) {
	tok, file, err := s.resolve(ctx, secret)
	if err != nil {
		return FileInfo{}, TokenInfo{}, nil, err
	}
	var tokens []TokenInfo
	if tok.Access == fsm.AccessFull {
		tokens = s.liveTokens(file.ID)
	}
	return fileInfo(file), tok, tokens, nil
}

func (s *Service) liveTokens(fileID string) []TokenInfo {
	now := s.now()
	var out []TokenInfo
	for _, t := range s.state.FileTokens(fileID) {
		if !t.Expired(now) {
			out = append(out, tokenInfo(t))
		}
	}
	return out
}

// OpenFile resolves a token and returns the file and a reader of its content.
func (s *Service) OpenFile(ctx context.Context, secret string) (FileInfo, Content, error) {
	_, file, err := s.resolve(ctx, secret)
	if err != nil {
		return FileInfo{}, nil, err
	}
	return s.content(file)
}

func (s *Service) content(file fsm.File) (FileInfo, Content, error) {
	codec, err := s.codec(file.Layout.Geometry, file.Layout.BlockSize)
	if err != nil {
		return FileInfo{}, nil, fmt.Errorf("codec for file %s: %w", file.ID, err)
	}
	return fileInfo(file), &fileContent{s: s, file: file, codec: codec}, nil
}

// DeleteFile removes a file, its tokens and (best effort, now) its shards. It needs a full token.
func (s *Service) DeleteFile(ctx context.Context, secret string) error {
	_, file, err := s.resolveFull(ctx, secret)
	if err != nil {
		return err
	}
	if err := s.deleteFile(ctx, file); err != nil {
		if errors.Is(err, ErrNotFound) { // deleted concurrently
			return ErrInvalidToken
		}
		return err
	}
	return nil
}

// deleteFile commits the deletion, then removes the shards from the nodes that are up.
func (s *Service) deleteFile(ctx context.Context, file fsm.File) error {
	if err := s.propose(ctx, fsm.CmdDeleteFile, fsm.DeleteFile{FileID: file.ID}); err != nil {
		return err
	}
	s.metrics.deleted()
	s.spawn(func(ctx context.Context) { s.deleteShards(ctx, file.ID, file.Layout.Segments) })
	return nil
}

// CreateToken adds a persisted token to the file behind a full token.
func (s *Service) CreateToken(ctx context.Context, secret string, access AccessLevel, expiresAt time.Time) (TokenInfo, error) {
	if !access.Valid() {
		return TokenInfo{}, fmt.Errorf("%w: accessLevel must be full or read", ErrInvalidInput)
	}
	// A full token found in the local state is named as the authority, and the FSM checks at apply
	// that it is still there, full, of this file and live: no read index. Anything else (unknown
	// here, read, expired) is decided after the read index, as before.
	tok, file, atApply := s.localFullToken(secret)
	if !atApply {
		var err error
		if tok, file, err = s.resolveFull(ctx, secret); err != nil {
			return TokenInfo{}, err
		}
	}
	now := s.now()
	if !expiresAt.IsZero() && !expiresAt.After(now) {
		return TokenInfo{}, fmt.Errorf("%w: expiresAt must be in the future", ErrInvalidInput)
	}
	created := fsm.Token{
		ID: NewTokenID(), Secret: NewSecret(), FileID: file.ID, Access: access,
		CreatorID: tok.CreatorID, CreatedAt: now, ExpiresAt: expiresAt.UTC(), CreatedBy: s.cfg.NodeID,
	}
	if expiresAt.IsZero() {
		created.ExpiresAt = time.Time{}
	}
	cmd := fsm.CreateToken{Token: created}
	if atApply {
		cmd.Authority = &fsm.TokenAuthority{TokenID: tok.ID}
	}
	err := s.propose(ctx, fsm.CmdCreateToken, cmd)
	if atApply && errors.Is(err, fsm.ErrNotEnabled) {
		// As in CreateTokenByID: the leader refused the authority field; decide after the read
		// index and send the command without it.
		if _, _, err := s.resolveFull(ctx, secret); err != nil {
			return TokenInfo{}, err
		}
		cmd.Authority = nil
		err = s.propose(ctx, fsm.CmdCreateToken, cmd)
	}
	if err != nil {
		if errors.Is(err, ErrNotFound) || errors.Is(err, errNoAuthority) {
			return TokenInfo{}, ErrInvalidToken
		}
		return TokenInfo{}, err
	}
	s.metrics.tokenCreated(TokenPersisted)
	return tokenInfo(created), nil
}

// localFullToken looks secret up in the local state, without a read index, when token creates may
// name their authority: ok only for a persisted full token, live, of a live file.
func (s *Service) localFullToken(secret string) (TokenInfo, fsm.File, bool) {
	if !s.tokenAuthority() || isEphemeral(secret) || !plausibleSecret(secret) {
		return TokenInfo{}, fsm.File{}, false
	}
	t, ok := s.state.TokenBySecret(secret)
	now := s.now()
	if !ok || t.Access != fsm.AccessFull || t.Expired(now) {
		return TokenInfo{}, fsm.File{}, false
	}
	file, ok := s.state.File(t.FileID)
	if !ok || file.Expired(now) {
		return TokenInfo{}, fsm.File{}, false
	}
	return tokenInfo(t), file, true
}

// DeleteToken removes tokenToDelete from the file behind the full token secret. The two may be the
// same token as long as another full token remains.
func (s *Service) DeleteToken(ctx context.Context, secret, tokenToDelete string) error {
	_, file, err := s.resolveFull(ctx, secret)
	if err != nil {
		return err
	}
	if !plausibleSecret(tokenToDelete) {
		return ErrInvalidToken
	}
	target, ok := s.state.TokenBySecret(tokenToDelete)
	if !ok || subtle.ConstantTimeCompare([]byte(target.FileID), []byte(file.ID)) != 1 {
		return ErrInvalidToken
	}
	if err := s.propose(ctx, fsm.CmdDeleteToken, fsm.DeleteToken{FileID: file.ID, TokenID: target.ID}); err != nil {
		if errors.Is(err, ErrNotFound) {
			return ErrInvalidToken
		}
		return err
	}
	return nil
}

// fileContent reads a file's segments through the erasure codec.
type fileContent struct {
	s     *Service
	file  fsm.File
	codec *erasure.Codec
}

// ReadRange writes bytes [off, off+n) of the file to w, segment by segment. A read of the whole
// file also checks the file's SHA-256 (its ETag) as it streams, and holds back its last bytes
// until the digest matched: on a mismatch they are never written and the error wraps
// ErrUnavailable, so a client sees a short, broken transfer, never a clean end with wrong bytes.
func (c *fileContent) ReadRange(ctx context.Context, w io.Writer, off, n int64) error {
	if off < 0 || n < 0 || off+n > c.file.Size {
		return fmt.Errorf("%w: range %d+%d outside a file of %d bytes", ErrInvalidInput, off, n, c.file.Size)
	}
	if off == 0 && n == c.file.Size && n > 0 {
		if want, err := hex.DecodeString(c.file.ETag); err == nil && len(want) == sha256.Size {
			dw := &digestWriter{w: w, hash: sha256.New(), want: want, remaining: n}
			err := c.readRange(ctx, dw, off, n)
			if errors.Is(err, errDigestMismatch) {
				c.s.metrics.contentMismatch()
				c.s.log.Error("file content does not match its SHA-256; response aborted, its shards are being checked",
					"file", c.file.ID, "size", c.file.Size)
				c.s.checkFileInBackground(c.file)
				return fmt.Errorf("%w: file %s: %w", ErrUnavailable, c.file.ID, err)
			}
			return err
		}
	}
	return c.readRange(ctx, w, off, n)
}

func (c *fileContent) readRange(ctx context.Context, w io.Writer, off, n int64) error {
	end := off + n
	w = c.s.metrics.countDownload(w)
	for si, seg := range c.file.Layout.Segments {
		segEnd := seg.Offset + seg.Size
		if segEnd <= off || seg.Offset >= end {
			continue
		}
		from := max(off, seg.Offset) - seg.Offset
		to := min(end, segEnd) - seg.Offset
		src := &segmentSource{s: c.s, fileID: c.file.ID, segment: si, nodes: seg.Nodes}
		faults, err := c.codec.ReadSegment(ctx, w, erasure.SegmentID{File: c.file.ID, Segment: si}, seg.Size, from, to-from, src)
		for _, f := range faults {
			c.s.metrics.shardFault(f.Corrupt)
			c.s.log.Warn("shard read fault", "file", c.file.ID, "segment", si, "shard", f.Index, "corrupt", f.Corrupt, "err", f.Err)
		}
		if len(faults) > 0 {
			c.s.healInBackground(c.file.ID, si, faults)
		}
		if err != nil {
			if errors.Is(err, erasure.ErrUnrecoverable) {
				return fmt.Errorf("%w: file %s segment %d: %w", ErrUnavailable, c.file.ID, si, err)
			}
			return fmt.Errorf("read file %s segment %d: %w", c.file.ID, si, err)
		}
	}
	return nil
}

// errDigestMismatch: a full read's bytes did not hash to the file's SHA-256.
var errDigestMismatch = errors.New("content does not match the file's SHA-256")

// digestWriter hashes a full read on its way to w and checks the digest before the last bytes
// leave: the write that completes the file is hashed first and, on a mismatch, not written.
type digestWriter struct {
	w         io.Writer
	hash      hash.Hash
	want      []byte
	remaining int64
	sum       [sha256.Size]byte
}

func (d *digestWriter) Write(p []byte) (int, error) {
	d.hash.Write(p)
	d.remaining -= int64(len(p))
	if d.remaining <= 0 && !bytes.Equal(d.hash.Sum(d.sum[:0]), d.want) {
		return 0, errDigestMismatch
	}
	return d.w.Write(p)
}

// segmentSource serves one segment's shards from the nodes of its layout.
type segmentSource struct {
	s       *Service
	fileID  string
	segment int
	nodes   []string
}

// Local reports whether shard index is on this node, so the codec reads it first: a local
// parity shard and a decode cost less than a second shard fetched from a peer.
func (src *segmentSource) Local(index int) bool {
	return index < len(src.nodes) && src.nodes[index] == src.s.cfg.NodeID
}

func (src *segmentSource) OpenShard(ctx context.Context, index int, off, n int64) (io.ReadCloser, error) {
	if index >= len(src.nodes) || src.nodes[index] == "" {
		return nil, fmt.Errorf("shard %d of segment %d was never written: %w", index, src.segment, erasure.ErrShardNotFound)
	}
	id := erasure.ShardID{File: src.fileID, Segment: src.segment, Index: index}
	if src.Local(index) {
		// The node's own shards come from its disk, not from a peer that can stall or vanish
		// behind a partition, so no stall timers are armed (two timers and a context less).
		return src.s.shards.OpenShard(ctx, src.nodes[index], id, off, n)
	}
	ctx, cancel := context.WithCancel(ctx)
	// Opening is bounded by the stall timeout too: a partitioned peer never answers the request.
	opening := time.AfterFunc(src.s.cfg.ShardStallTimeout, cancel)
	rc, err := src.s.shards.OpenShard(ctx, src.nodes[index], id, off, n)
	if !opening.Stop() {
		if err == nil {
			rc.Close()
		}
		cancel()
		return nil, fmt.Errorf("open shard %s on %s: no answer for %s: %w", id, src.nodes[index], src.s.cfg.ShardStallTimeout, errStalled)
	}
	if err != nil {
		cancel()
		return nil, err
	}
	// A shard whose node stops sending is abandoned after the stall timeout, and the read goes on
	// from parity: one slow node must not hold a download.
	return newStallGuard(rc, src.s.cfg.ShardStallTimeout, cancel), nil
}

func fileInfo(f fsm.File) FileInfo {
	return FileInfo{
		ID: f.ID, Name: f.Name, MimeType: f.MimeType, CreatorID: f.CreatorID, CreatedByNode: f.CreatedBy,
		Size: f.Size, Tags: slices.Clone(f.Tags), Title: f.Title, Description: f.Description,
		ExpiresAt: f.ExpiresAt, CreatedAt: f.CreatedAt, UpdatedAt: f.UpdatedAt, ETag: f.ETag,
	}
}

func tokenInfo(t fsm.Token) TokenInfo {
	return TokenInfo{
		ID: t.ID, Secret: t.Secret, FileID: t.FileID, Access: t.Access, CreatorID: t.CreatorID,
		CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt, CreatedByNode: t.CreatedBy,
	}
}
