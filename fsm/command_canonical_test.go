package fsm

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// matchStrict decodes b with DecodeCommand, with the fast path alone and with the strict decoder,
// and fails unless all agree: the same acceptance, the same error, deep-equal values. It reports
// whether the fast path took b.
func matchStrict(t testing.TB, b []byte) (fast bool) {
	t.Helper()
	wantCmd, wantP, wantErr := decodeCommandStrict(b)
	fastCmd, fastP, fast := decodeCanonical(b)
	if fast {
		if wantErr != nil {
			t.Fatalf("fast path accepts what the strict decoder refuses (%v):\n%q", wantErr, b)
		}
		if !reflect.DeepEqual(fastCmd, wantCmd) || !reflect.DeepEqual(fastP, wantP) {
			t.Fatalf("fast path and strict decoder differ on\n%q\nfast:   %#v %#v\nstrict: %#v %#v", b, fastCmd, fastP, wantCmd, wantP)
		}
	}
	cmd, p, err := DecodeCommand(b)
	switch {
	case (err == nil) != (wantErr == nil):
		t.Fatalf("DecodeCommand error %v, strict decoder error %v, on\n%q", err, wantErr, b)
	case err != nil && (!errors.Is(err, ErrInvalidCommand) || !errors.Is(wantErr, ErrInvalidCommand) || err.Error() != wantErr.Error()):
		t.Fatalf("DecodeCommand error %q, strict decoder error %q, on\n%q", err, wantErr, b)
	case err == nil && (!reflect.DeepEqual(cmd, wantCmd) || !reflect.DeepEqual(p, wantP)):
		t.Fatalf("DecodeCommand and strict decoder differ on\n%q\nnew:    %#v %#v\nstrict: %#v %#v", b, cmd, p, wantCmd, wantP)
	}
	return fast
}

// canonicalSamples are EncodeCommand's output for every command type, with the fast-path types
// both with every optional field set and with none, so that a renamed or added field shows.
func canonicalSamples(t testing.TB) map[string][]byte {
	rich := fileCmd("FIL1", tok("TOK1", "FIL1", AccessFull), expiring(tok("TOK2", "FIL1", AccessRead), t0.Add(time.Hour)))
	rich.File.Tags, rich.File.Title, rich.File.Description = []string{"a", "b"}, "Title", "Description é ü 中"
	rich.File.ExpiresAt = t0.Add(48 * time.Hour)
	rich.Tokens[1].CreatedBy = "n2"
	rich.File.Layout.Segments = append(rich.File.Layout.Segments, Segment{Offset: 100, Size: 0, Nodes: []string{"n2", "", "n3"}})
	rich.File.Size = 100
	bare := CreateFile{File: File{ID: "FIL0", Layout: Layout{Geometry: testGeometry, BlockSize: 1}}, Tokens: []Token{tok("TOK0", "FIL0", AccessFull)}}
	byKey := tok("TOK3", "FIL1", AccessRead)
	byKey.CreatorID = "key1"
	zone := time.FixedZone("", 2*3600)
	return map[string][]byte{
		"initCluster":             mustEncode(t, CmdInitCluster, "r", t0, initPayload()),
		"createFile rich":         mustEncode(t, CmdCreateFile, "r", t0, rich),
		"createFile bare":         mustEncode(t, CmdCreateFile, "r", t0, bare),
		"createFile offset time":  mustEncode(t, CmdCreateFile, "r", t0.In(zone), fileCmd("FIL2")),
		"createToken":             mustEncode(t, CmdCreateToken, "r", t0, CreateToken{Token: tok("TOK3", "FIL1", AccessFull)}),
		"createToken expiring":    mustEncode(t, CmdCreateToken, "r", t0, CreateToken{Token: expiring(tok("TOK3", "FIL1", AccessFull), t0.Add(time.Minute))}),
		"createToken by key":      mustEncode(t, CmdCreateToken, "r", t0, CreateToken{Token: byKey, Authority: &TokenAuthority{APIKeyID: "key1"}}),
		"createToken by token":    mustEncode(t, CmdCreateToken, "r", t0, CreateToken{Token: tok("TOK3", "FIL1", AccessRead), Authority: &TokenAuthority{TokenID: "TOK1"}}),
		"deleteFile":              mustEncode(t, CmdDeleteFile, "r", t0, DeleteFile{FileID: "FIL1"}),
		"deleteToken":             mustEncode(t, CmdDeleteToken, "r", t0, DeleteToken{FileID: "FIL1", TokenID: "TOK1"}),
		"barrier":                 mustEncode(t, CmdBarrier, "r", t0, Barrier{Node: "n1"}),
		"barrier empty node":      mustEncode(t, CmdBarrier, "r", t0, Barrier{}),
		"expire both":             mustEncode(t, CmdExpire, "r", t0, Expire{FileIDs: []string{"FIL1"}, TokenIDs: []string{"TOK1", "TOK2"}}),
		"expire files":            mustEncode(t, CmdExpire, "r", t0, Expire{FileIDs: []string{"FIL1"}}),
		"expire tokens":           mustEncode(t, CmdExpire, "r", t0, Expire{TokenIDs: []string{"TOK1"}}),
		"expire nothing":          mustEncode(t, CmdExpire, "r", t0, Expire{}),
		"createApiKey":            mustEncode(t, CmdCreateAPIKey, "r", t0, CreateAPIKey{Key: APIKey{ID: "k", Name: "k", Hash: HashSecret("k"), Permissions: []string{PermViewFiles}, CreatedAt: t0}}),
		"revokeApiKey":            mustEncode(t, CmdRevokeAPIKey, "r", t0, RevokeAPIKey{ID: "k"}),
		"updateSettings":          mustEncode(t, CmdUpdateSettings, "r", t0, UpdateSettings{Settings: ServiceSettings{DisableForceDownloadForMimeTypes: []string{"image/*"}, UpdatedAt: t0}}),
		"rotateSigningKey":        mustEncode(t, CmdRotateSigningKey, "r", t0, RotateSigningKey{Key: bytes.Repeat([]byte{7}, 32)}),
		"moveShard":               mustEncode(t, CmdMoveShard, "r", t0, MoveShard{FileID: "FIL1", Segment: 1, Index: 2, From: "n1", To: "n4"}),
		"removeNode":              mustEncode(t, CmdRemoveNode, "r", t0, RemoveNode{NodeID: "n9"}),
		"createFile html escaped": mustEncode(t, CmdCreateFile, "r&<>", t0, fileCmd("FIL<1>")),
	}
}

// fastPathTypes are the command types decodeCanonical reads; every other type always takes the
// strict decoder.
var fastPathTypes = map[CommandType]bool{
	CmdCreateFile: true, CmdCreateToken: true, CmdDeleteFile: true, CmdDeleteToken: true, CmdBarrier: true, CmdExpire: true,
}

// TestCanonicalFastPathTakesEncoderOutput: EncodeCommand's output of the fast-path types takes the
// fast path and decodes to what the strict decoder gives (so a renamed, added or reordered field
// fails here rather than silently slowing every apply); the other types and strings the encoder
// escapes take the strict path.
func TestCanonicalFastPathTakesEncoderOutput(t *testing.T) {
	for name, b := range canonicalSamples(t) {
		t.Run(name, func(t *testing.T) {
			typ, err := PeekCommandType(b)
			if err != nil {
				t.Fatal(err)
			}
			want := fastPathTypes[typ] && !bytes.Contains(b, []byte(`\u`))
			if fast := matchStrict(t, b); fast != want {
				t.Errorf("fast path taken = %v, want %v for\n%s", fast, want, b)
			}
		})
	}
}

// TestCanonicalVersionIsCurrent: the fast path decodes into today's types with today's rules, so
// it may only read the version whose decoder is decodeCurrentPayload, which is CommandVersion.
func TestCanonicalVersionIsCurrent(t *testing.T) {
	if canonicalVersion != CommandVersion {
		t.Fatalf("canonicalVersion %d, CommandVersion %d: the fast path reads a version that is not today's", canonicalVersion, CommandVersion)
	}
	got := reflect.ValueOf(commandVersions[canonicalVersion]).Pointer()
	if got != reflect.ValueOf(decodeCurrentPayload).Pointer() {
		t.Fatal("commandVersions[canonicalVersion] is not decodeCurrentPayload")
	}
}

// TestDecodeCommandTrickyInputs: inputs near the canonical form on which a hand-written reader and
// encoding/json could disagree. Each must give the strict decoder's answer; wantOK is that answer
// (to show the case tests what it says), fast whether the fast path may take it.
func TestDecodeCommandTrickyInputs(t *testing.T) {
	base := string(mustEncode(t, CmdDeleteToken, "req-1", t0, DeleteToken{FileID: "FIL1", TokenID: "TOK1"}))
	file := string(canonicalSamples(t)["createFile rich"])
	grant := string(canonicalSamples(t)["createToken by key"])
	bare := string(canonicalSamples(t)["createFile bare"])
	sub := func(s, old, new string) string {
		if !strings.Contains(s, old) {
			t.Fatalf("%q not in %s", old, s)
		}
		return strings.Replace(s, old, new, 1)
	}
	tests := []struct {
		name   string
		in     string
		wantOK bool
		fast   bool
	}{
		{"canonical", base, true, true},
		{"duplicate envelope key", sub(base, `"requestId":"req-1"`, `"requestId":"req-1","requestId":"req-2"`), true, false},
		{"duplicate payload key", sub(base, `"tokenId":"TOK1"`, `"tokenId":"TOK1","tokenId":"TOK2"`), true, false},
		{"duplicate payload object", sub(base, `}}`, `},"payload":{"fileId":"FIL9","tokenId":"TOK9"}}`), true, false},
		{"unknown envelope field", sub(base, `"v":1`, `"v":1,"x":0`), false, false},
		{"unknown payload field", sub(base, `"tokenId"`, `"junk":1,"tokenId"`), false, false},
		{"unknown nested field", sub(file, `"offset":0`, `"offset":0,"crc":1`), false, false},
		{"case-variant envelope key", sub(base, `"requestId"`, `"REQUESTID"`), true, false},
		{"case-variant version key", sub(base, `"v":1`, `"V":1`), true, false},
		{"case-variant payload key", sub(base, `"fileId"`, `"FileId"`), true, false},
		{"case-variant nested key", sub(file, `"blockSize"`, `"BlockSize"`), true, false},
		{"kelvin sign key", sub(base, `"tokenId"`, "\"to\u212aenId\""), true, false},
		{"key order", sub(base, `"fileId":"FIL1","tokenId":"TOK1"`, `"tokenId":"TOK1","fileId":"FIL1"`), true, false},
		{"trailing data", base + `x`, false, false},
		{"trailing value", base + `{}`, false, false},
		{"trailing space", base + " \n", true, false},
		{"leading space", " " + base, true, false},
		{"inner space", sub(base, `"v":1`, `"v": 1`), true, false},
		{"truncated", base[:len(base)-1], false, false},
		{"null payload", sub(base, `{"fileId":"FIL1","tokenId":"TOK1"}`, `null`), false, false},
		{"null barrier payload", sub(string(canonicalSamples(t)["barrier"]), `{"node":"n1"}`, `null`), true, false},
		{"null string", sub(base, `"TOK1"`, `null`), false, false},
		{"null time", sub(base, `"time":"2026-01-02T03:04:05Z"`, `"time":null`), false, false},
		{"null tokens", sub(file, `"tokens":[`, `"tokens":null,"x":[`), false, false},
		{"null authority", sub(grant, `"authority":{"apiKeyId":"key1"}`, `"authority":null`), true, false},
		{"null node in segment", sub(file, `"nodes":["n1"`, `"nodes":[null`), true, false},
		{"null segments of a non-empty file", sub(file, `"segments":[{"offset":0,"size":100,"nodes":["n1","n2","n3"]},{"offset":100,"size":0,"nodes":["n2","","n3"]}]`, `"segments":null`), false, false},
		{"null segments", bare, true, true},
		{"empty segments", sub(bare, `"segments":null`, `"segments":[]`), true, true},
		{"empty tags", sub(file, `"tags":["a","b"]`, `"tags":[]`), true, true},
		{"null tags", sub(file, `"tags":["a","b"]`, `"tags":null`), true, true},
		{"version as float", sub(base, `"v":1`, `"v":1.0`), false, false},
		{"version as exponent", sub(base, `"v":1`, `"v":1e0`), false, false},
		{"version with leading zero", sub(base, `"v":1`, `"v":01`), false, false},
		{"version as string", sub(base, `"v":1`, `"v":"1"`), false, false},
		{"negative zero size", sub(file, `"offset":100`, `"offset":-0`), false, false},
		{"size not covered", sub(file, `"size":100,"tags"`, `"size":101,"tags"`), false, false},
		{"eighteen digits", sub(file, `"blockSize":1048576`, `"blockSize":999999999999999999`), true, true},
		{"nineteen digits", sub(file, `"blockSize":1048576`, `"blockSize":1000000000000000000`), true, false},
		{"int64 max", sub(file, `"blockSize":1048576`, `"blockSize":9223372036854775807`), true, false},
		{"int64 overflow", sub(file, `"size":100,"tags"`, `"size":99999999999999999999,"tags"`), false, false},
		{"huge float size", sub(file, `"size":100,"tags"`, `"size":1e300,"tags"`), false, false},
		{"huge geometry", sub(file, `"data":2`, `"data":9223372036854775808`), false, false},
		{"escaped string", sub(base, `"FIL1"`, `"\u0046IL1"`), true, false},
		{"escaped quote", sub(base, `"FIL1"`, `"FIL\"1"`), true, false},
		{"escaped time", sub(base, `"2026-01-02T03:04:05Z"`, `"2026-01-02T03:04:05\u005a"`), false, false},
		{"time with offset", sub(base, `"2026-01-02T03:04:05Z"`, `"2026-01-02T05:04:05+02:00"`), true, true},
		{"time lower-case z", sub(base, `"2026-01-02T03:04:05Z"`, `"2026-01-02T03:04:05z"`), false, false},
		{"time with fraction", sub(base, `"2026-01-02T03:04:05Z"`, `"2026-01-02T03:04:05.123456789Z"`), true, true},
		{"zero time", sub(base, `"2026-01-02T03:04:05Z"`, `"0001-01-01T00:00:00Z"`), false, false},
		{"raw non-ASCII", sub(base, `"FIL1"`, `"FIL€ ü 中"`), true, true},
		{"raw line separator", sub(base, `"FIL1"`, "\"FIL\u2028\""), true, true},
		{"invalid UTF-8", sub(base, `"FIL1"`, "\"FIL\xff\""), true, false},
		{"surrogate in UTF-8", sub(base, `"FIL1"`, "\"FIL\xed\xa0\x80\""), true, false},
		{"control character", sub(base, `"FIL1"`, "\"FIL\x01\""), false, false},
		{"DEL character", sub(base, `"FIL1"`, "\"FIL\x7f\""), true, true},
		{"empty request id", sub(base, `"req-1"`, `""`), false, false},
		{"unknown version", sub(base, `"v":1`, `"v":2`), false, false},
		{"unknown type", sub(base, `"deleteToken"`, `"deleteEverything"`), false, false},
		{"empty authority", sub(grant, `{"apiKeyId":"key1"}`, `{}`), false, false},
		{"both authorities", sub(grant, `{"apiKeyId":"key1"}`, `{"apiKeyId":"key1","tokenId":"TOK1"}`), false, false},
		{"access upper-case", sub(file, `"access":"full"`, `"access":"FULL"`), false, false},
		{"empty tokens", sub(file, `"tokens":[`, `"tokens":[],"x":[`), false, false},
		{"trailing comma", sub(base, `"TOK1"}`, `"TOK1",}`), false, false},
		{"payload array", sub(base, `{"fileId":"FIL1","tokenId":"TOK1"}`, `[]`), false, false},
		{"empty", "", false, false},
		{"not an object", `[]`, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := decodeCommandStrict([]byte(tt.in))
			if (err == nil) != tt.wantOK {
				t.Fatalf("strict decoder error %v, want accepted = %v, for\n%s", err, tt.wantOK, tt.in)
			}
			if fast := matchStrict(t, []byte(tt.in)); fast != tt.fast {
				t.Errorf("fast path taken = %v, want %v", fast, tt.fast)
			}
		})
	}
}

// fixtureCommands are the command entries of every committed Raft log fixture and every line of
// every committed snapshot fixture (not commands: each must be refused alike).
func fixtureCommands(tb testing.TB) [][]byte {
	var out [][]byte
	dirs, err := filepath.Glob("testdata/v*")
	if err != nil || len(dirs) == 0 {
		tb.Fatalf("no fixtures: %v", err)
	}
	for _, dir := range dirs {
		store := openFixtureStore(tb, dir)
		last, err := store.LastIndex()
		if err != nil {
			tb.Fatal(err)
		}
		for i := uint64(1); i <= last; i++ {
			var l raft.Log
			if err := store.GetLog(i, &l); err != nil {
				tb.Fatalf("%s log %d: %v", dir, i, err)
			}
			if l.Type == raft.LogCommand {
				out = append(out, l.Data)
			}
		}
		snap, err := os.Open(filepath.Join(dir, "snapshot.ndjson"))
		if err != nil {
			tb.Fatal(err)
		}
		sc := bufio.NewScanner(snap)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			out = append(out, bytes.Clone(sc.Bytes()))
		}
		if err := errors.Join(sc.Err(), snap.Close()); err != nil {
			tb.Fatal(err)
		}
	}
	return out
}

// TestFixtureCommandsMatchStrict: every committed fixture entry decodes alike on both paths, and
// the fixture logs' entries of fast-path types take the fast path.
func TestFixtureCommandsMatchStrict(t *testing.T) {
	fast := 0
	for _, b := range fixtureCommands(t) {
		if matchStrict(t, b) {
			fast++
		}
	}
	if fast < 20 {
		t.Errorf("only %d fixture entries took the fast path", fast)
	}
}

// FuzzDecodeCommandMatchesStrict: on any input, DecodeCommand and its fast path agree with the
// strict decoder (the same acceptance, the same error, deep-equal values). A replica that accepted
// what another refuses would diverge from it for good.
func FuzzDecodeCommandMatchesStrict(f *testing.F) {
	for _, b := range fixtureCommands(f) {
		f.Add(b)
	}
	for _, e := range fixtureLog(f) {
		f.Add(e.raw)
	}
	for _, b := range canonicalSamples(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		matchStrict(t, b)
	})
}

// BenchmarkDecodeCommand compares DecodeCommand (the fast path) with the strict decoder on a
// createFile entry of the shape an upload proposes (one segment, one full token).
//
//	go test -run '^$' -bench DecodeCommand -benchmem ./fsm/
func BenchmarkDecodeCommand(b *testing.B) {
	data := mustEncode(b, CmdCreateFile, "REQ0000000000000001", t0, fileCmd("FIL00000000000000001"))
	for _, c := range []struct {
		name   string
		decode func([]byte) (Command, any, error)
	}{{"DecodeCommand", DecodeCommand}, {"strict", decodeCommandStrict}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, _, err := c.decode(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
