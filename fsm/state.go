package fsm

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"time"

	"github.com/cairn-dev/cairn/erasure"
)

// AccessLevel is what a file token allows.
type AccessLevel string

const (
	// AccessFull allows reading, sharing and deleting the file.
	AccessFull AccessLevel = "full"
	// AccessRead allows reading the file only.
	AccessRead AccessLevel = "read"
)

// Valid reports whether a is one of the defined access levels.
func (a AccessLevel) Valid() bool { return a == AccessFull || a == AccessRead }

// File is a committed file: its metadata and where its shards live.
type File struct {
	ID          string    `json:"id"` // "FIL"+17 alnum, chosen by proposer
	Name        string    `json:"name"`
	MimeType    string    `json:"mimeType"`
	CreatorID   string    `json:"creatorId"`
	CreatedBy   string    `json:"createdByNode"` // node id that took the upload
	Size        int64     `json:"size"`
	Tags        []string  `json:"tags,omitempty"`
	Title       string    `json:"title,omitempty"`
	Description string    `json:"description,omitempty"`
	ExpiresAt   time.Time `json:"expiresAt,omitzero"`
	CreatedAt   time.Time `json:"createdAt"`
	UpdatedAt   time.Time `json:"updatedAt"`
	ETag        string    `json:"etag"` // hex SHA-256 of content
	Layout      Layout    `json:"layout"`
}

// Expired reports whether the file has an expiry at or before now. The FSM never filters by
// expiry on reads because it has no clock; callers pass theirs.
func (f File) Expired(now time.Time) bool { return Expired(f.ExpiresAt, now) }

// Layout says how a file is erasure-coded and which node holds each shard of each segment.
type Layout struct {
	Geometry  erasure.Geometry `json:"geometry"`
	BlockSize int              `json:"blockSize"`
	Segments  []Segment        `json:"segments"`
}

// Segment is a contiguous byte range of a file. Nodes[i] holds shard i ("" = shard missing,
// written degraded); len(Nodes) == Geometry.Total().
type Segment struct {
	Offset int64    `json:"offset"`
	Size   int64    `json:"size"`
	Nodes  []string `json:"nodes"`
}

// Token is a persisted bearer capability for one file.
type Token struct {
	ID        string      `json:"id"`     // "TOK"+17 alnum
	Secret    string      `json:"secret"` // bearer secret, URL-safe base64 of 32 random bytes
	FileID    string      `json:"fileId"`
	Access    AccessLevel `json:"access"`
	CreatorID string      `json:"creatorId"`
	CreatedAt time.Time   `json:"createdAt"`
	ExpiresAt time.Time   `json:"expiresAt,omitzero"`
	// CreatedBy is the node that took the request that created the token.
	CreatedBy string `json:"createdByNode,omitempty"`
}

// Expired reports whether the token has an expiry at or before now. Reads return expired tokens
// until a delete command removes them; callers check with their own clock.
func (t Token) Expired(now time.Time) bool { return Expired(t.ExpiresAt, now) }

// Expired is the one expiry rule: an expiry at or before now has passed; a zero one never does.
func Expired(expiresAt, now time.Time) bool {
	return !expiresAt.IsZero() && !now.Before(expiresAt)
}

// APIKey identifies a principal. Only the hash of its secret is stored.
type APIKey struct {
	ID          string    `json:"id"` // principal id
	Name        string    `json:"name"`
	Hash        string    `json:"hash"` // hex SHA-256 of the secret key; the secret is never stored
	Permissions []string  `json:"permissions"`
	CreatedAt   time.Time `json:"createdAt"`
}

// ClusterConfig is fixed at bootstrap by the first leader.
type ClusterConfig struct {
	ClusterID        string           `json:"clusterId"`
	Geometry         erasure.Geometry `json:"geometry"`
	BlockSize        int              `json:"blockSize"`
	BlocksPerSegment int              `json:"blocksPerSegment"`
	SigningKey       []byte           `json:"signingKey"` // MACs ephemeral tokens; rotated by CmdRotateSigningKey
	CreatedAt        time.Time        `json:"createdAt"`
	// Settings are the file service's operator settings, changed by CmdUpdateSettings.
	Settings ServiceSettings `json:"settings"`
	// RemovedNodes are nodes decommissioned by CmdRemoveNode, sorted.
	RemovedNodes []string `json:"removedNodes,omitempty"`
}

// ServiceSettings are the operator settings of the /files/v1 service.
type ServiceSettings struct {
	// DisableForceDownloadForMimeTypes lists mimetypes served inline (no Content-Disposition:
	// attachment); "*/*" matches all.
	DisableForceDownloadForMimeTypes []string  `json:"disableForceDownloadForMimeTypes"`
	UpdatedAt                        time.Time `json:"updatedAt,omitzero"`
}

func (c ClusterConfig) clone() ClusterConfig {
	c.SigningKey = slices.Clone(c.SigningKey)
	c.Settings.DisableForceDownloadForMimeTypes = slices.Clone(c.Settings.DisableForceDownloadForMimeTypes)
	c.RemovedNodes = slices.Clone(c.RemovedNodes)
	return c
}

// HashSecret returns the hex SHA-256 of a bearer secret or API key: the form under which secrets
// are indexed and API keys stored.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}
