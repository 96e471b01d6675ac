package core

import (
	"context"
	"io"
	"slices"
	"time"

	"github.com/cairn-dev/cairn/fsm"
)

// Permission names carried by API keys.
const (
	PermViewFiles                 = "VIEW_FILES"
	PermViewFileServiceSettings   = "VIEW_FILE_SERVICE_SETTINGS"
	PermUpdateFileServiceSettings = "UPDATE_FILE_SERVICE_SETTINGS"
	PermManageAPIKeys             = "MANAGE_API_KEYS"
	PermManageCluster             = "MANAGE_CLUSTER"
)

// AllPermissions is what the root key holds.
var AllPermissions = []string{
	PermViewFiles, PermViewFileServiceSettings, PermUpdateFileServiceSettings,
	PermManageAPIKeys, PermManageCluster,
}

// AccessLevel of a file token: full or read.
type AccessLevel = fsm.AccessLevel

// Access levels, re-exported for front-ends.
const (
	AccessFull = fsm.AccessFull
	AccessRead = fsm.AccessRead
)

// Principal is the caller identified by an API key, or Anonymous.
type Principal struct {
	ID          string
	Permissions []string
	Anonymous   bool

	// pending is set for a key AuthenticateUnconfirmed resolved without a read index.
	pending *pendingKey
}

// unconfirmed reports whether p's key was resolved without a read index and not confirmed since.
// Only CreateTokenByID acts for such a principal without a read index (the FSM checks the key at
// apply); every check that has no read index of its own to confirm it (require, AuthorizeUpload)
// refuses it, and a read index of its request confirms or refuses it (readIndex).
func (p Principal) unconfirmed() bool { return p.pending != nil && !p.pending.confirmed.Load() }

// Anonymous is the caller that presented no API key at all. It holds no permission; it may
// upload only where the node allows anonymous uploads (AuthorizeUpload), and its files are
// created by "anonymous".
var Anonymous = Principal{ID: "anonymous", Anonymous: true}

// Has reports whether the principal holds perm.
func (p Principal) Has(perm string) bool { return slices.Contains(p.Permissions, perm) }

// FileInfo is a file's metadata as the use cases return it.
type FileInfo struct {
	ID            string
	Name          string
	MimeType      string
	CreatorID     string
	CreatedByNode string
	Size          int64
	Tags          []string
	Title         string
	Description   string
	ExpiresAt     time.Time // zero: never
	CreatedAt     time.Time
	UpdatedAt     time.Time
	ETag          string // hex SHA-256 of the content
}

// TokenKind is how a file token lives.
type TokenKind int

const (
	// TokenPersisted is stored in the Raft token table: it can be listed and deleted one by one.
	TokenPersisted TokenKind = iota
	// TokenEphemeral is signed with the cluster's key and never stored (no Raft write): always
	// read-only, it dies with its expiry, its file, or a rotation of the signing key.
	TokenEphemeral
)

// String is the kind's name, as metrics label it: "persisted" or "ephemeral".
func (k TokenKind) String() string {
	if k == TokenEphemeral {
		return "ephemeral"
	}
	return "persisted"
}

// TokenInfo is a file token as the use cases return it. Secret is the bearer secret.
type TokenInfo struct {
	ID        string
	Secret    string
	FileID    string
	Access    AccessLevel
	CreatorID string
	CreatedAt time.Time
	ExpiresAt time.Time // zero: never
	Kind      TokenKind
	// CreatedByNode is the node that issued the token.
	CreatedByNode string
}

// FileAttrs are the metadata an uploader supplies, known only once the whole multipart body is read
// (the SDK sends tags after the file part).
type FileAttrs struct {
	Name        string
	MimeType    string // empty: derived from the name, then from the content
	Tags        []string
	Title       string
	Description string
	ExpiresAt   time.Time
}

// Upload is one streaming upload in progress. ReadFrom streams the file's bytes into erasure-coded
// shards; Commit makes the file exist (the Raft commit point); Abort discards what was written.
// Exactly one of Commit or Abort must end every Upload; Abort after Commit is a no-op.
type Upload interface {
	ReadFrom(r io.Reader) (int64, error)
	Commit(ctx context.Context, attrs FileAttrs) (FileInfo, []TokenInfo, error)
	Abort()
}

// Content streams a byte range of a file's data.
type Content interface {
	// ReadRange writes bytes [off, off+n) of the file to w.
	ReadRange(ctx context.Context, w io.Writer, off, n int64) error
}
