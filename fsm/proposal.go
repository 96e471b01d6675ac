package fsm

import (
	"bytes"
	"fmt"
	"strings"
)

// The proposal rules are the rules a new command must meet beyond its type's validate: rules
// found after commands of the type were first written. Apply cannot take such a rule on, because
// refusing an entry that some log already holds would change that entry's result between builds
// (a rolling upgrade would diverge, DESIGN.md "Evolving commands and snapshots"). So the rules are
// checked only where a command enters the log: EncodeCommand, for everything this build proposes,
// and the leader's admit gate in cluster (CheckProposal), for everything any proposer sends.
// Entries already in a log apply exactly as they always did.

// CheckProposal decodes an encoded command and checks the proposal rules on it. A command that
// does not decode is not its business: every replica refuses that alike, so it returns nil.
func CheckProposal(b []byte) error {
	if !bytes.Contains(b, escapedNUL) {
		// Only a \u0000 escape puts a 0x00 byte into a decoded string (encoding/json refuses a raw
		// control byte in a string), and that escape is the only thing today's rule looks for. A
		// `\\u0000` (an escaped backslash) also matches, and is sorted out by the decode.
		return nil
	}
	cmd, p, err := DecodeCommand(b)
	if err != nil {
		return nil
	}
	if err := checkProposal(p); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalidCommand, cmd.Type, err)
	}
	return nil
}

var escapedNUL = []byte(`\u0000`)

// checkProposal holds the proposal rules. Today there is one: no file id holds a 0x00 byte. The
// tokens-by-file index keys its rows file id ‖ 0x00 ‖ token id (store.go), so with such an id two
// files' rows can share one key: deleting the one file drops the other's token row, the token then
// outlives its file, and the state's own snapshot no longer restores ("token … of unknown file").
// Token ids may hold it: the first 0x00 of a key still ends its file id.
func checkProposal(p any) error {
	for _, id := range fileIDsOf(p) {
		if strings.IndexByte(id, 0) >= 0 {
			return fmt.Errorf("file id %q holds a 0x00 byte", id)
		}
	}
	return nil
}

// fileIDsOf lists every file id a payload names, its tokens' included.
func fileIDsOf(p any) []string {
	switch p := p.(type) {
	case *CreateFile:
		ids := []string{p.File.ID}
		for _, t := range p.Tokens {
			ids = append(ids, t.FileID)
		}
		return ids
	case *CreateToken:
		return []string{p.Token.FileID}
	case *DeleteFile:
		return []string{p.FileID}
	case *DeleteToken:
		return []string{p.FileID}
	case *MoveShard:
		return []string{p.FileID}
	case *Expire:
		return p.FileIDs
	}
	return nil
}
