package fsm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// Three numbers say what a build reads and writes. fsm/DESIGN.md ("Evolving commands and
// snapshots") says when each one moves.
const (
	// ProtocolVersion is the newest protocol this build speaks. A protocol version names a set of
	// command types, payload fields and formats; nodes announce the range they speak in gossip, and
	// the leader proposes something introduced in protocol P only once every Raft server speaks P.
	ProtocolVersion = 3
	// MinProtocolVersion is the oldest protocol this build still speaks: it decodes every command
	// and snapshot a build of that protocol writes. It only rises when support for old entries is
	// dropped, which the committed fixtures forbid today.
	MinProtocolVersion = 1

	// ProtocolShardFormatV2 is the protocol that introduced shard format v2 (erasure/format.go):
	// writers produce v2 shards only once every Raft server speaks it, because a protocol-1 node
	// (v0.1.0) can neither read v2 shards nor serve shards with a header. It adds no command.
	ProtocolShardFormatV2 = 2

	// ProtocolTokenAuthority is the protocol that introduced CreateToken.Authority: the FSM checks
	// a token creator's API key or full token at apply, so the proposer needs no read index. A
	// protocol-2 replica refuses the field as unknown, so proposers set it only once every Raft
	// server speaks it.
	ProtocolTokenAuthority = 3

	// CommandVersion is the envelope version EncodeCommand writes, always the newest. Its rules
	// (the envelope's fields and the payloads' validation) are frozen: DecodeCommand reads every
	// version in commandVersions with the rules of that version.
	CommandVersion = 1

	// SnapshotVersion is the snapshot stream format Persist writes, always the newest; Restore reads
	// every version in snapshotReaders.
	SnapshotVersion = 1
)

// commandSpec is what the FSM knows of one command type.
type commandSpec struct {
	// since is the protocol version that introduced the type. Replicas of an older protocol refuse
	// it as ErrInvalidCommand, so it may only be proposed once every Raft server speaks since.
	since int
	// fieldsSince is the newest protocol that introduced a field of the type's payload, or zero
	// when every field is as old as the type. A value that sets such a field says which protocol
	// it needs through neededProtocol, and the leader checks that too (CommandNeeds).
	fieldsSince int
	// newPayload returns a pointer to an empty payload of the current version.
	newPayload func() payload
}

// commands lists every command type ever defined. A type is never removed and never renumbered:
// old logs hold it. Add new types with since = the ProtocolVersion that introduces them.
var commands = map[CommandType]commandSpec{
	CmdInitCluster:      {since: 1, newPayload: func() payload { return new(InitCluster) }},
	CmdCreateFile:       {since: 1, newPayload: func() payload { return new(CreateFile) }},
	CmdDeleteFile:       {since: 1, newPayload: func() payload { return new(DeleteFile) }},
	CmdCreateToken:      {since: 1, fieldsSince: ProtocolTokenAuthority, newPayload: func() payload { return new(CreateToken) }},
	CmdDeleteToken:      {since: 1, newPayload: func() payload { return new(DeleteToken) }},
	CmdBarrier:          {since: 1, newPayload: func() payload { return new(Barrier) }},
	CmdCreateAPIKey:     {since: 1, newPayload: func() payload { return new(CreateAPIKey) }},
	CmdRevokeAPIKey:     {since: 1, newPayload: func() payload { return new(RevokeAPIKey) }},
	CmdUpdateSettings:   {since: 1, newPayload: func() payload { return new(UpdateSettings) }},
	CmdRotateSigningKey: {since: 1, newPayload: func() payload { return new(RotateSigningKey) }},
	CmdExpire:           {since: 1, newPayload: func() payload { return new(Expire) }},
	CmdMoveShard:        {since: 1, newPayload: func() payload { return new(MoveShard) }},
	CmdRemoveNode:       {since: 1, newPayload: func() payload { return new(RemoveNode) }},
}

// commandVersions maps every envelope version ever written to its decoder, which returns the
// command's payload in today's types. The newest version decodes strictly into today's types;
// an older one decodes into its frozen types (command_v<N>.go) and converts, so that Apply only
// ever sees today's types while each version keeps the validation rules it was written with.
var commandVersions = map[int]func(cmd Command) (payload, error){
	1: decodeCurrentPayload, // CommandVersion
}

// CommandProtocol returns the protocol version that introduced typ, and false for a type this
// build does not know.
func CommandProtocol(typ CommandType) (int, bool) {
	spec, ok := commands[typ]
	return spec.since, ok
}

// CommandFieldsProtocol returns the newest protocol that introduced typ or one of its payload's
// fields, and false for a type this build does not know. A leader whose cluster speaks that
// protocol admits every command of the type without decoding it; otherwise it asks CommandNeeds.
func CommandFieldsProtocol(typ CommandType) (int, bool) {
	spec, ok := commands[typ]
	return max(spec.since, spec.fieldsSince), ok
}

// protocolNeeder is implemented by a payload with fields newer than its type.
type protocolNeeder interface {
	// neededProtocol returns the newest protocol of a field this value sets, or 1 when it sets
	// none of them.
	neededProtocol() int
}

// CommandNeeds decodes an encoded command and returns the protocol every replica must speak to
// apply it as this build does: its type's, or newer when it sets a field introduced later (a
// replica of an older protocol refuses the unknown field, and would diverge from the others). A
// command that does not decode returns an error wrapping ErrInvalidCommand; every replica refuses
// it alike.
func CommandNeeds(b []byte) (int, error) {
	cmd, p, err := DecodeCommand(b)
	if err != nil {
		return 0, err
	}
	need := commands[cmd.Type].since
	if n, ok := p.(protocolNeeder); ok {
		need = max(need, n.neededProtocol())
	}
	return need, nil
}

// CommandTypes lists every command type this build knows.
func CommandTypes() []CommandType {
	types := make([]CommandType, 0, len(commands))
	for typ := range commands {
		types = append(types, typ)
	}
	return types
}

// PeekCommandType returns the type of an encoded command without decoding its payload, so that a
// leader can check it against the cluster's protocol before it proposes. EncodeCommand writes the
// version and type first, which is read here without a full parse; anything else is parsed.
func PeekCommandType(b []byte) (CommandType, error) {
	if rest, ok := bytes.CutPrefix(b, []byte(`{"v":`)); ok {
		if i := bytes.IndexByte(rest, ','); i > 0 {
			if typ, ok := bytes.CutPrefix(rest[i+1:], []byte(`"type":"`)); ok {
				if j := bytes.IndexByte(typ, '"'); j > 0 && bytes.IndexByte(typ[:j], '\\') < 0 {
					return CommandType(typ[:j]), nil
				}
			}
		}
	}
	var head struct {
		Type CommandType `json:"type"`
	}
	if err := json.Unmarshal(b, &head); err != nil || head.Type == "" {
		return "", fmt.Errorf("%w: no command type", ErrInvalidCommand)
	}
	return head.Type, nil
}

// PeekCommandTime returns a command's time (the proposer's clock) without decoding its payload
// when the envelope is in its canonical form, and by a full decode otherwise.
func PeekCommandTime(b []byte) (time.Time, error) {
	r := canonicalReader{b: b}
	r.lit(`{"v":`)
	r.int()
	r.lit(`,"type":`)
	r.commandType()
	r.lit(`,"requestId":`)
	r.str()
	r.lit(`,"time":`)
	if t := r.time(); !r.bad {
		return t, nil
	}
	cmd, _, err := DecodeCommand(b)
	return cmd.Time, err
}

func decodeCurrentPayload(cmd Command) (payload, error) {
	spec, ok := commands[cmd.Type]
	if !ok {
		return nil, fmt.Errorf("%w: unknown type %q", ErrInvalidCommand, cmd.Type)
	}
	p := spec.newPayload()
	if err := decodeStrict(cmd.Payload, p); err != nil {
		return nil, fmt.Errorf("%w: %s payload: %v", ErrInvalidCommand, cmd.Type, err)
	}
	if err := p.validate(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalidCommand, cmd.Type, err)
	}
	return p, nil
}
