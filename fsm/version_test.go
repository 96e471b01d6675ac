package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestCommandTableIsConsistent: every command type names the protocol that introduced it, within
// what this build speaks, and encodes to a payload of its own.
func TestCommandTableIsConsistent(t *testing.T) {
	if MinProtocolVersion < 1 || MinProtocolVersion > ProtocolVersion {
		t.Fatalf("protocol range [%d, %d]", MinProtocolVersion, ProtocolVersion)
	}
	if commandVersions[CommandVersion] == nil || snapshotReaders[SnapshotVersion] == nil {
		t.Fatal("the newest command or snapshot version has no reader")
	}
	for v := 1; v <= CommandVersion; v++ {
		if commandVersions[v] == nil {
			t.Errorf("command version %d was written once and has no decoder", v)
		}
	}
	for v := 1; v <= SnapshotVersion; v++ {
		if snapshotReaders[v] == nil {
			t.Errorf("snapshot version %d was written once and has no reader", v)
		}
	}
	seen := map[string]CommandType{}
	for _, typ := range CommandTypes() {
		since, ok := CommandProtocol(typ)
		if !ok || since < 1 || since > ProtocolVersion {
			t.Errorf("%s: since protocol %d", typ, since)
		}
		p := fmt.Sprintf("%T", commands[typ].newPayload())
		if other, dup := seen[p]; dup {
			t.Errorf("%s and %s share payload type %s", typ, other, p)
		}
		seen[p] = typ
		newest, _ := CommandFieldsProtocol(typ)
		if newest < since || newest > ProtocolVersion {
			t.Errorf("%s: fields protocol %d outside [%d, %d]", typ, newest, since, ProtocolVersion)
		}
		if _, needs := commands[typ].newPayload().(protocolNeeder); needs != (newest > since) {
			t.Errorf("%s: fields protocol %d above since %d, but neededProtocol implemented = %v", typ, newest, since, needs)
		}
	}
	if _, ok := CommandProtocol("noSuchCommand"); ok {
		t.Error("an unknown type has a protocol")
	}
}

// PeekCommandTime reads the proposer's time without the payload for the canonical form, and by the
// full decoder (the same answer) for any other form DecodeCommand accepts.
func TestPeekCommandTime(t *testing.T) {
	enc := mustEncode(t, CmdDeleteToken, "req", t0, DeleteToken{FileID: "FIL1", TokenID: "TOK1"})
	spaced := `{ "v": 1, "type": "deleteToken", "requestId": "req", "time": "` + t0.Format(time.RFC3339Nano) + `", "payload": {"fileId":"FIL1","tokenId":"TOK1"} }`
	for name, in := range map[string]string{"as encoded": string(enc), "spaces": spaced} {
		got, err := PeekCommandTime([]byte(in))
		if err != nil || !got.Equal(t0) {
			t.Errorf("%s: PeekCommandTime = %s, %v; want %s", name, got, err, t0)
		}
	}
	for _, in := range []string{`garbage`, ``, `{"v":1,"type":"deleteToken","requestId":"req","time":"yesterday","payload":{}}`} {
		if _, err := PeekCommandTime([]byte(in)); !errors.Is(err, ErrInvalidCommand) {
			t.Errorf("PeekCommandTime(%q) = %v; want ErrInvalidCommand", in, err)
		}
	}
}

func TestPeekCommandType(t *testing.T) {
	enc := mustEncode(t, CmdDeleteToken, "req", t0, DeleteToken{FileID: "FIL1", TokenID: "TOK1"})
	tests := []struct {
		name string
		in   string
		want CommandType
	}{
		{"as encoded", string(enc), CmdDeleteToken},
		{"other field order", `{"type":"barrier","v":1,"requestId":"r"}`, CmdBarrier},
		{"spaces", `{ "v": 1, "type": "expire" }`, CmdExpire},
		{"escaped type", `{"v":1,"type":"exp\u0069re"}`, CmdExpire},
		{"no type", `{"v":1}`, ""},
		{"not json", `garbage`, ""},
		{"empty", ``, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := PeekCommandType([]byte(tt.in))
			if tt.want == "" {
				if !errors.Is(err, ErrInvalidCommand) {
					t.Fatalf("PeekCommandType = %q, %v; want ErrInvalidCommand", got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("PeekCommandType = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// TestDecodeRefusesUnknownVersions: a version newer than this build's, or one never written,
// is refused rather than guessed at.
func TestDecodeRefusesUnknownVersions(t *testing.T) {
	for _, v := range []int{0, -1, CommandVersion + 1} {
		b := fmt.Appendf(nil, `{"v":%d,"type":"barrier","requestId":"r","time":"2026-01-01T00:00:00Z","payload":{"node":"n"}}`, v)
		if _, _, err := DecodeCommand(b); !errors.Is(err, ErrInvalidCommand) {
			t.Errorf("version %d: %v, want ErrInvalidCommand", v, err)
		}
	}
}

// TestCommandNeedsNamesTheNewestFieldSet: a command needs its type's protocol, or a newer one
// when it sets a field introduced later, never more than the type's fields protocol; one that
// does not decode says so.
func TestCommandNeedsNamesTheNewestFieldSet(t *testing.T) {
	at := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	tok := Token{ID: "TOKneeds000000000001", Secret: "s", FileID: "file-1", Access: AccessRead, CreatorID: "c", CreatedAt: at}
	cases := []struct {
		name string
		typ  CommandType
		p    any
		want int
	}{
		{"token without authority", CmdCreateToken, CreateToken{Token: tok}, 1},
		{"token by api key", CmdCreateToken, CreateToken{Token: tok, Authority: &TokenAuthority{APIKeyID: tok.CreatorID}}, ProtocolTokenAuthority},
		{"token by token", CmdCreateToken, CreateToken{Token: tok, Authority: &TokenAuthority{TokenID: "TOKneeds000000000002"}}, ProtocolTokenAuthority},
		{"delete token", CmdDeleteToken, DeleteToken{FileID: "file-1", TokenID: tok.ID}, 1},
		{"remove node", CmdRemoveNode, RemoveNode{NodeID: "n9"}, commands[CmdRemoveNode].since},
	}
	for _, tc := range cases {
		b, err := EncodeCommand(tc.typ, "req-"+tc.name, at, tc.p)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got, err := CommandNeeds(b)
		if err != nil || got != tc.want {
			t.Errorf("%s: CommandNeeds = %d, %v; want %d", tc.name, got, err, tc.want)
		}
		if newest, _ := CommandFieldsProtocol(tc.typ); got > newest {
			t.Errorf("%s: needs %d above the type's fields protocol %d", tc.name, got, newest)
		}
	}
	valid, err := EncodeCommand(CmdCreateToken, "req-unknown", at, CreateToken{Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	unknown := bytes.Replace(valid, []byte(`"payload":{`), []byte(`"payload":{"fromTheFuture":1,`), 1)
	if bytes.Equal(unknown, valid) {
		t.Fatal("the encoding has no payload object to extend")
	}
	if _, err := CommandNeeds(unknown); !errors.Is(err, ErrInvalidCommand) || !strings.Contains(err.Error(), "fromTheFuture") {
		t.Errorf("CommandNeeds(unknown field) = %v, want ErrInvalidCommand naming the field", err)
	}
}
