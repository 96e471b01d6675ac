package fsm

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// handBuilt encodes a command as EncodeCommand does but without any of its checks: what a buggy or
// older proposer could have put in a log.
func handBuilt(t *testing.T, typ CommandType, req string, p any) []byte {
	t.Helper()
	payload, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(Command{Version: CommandVersion, Type: typ, RequestID: req, Time: t0, Payload: payload})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestNULFileIDsAreNotProposed: a file id holding a 0x00 byte makes the tokens-by-file keys of two
// files collide (a token outlives its file, and the state's own snapshot no longer restores). Every
// command that names a file id with one is refused where commands enter the log (EncodeCommand and
// CheckProposal, which the leader runs on every entry), while such an entry already in a log still
// decodes and applies as it always did.
func TestNULFileIDsAreNotProposed(t *testing.T) {
	const nul = "A\x00P"
	cases := []struct {
		typ CommandType
		p   any
	}{
		{CmdCreateFile, fileCmd(nul, tok("T1", nul, AccessFull))},
		{CmdCreateToken, CreateToken{Token: tok("T2", nul, AccessRead)}},
		{CmdDeleteFile, DeleteFile{FileID: nul}},
		{CmdDeleteToken, DeleteToken{FileID: nul, TokenID: "T2"}},
		{CmdMoveShard, MoveShard{FileID: nul, Segment: 0, Index: 1, From: "n1", To: "n2"}},
		{CmdExpire, Expire{FileIDs: []string{"ok", nul}}},
	}
	for _, c := range cases {
		if _, err := EncodeCommand(c.typ, "req", t0, c.p); !errors.Is(err, ErrInvalidCommand) || !strings.Contains(err.Error(), "0x00") {
			t.Errorf("EncodeCommand(%s) = %v, want an ErrInvalidCommand naming the 0x00 byte", c.typ, err)
		}
		b := handBuilt(t, c.typ, "req", c.p)
		if _, _, err := DecodeCommand(b); err != nil {
			t.Errorf("DecodeCommand(%s) = %v: an entry already in a log must decode as it always did", c.typ, err)
		}
		if err := CheckProposal(b); !errors.Is(err, ErrInvalidCommand) || !strings.Contains(err.Error(), "0x00") {
			t.Errorf("CheckProposal(%s) = %v, want an ErrInvalidCommand naming the 0x00 byte", c.typ, err)
		}
	}

	// What stays allowed: a token id with a 0x00 byte (the key's first 0x00 still ends the file id),
	// a file name with one, and the text `\u0000`, which JSON carries as `\\u0000`.
	allowed := []struct {
		typ CommandType
		p   any
	}{
		{CmdCreateToken, CreateToken{Token: tok("P\x00Q", "A", AccessRead)}},
		{CmdCreateFile, func() CreateFile { c := fileCmd("B"); c.File.Name = "b\x00.bin"; return c }()},
		{CmdCreateFile, func() CreateFile { c := fileCmd("C"); c.File.Name = `c\u0000.bin`; return c }()},
		{CmdDeleteToken, DeleteToken{FileID: "A", TokenID: "P\x00Q"}},
	}
	for _, c := range allowed {
		b, err := EncodeCommand(c.typ, "req", t0, c.p)
		if err != nil {
			t.Errorf("EncodeCommand(%s, %+v) = %v", c.typ, c.p, err)
			continue
		}
		if err := CheckProposal(b); err != nil {
			t.Errorf("CheckProposal(%s, %+v) = %v", c.typ, c.p, err)
		}
	}
	if err := CheckProposal([]byte(`{"v":1,"type":"createFile","payload":"\u0000`)); err != nil {
		t.Errorf("CheckProposal of an entry that does not decode = %v; every replica refuses that alike", err)
	}

	// An entry with such an id that some log already holds applies as it always did.
	f := newTestFSM(t)
	f.Apply(cmdLog(1, mustEncode(t, CmdInitCluster, "init", t0, initPayload())))
	if r := f.Apply(cmdLog(2, handBuilt(t, CmdCreateFile, "old", fileCmd(nul, tok("T1", nul, AccessFull))))).(*Result); r.Err != nil {
		t.Fatalf("applying an old entry with a 0x00 in its file id: %v", r.Err)
	}
	if _, ok := f.File(nul); !ok {
		t.Fatal("the old entry's file is missing")
	}
}
