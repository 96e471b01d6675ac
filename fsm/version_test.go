package fsm

import (
	"errors"
	"fmt"
	"testing"
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
	}
	if _, ok := CommandProtocol("noSuchCommand"); ok {
		t.Error("an unknown type has a protocol")
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
