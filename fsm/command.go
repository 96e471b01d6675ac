package fsm

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"time"

	"github.com/cairn-dev/cairn/erasure"
)

// CommandType names a command and so the type of its payload.
type CommandType string

// The commands. Each comment names the payload type.
const (
	CmdInitCluster CommandType = "initCluster" // payload InitCluster
	CmdCreateFile  CommandType = "createFile"  // payload CreateFile
	CmdDeleteFile  CommandType = "deleteFile"  // payload DeleteFile
	CmdCreateToken CommandType = "createToken" // payload CreateToken
	CmdDeleteToken CommandType = "deleteToken" // payload DeleteToken
	// CmdBarrier changes nothing. A new leader commits one per term so that its commit index points
	// at an entry the FSM sees: raft's own Barrier and no-op entries never reach the FSM, so a read
	// index that pointed at one could never be waited for.
	CmdBarrier CommandType = "barrier" // payload Barrier

	CmdCreateAPIKey     CommandType = "createApiKey"     // payload CreateAPIKey
	CmdRevokeAPIKey     CommandType = "revokeApiKey"     // payload RevokeAPIKey
	CmdUpdateSettings   CommandType = "updateSettings"   // payload UpdateSettings
	CmdRotateSigningKey CommandType = "rotateSigningKey" // payload RotateSigningKey
	CmdExpire           CommandType = "expire"           // payload Expire
	CmdMoveShard        CommandType = "moveShard"        // payload MoveShard
	CmdRemoveNode       CommandType = "removeNode"       // payload RemoveNode
)

// MoveShard records that shard Index of segment Segment of a file now lives on To. It is a
// compare-and-set: it applies only while the slot still names From ("" for a shard that was never
// written), so a repair that raced with another repair or a delete changes nothing (ErrConflict).
type MoveShard struct {
	FileID  string `json:"fileId"`
	Segment int    `json:"segment"`
	Index   int    `json:"index"`
	From    string `json:"from"`
	To      string `json:"to"`
}

// RemoveNode decommissions a node: the leader removes it from Raft and repair moves its shards
// away at once instead of waiting for the repair delay.
type RemoveNode struct {
	NodeID string `json:"nodeId"`
}

// PermManageAPIKeys is the permission a key must keep somewhere: revoking the last key that holds
// it is refused, so the cluster can always be administered.
const PermManageAPIKeys = "MANAGE_API_KEYS"

// CreateAPIKey adds an API key (its hash; the secret is never in the log).
type CreateAPIKey struct {
	Key APIKey `json:"key"`
}

// RevokeAPIKey removes an API key by its id.
type RevokeAPIKey struct {
	ID string `json:"id"`
}

// UpdateSettings replaces the service settings (the proposer merges a partial update first).
type UpdateSettings struct {
	Settings ServiceSettings `json:"settings"`
}

// RotateSigningKey replaces the key that MACs ephemeral tokens; every ephemeral token minted
// under the old key stops verifying.
type RotateSigningKey struct {
	Key []byte `json:"key"`
}

// Expire removes the listed files (with their tokens) and tokens that are expired at the
// command's time. Ids that are unknown or not expired (yet) are skipped: the leader proposes from
// its view, and Apply decides with the command's own clock.
type Expire struct {
	FileIDs  []string `json:"fileIds,omitempty"`
	TokenIDs []string `json:"tokenIds,omitempty"`
}

// Command is the envelope of every Raft log entry the FSM applies.
type Command struct {
	Version   int             `json:"v"`
	Type      CommandType     `json:"type"`
	RequestID string          `json:"requestId"` // unique per logical request; retries reuse it
	Time      time.Time       `json:"time"`      // proposer's clock; Apply uses only this
	Payload   json.RawMessage `json:"payload"`
}

// InitCluster fixes the cluster configuration and installs the root API key.
type InitCluster struct {
	Config  ClusterConfig `json:"config"`
	RootKey APIKey        `json:"rootKey"`
}

// CreateFile commits an uploaded file together with its initial tokens.
type CreateFile struct {
	File   File    `json:"file"`
	Tokens []Token `json:"tokens"`
}

// DeleteFile removes a file and all of its tokens.
type DeleteFile struct {
	FileID string `json:"fileId"`
}

// CreateToken adds a token to an existing file.
type CreateToken struct {
	Token Token `json:"token"`
	// Authority, when set (protocol ProtocolTokenAuthority), names what entitles the creator, and
	// Apply checks it against the state at this entry's place in the log: the proposer then needs
	// no read index first (cluster/DESIGN.md, "Token-create throughput"). Without it, as in every
	// entry before that protocol, the proposer checked, and Apply only checks that the file exists.
	Authority *TokenAuthority `json:"authority,omitempty"`
}

// TokenAuthority is what entitles a token's creator. Exactly one field is set.
type TokenAuthority struct {
	// APIKeyID: the API key that asks. Apply requires the key to exist, and the file to be the
	// key's own or the key to hold PermViewFiles. Such a token is a read token of that creator.
	APIKeyID string `json:"apiKeyId,omitempty"`
	// TokenID: a full token of the same file, live at the command's time.
	TokenID string `json:"tokenId,omitempty"`
}

// PermViewFiles lets an API key see (and make read tokens for) every file, not only its own.
const PermViewFiles = "VIEW_FILES"

// DeleteToken removes one token of a file.
type DeleteToken struct {
	FileID  string `json:"fileId"`
	TokenID string `json:"tokenId"`
}

// Barrier is the empty payload of CmdBarrier. Node records who proposed it, for the logs.
type Barrier struct {
	Node string `json:"node"`
}

// payload is implemented by every command payload. validate holds the state-independent rules,
// so that a proposer learns of a malformed command before it reaches the log. The rules are part
// of the command version: changing one means a new CommandVersion (DESIGN.md).
type payload interface {
	validate() error
}

// EncodeCommand builds the Raft log entry bytes in the newest envelope version, CommandVersion.
// payload may be the command's payload type or a pointer to it; it is validated with the same
// rules as DecodeCommand, and with the proposal rules (proposal.go) on top. Whether the cluster
// may be sent typ yet is the proposer's question (CommandProtocol, and the leader's protocol gate
// in cluster), not the encoder's.
func EncodeCommand(typ CommandType, requestID string, now time.Time, payload any) ([]byte, error) {
	spec, ok := commands[typ]
	if !ok {
		return nil, fmt.Errorf("%w: unknown type %q", ErrInvalidCommand, typ)
	}
	p, err := asPayload(payload, spec.newPayload())
	if err != nil {
		return nil, err
	}
	cmd := Command{Version: CommandVersion, Type: typ, RequestID: requestID, Time: now}
	if err := cmd.validate(); err != nil {
		return nil, err
	}
	if err := p.validate(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalidCommand, typ, err)
	}
	if err := checkProposal(p); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalidCommand, typ, err)
	}
	if cmd.Payload, err = json.Marshal(p); err != nil {
		return nil, fmt.Errorf("%w: encode %s payload: %v", ErrInvalidCommand, typ, err)
	}
	b, err := json.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("%w: encode %s: %v", ErrInvalidCommand, typ, err)
	}
	return b, nil
}

// asPayload accepts T or *T where want is a *T.
func asPayload(v any, want payload) (payload, error) {
	rv := reflect.ValueOf(v)
	if rv.IsValid() && rv.Kind() != reflect.Pointer {
		ptr := reflect.New(rv.Type())
		ptr.Elem().Set(rv)
		rv = ptr
	}
	if !rv.IsValid() || rv.IsNil() || rv.Type() != reflect.TypeOf(want) {
		return nil, fmt.Errorf("%w: payload %T does not match %T", ErrInvalidCommand, v, want)
	}
	return rv.Interface().(payload), nil
}

// DecodeCommand decodes every envelope version ever written (commandVersions), each with the rules
// of its version, strictly: unknown fields anywhere (envelope and payload), an unknown type, a
// version this build never heard of, a missing requestId or time, trailing data, or a payload that
// breaks its command's rules give an error wrapping ErrInvalidCommand. The second result is a
// pointer to the payload in today's types (*InitCluster, *CreateFile, ...), whatever the version.
//
// Entries in the canonical form EncodeCommand writes take a fast path (decodeCanonical,
// command_canonical.go) that accepts a subset of what decodeCommandStrict accepts and yields the
// same values; anything else, including every input that is refused, goes through
// decodeCommandStrict, so the errors are always its errors.
func DecodeCommand(b []byte) (Command, any, error) {
	if cmd, p, ok := decodeCanonical(b); ok {
		return cmd, p, nil
	}
	return decodeCommandStrict(b)
}

// decodeCommandStrict is the reference decoder: encoding/json with unknown fields refused and
// nothing allowed after the value, the envelope first and then the payload. It defines what
// DecodeCommand accepts; decodeCanonical only makes its common case cheaper.
func decodeCommandStrict(b []byte) (Command, any, error) {
	var cmd Command
	if err := decodeStrict(b, &cmd); err != nil {
		return Command{}, nil, fmt.Errorf("%w: envelope: %v", ErrInvalidCommand, err)
	}
	if err := cmd.validate(); err != nil {
		return Command{}, nil, err
	}
	p, err := commandVersions[cmd.Version](cmd)
	if err != nil {
		return Command{}, nil, err
	}
	return cmd, p, nil
}

func (c Command) validate() error {
	switch {
	case commandVersions[c.Version] == nil:
		return fmt.Errorf("%w: unsupported version %d", ErrInvalidCommand, c.Version)
	case c.RequestID == "":
		return fmt.Errorf("%w: missing requestId", ErrInvalidCommand)
	case c.Time.IsZero():
		return fmt.Errorf("%w: missing time", ErrInvalidCommand)
	}
	return nil
}

// decodeStrict decodes exactly one JSON value with no unknown fields and nothing after it.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after value")
	}
	return nil
}

func (p *InitCluster) validate() error {
	c := p.Config
	switch {
	case c.ClusterID == "":
		return errors.New("missing clusterId")
	case c.BlockSize <= 0 || c.BlocksPerSegment <= 0:
		return fmt.Errorf("blockSize %d and blocksPerSegment %d must be positive", c.BlockSize, c.BlocksPerSegment)
	case p.RootKey.ID == "":
		return errors.New("missing root key id")
	case !isSHA256Hex(p.RootKey.Hash):
		return errors.New("root key hash is not a hex SHA-256")
	}
	return validGeometry(c.Geometry)
}

func (p *CreateFile) validate() error {
	f := p.File
	if f.ID == "" {
		return errors.New("missing file id")
	}
	if f.Size < 0 {
		return fmt.Errorf("negative size %d", f.Size)
	}
	if err := f.Layout.validate(f.Size); err != nil {
		return err
	}
	full := false
	for i, t := range p.Tokens {
		if err := t.validate(); err != nil {
			return fmt.Errorf("token %d: %w", i, err)
		}
		if t.FileID != f.ID {
			return fmt.Errorf("token %d: references file %q, not %q", i, t.FileID, f.ID)
		}
		full = full || t.Access == AccessFull
	}
	if !full {
		return errors.New("no full-access token")
	}
	return nil
}

// validate checks that the segments tile [0, size) and each names one node slot per shard, so
// that readers can trust a committed layout without re-checking it.
func (l Layout) validate(size int64) error {
	if err := validGeometry(l.Geometry); err != nil {
		return err
	}
	if l.BlockSize <= 0 {
		return fmt.Errorf("blockSize %d must be positive", l.BlockSize)
	}
	var next int64
	for i, s := range l.Segments {
		if s.Offset != next || s.Size < 0 {
			return fmt.Errorf("segment %d: range %d+%d does not continue at %d", i, s.Offset, s.Size, next)
		}
		if len(s.Nodes) != l.Geometry.Total() {
			return fmt.Errorf("segment %d: %d nodes for %s", i, len(s.Nodes), l.Geometry)
		}
		next += s.Size
	}
	if next != size {
		return fmt.Errorf("segments cover %d bytes of %d", next, size)
	}
	return nil
}

// validGeometry is the FSM's own, frozen rule (not erasure's Validate, which may evolve): a
// geometry the Reed-Solomon field can encode at all. Operational limits belong to the proposer.
func validGeometry(g erasure.Geometry) error {
	if g.Data < 1 || g.Parity < 0 || g.Total() > 256 {
		return fmt.Errorf("unusable geometry %s", g)
	}
	return nil
}

func (t Token) validate() error {
	switch {
	case t.ID == "" || t.Secret == "" || t.FileID == "":
		return errors.New("token needs id, secret and fileId")
	case !t.Access.Valid():
		return fmt.Errorf("invalid access %q", t.Access)
	}
	return nil
}

func (p *DeleteFile) validate() error {
	if p.FileID == "" {
		return errors.New("missing fileId")
	}
	return nil
}

func (p *CreateToken) validate() error {
	if err := p.Token.validate(); err != nil {
		return err
	}
	a := p.Authority
	switch {
	case a == nil:
		return nil
	case (a.APIKeyID == "") == (a.TokenID == ""):
		return errors.New("authority needs exactly one of apiKeyId and tokenId")
	case a.APIKeyID != "" && (p.Token.Access != AccessRead || p.Token.CreatorID != a.APIKeyID):
		return errors.New("an api key's token must be a read token created by that key")
	case a.TokenID == p.Token.ID:
		return errors.New("a token cannot authorize itself")
	}
	return nil
}

func (p *CreateToken) neededProtocol() int {
	if p.Authority != nil {
		return ProtocolTokenAuthority
	}
	return 1
}

func (p *DeleteToken) validate() error {
	if p.FileID == "" || p.TokenID == "" {
		return errors.New("missing fileId or tokenId")
	}
	return nil
}

// isSHA256Hex accepts only the lower-case form HashSecret produces, so that a stored hash can be
// compared byte for byte.
func isSHA256Hex(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for _, c := range []byte(s) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func (p *Barrier) validate() error { return nil }

func (p *CreateAPIKey) validate() error {
	switch {
	case p.Key.ID == "":
		return errors.New("missing api key id")
	case !isSHA256Hex(p.Key.Hash):
		return errors.New("api key hash is not a hex SHA-256")
	}
	return nil
}

func (p *RevokeAPIKey) validate() error {
	if p.ID == "" {
		return errors.New("missing api key id")
	}
	return nil
}

func (p *UpdateSettings) validate() error {
	if len(p.Settings.DisableForceDownloadForMimeTypes) > 1000 {
		return errors.New("too many mimetypes")
	}
	return nil
}

func (p *RotateSigningKey) validate() error {
	if len(p.Key) < 32 {
		return errors.New("signing key must be at least 32 bytes")
	}
	return nil
}

func (p *Expire) validate() error {
	if len(p.FileIDs)+len(p.TokenIDs) > 10000 {
		return errors.New("too many ids in one expire command")
	}
	return nil
}

func (p *MoveShard) validate() error {
	switch {
	case p.FileID == "" || p.To == "":
		return errors.New("moveShard needs fileId and to")
	case p.Segment < 0 || p.Index < 0:
		return errors.New("negative segment or index")
	case p.From == p.To:
		return errors.New("from and to are the same node")
	}
	return nil
}

func (p *RemoveNode) validate() error {
	if p.NodeID == "" {
		return errors.New("missing nodeId")
	}
	return nil
}
