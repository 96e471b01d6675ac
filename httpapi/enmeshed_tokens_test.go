package httpapi

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/boombuler/barcode/qr"

	"github.com/cairn-dev/cairn/core"
	"github.com/cairn-dev/cairn/fsm"
)

func TestEnmeshedCreateToken(t *testing.T) {
	e := newEnmeshedEnv(t)
	fileExpiry := time.Date(2100, 6, 1, 0, 0, 0, 0, time.UTC)
	f, _ := e.upload(t, "alice", core.FileAttrs{Name: "a.txt", ExpiresAt: fileExpiry}, "hello")
	forever, _ := e.upload(t, "alice", core.FileAttrs{Name: "b.txt"}, "hello")
	bobs, _ := e.upload(t, "bob", core.FileAttrs{Name: "b.txt"}, "bob")
	path := func(id string) string { return "/api/v2/Files/" + id + "/Token" }
	for _, tc := range []struct {
		name       string
		id, body   string
		ct         string
		ephemeral  bool
		expiresAt  string
		persistent bool
	}{
		{name: "empty body", id: f.ID, ephemeral: true, expiresAt: "2100-06-01T00:00:00.000Z"},
		{name: "empty body of another type", id: f.ID, ct: "text/plain", ephemeral: true, expiresAt: "2100-06-01T00:00:00.000Z"},
		{name: "whitespace body", id: f.ID, body: " \n", ephemeral: true, expiresAt: "2100-06-01T00:00:00.000Z"},
		{name: "empty object", id: forever.ID, body: "{}", ephemeral: true, expiresAt: neverExpires},
		{name: "persisted", id: f.ID, body: `{"ephemeral":false}`, expiresAt: "2100-06-01T00:00:00.000Z", persistent: true},
		{name: "explicit ephemeral", id: f.ID, body: `{"ephemeral":true}`, ephemeral: true, expiresAt: "2100-06-01T00:00:00.000Z"},
		{name: "nulls are absent", id: f.ID, body: `{"ephemeral":null,"expiresAt":null}`, ephemeral: true, expiresAt: "2100-06-01T00:00:00.000Z"},
		{name: "year only", id: f.ID, body: `{"expiresAt":"2099"}`, ephemeral: true, expiresAt: "2099-01-01T00:00:00.000Z"},
		{name: "date only", id: f.ID, body: `{"expiresAt":"2099-05-06"}`, ephemeral: true, expiresAt: "2099-05-06T00:00:00.000Z"},
		{name: "offset", id: f.ID, body: `{"expiresAt":"2099-05-06T01:00:00.5+02:00","ephemeral":false}`,
			expiresAt: "2099-05-05T23:00:00.500Z", persistent: true},
		{name: "unknown fields ignored", id: f.ID, body: `{"foo":1}`, ephemeral: true, expiresAt: "2100-06-01T00:00:00.000Z"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			header := map[string]string{}
			if tc.ct != "" {
				header["Content-Type"] = tc.ct
			}
			r := e.do(t, http.MethodPost, path(tc.id), strings.NewReader(tc.body), header)
			m := resultObject(t, r, http.StatusCreated, tokenDTOKeys...)
			minted := e.svc.lastMinted(t)
			if m["id"] != minted.ID || !validID(minted.ID, "TOK") || m["truncatedReference"] != minted.Secret ||
				m["isEphemeral"] != tc.ephemeral || m["isOwn"] != true || m["createdBy"] != "alice" ||
				m["expiresAt"] != tc.expiresAt {
				t.Fatalf("TokenDTO = %v", m)
			}
			if ts, _ := m["createdAt"].(string); !enmeshedTimePattern.MatchString(ts) {
				t.Fatalf("createdAt = %v", m["createdAt"])
			}
			content := m["content"].(map[string]any)
			if len(content) != 2 || content["@type"] != "TokenContentFile" || content["fileId"] != tc.id {
				t.Fatalf("content = %v", content)
			}
			// The token opens its file for reading.
			if info, tok, _, err := e.svc.Details(t.Context(), minted.Secret); err != nil || info.ID != tc.id || tok.Access != core.AccessRead {
				t.Fatalf("the minted token resolves to %v %v, %v", info.ID, tok.Access, err)
			}
			// Only a persisted token can be fetched again, and then it is the same DTO.
			g := e.do(t, http.MethodGet, "/api/v2/Tokens/"+minted.ID, nil, nil)
			if !tc.persistent {
				wantEnmeshedError(t, g, 404, codeRecordNotFound, "Token not found. Make sure the ID exists and the record is not expired.")
				return
			}
			again := resultObject(t, g, http.StatusOK, tokenDTOKeys...)
			if string(mustJSON(t, again)) != string(mustJSON(t, m)) {
				t.Fatalf("GET = %v, want %v", again, m)
			}
		})
	}

	// The contract's failure table.
	for _, tc := range []struct {
		name, id, body string
		status         int
		code, message  string
	}{
		{"unknown file", unknownFileID, "", 404, codeRecordNotFound, "File not found. Make sure the ID exists and the record is not expired."},
		{"someone else's file", bobs.ID, "", 404, codeRecordNotFound, "File not found. Make sure the ID exists and the record is not expired."},
		{"past expiresAt", f.ID, `{"expiresAt":"2000-01-01T00:00:00.000Z"}`, 400, codeInvalidPropertyValue, "'expiresAt' must be in the future"},
		{"past expiresAt on unknown file", unknownFileID, `{"expiresAt":"2000"}`, 400, codeInvalidPropertyValue, "'expiresAt' must be in the future"},
		{"empty expiresAt", f.ID, `{"expiresAt":""}`, 400, codeInvalidPropertyValue, "expiresAt must match ISO8601 datetime format"},
		{"garbage expiresAt", f.ID, `{"expiresAt":"next week"}`, 400, codeInvalidPropertyValue, "expiresAt must match ISO8601 datetime format"},
		{"numeric expiresAt", f.ID, `{"expiresAt":4102444800}`, 400, codeInvalidPropertyValue, "expiresAt must match ISO8601 datetime format"},
		{"string ephemeral", f.ID, `{"ephemeral":"true"}`, 400, codeInvalidPropertyValue, "ephemeral must be boolean"},
		{"numeric ephemeral", f.ID, `{"ephemeral":1}`, 400, codeInvalidPropertyValue, "ephemeral must be boolean"},
		{"malformed id", "FILshort", "", 400, codeInvalidPropertyValue, "fileId must match pattern FIL[A-Za-z0-9]{17}"},
		{"token id as file id", "TOKaaaaaaaaaaaaaaaaa", "{}", 400, codeInvalidPropertyValue, "fileId must match pattern FIL[A-Za-z0-9]{17}"},
		{"malformed JSON", f.ID, "{", 400, codeInvalidJSON, "The given payload is not a valid json object."},
		{"malformed JSON and id", "x", "{", 400, codeInvalidJSON, "The given payload is not a valid json object."},
		{"array", f.ID, "[]", 400, codeInvalidJSON, "The given payload is not a valid json object."},
		{"null", f.ID, "null", 400, codeInvalidJSON, "The given payload is not a valid json object."},
		{"string", f.ID, `"x"`, 400, codeInvalidJSON, "The given payload is not a valid json object."},
		{"password protection", f.ID, `{"passwordProtection":{"password":"x"}}`, 400, codeInvalidPropertyValue, "passwordProtection is not supported"},
		{"too large", f.ID, `{"x":"` + strings.Repeat("a", maxTokenRequestBytes) + `"}`, 400, codeInvalidPropertyValue, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, proposed := e.svc.mintedCount(), e.core.Consensus.Proposals()
			r := e.do(t, http.MethodPost, path(tc.id), strings.NewReader(tc.body), map[string]string{"Content-Type": "application/json"})
			wantEnmeshedError(t, r, tc.status, tc.code, tc.message)
			if e.svc.mintedCount() != before || e.core.Consensus.Proposals() != proposed {
				t.Fatal("a refused request minted a token")
			}
		})
	}
}

func TestEnmeshedCreateTokenPNG(t *testing.T) {
	e := newEnmeshedEnv(t)
	f, _ := e.upload(t, "alice", core.FileAttrs{Name: "a.txt"}, "hello")
	r := e.do(t, http.MethodPost, "/api/v2/Files/"+f.ID+"/Token", strings.NewReader(`{"ephemeral":false}`),
		map[string]string{"Accept": "image/png", "Content-Type": "application/json"})
	if r.status != http.StatusCreated {
		t.Fatalf("status = %d (%s)", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "image/png" {
		t.Fatalf("Content-Type = %q", ct)
	}
	if cd := r.header.Get("Content-Disposition"); cd != "attachment;filename="+f.ID+".png" {
		t.Fatalf("Content-Disposition = %q", cd)
	}
	if !bytes.HasPrefix(r.body, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("not a PNG: % x", r.body[:min(len(r.body), 8)])
	}
	minted := e.svc.lastMinted(t)
	if minted.Kind != core.TokenEphemeral {
		t.Fatal("a QR-code token must be ephemeral")
	}
	img, err := png.Decode(bytes.NewReader(r.body))
	if err != nil {
		t.Fatalf("decode PNG: %v", err)
	}
	// The library cannot decode QR codes, so compare module by module with the code of the reference.
	want, err := qr.Encode(minted.Secret, qr.M, qr.Auto)
	if err != nil {
		t.Fatal(err)
	}
	modules := want.Bounds().Dx()
	side := (modules + 2*qrQuietModules) * qrModulePixels
	if b := img.Bounds(); b.Dx() != side || b.Dy() != side {
		t.Fatalf("image is %v, want %dx%d", b, side, side)
	}
	dark := func(c color.Color) bool { return color.GrayModel.Convert(c).(color.Gray).Y < 128 }
	for y := -qrQuietModules; y < modules+qrQuietModules; y++ {
		for x := -qrQuietModules; x < modules+qrQuietModules; x++ {
			px := (x+qrQuietModules)*qrModulePixels + qrModulePixels/2
			py := (y+qrQuietModules)*qrModulePixels + qrModulePixels/2
			inCode := image.Pt(x, y).In(want.Bounds())
			if got, exp := dark(img.At(px, py)), inCode && dark(want.At(x, y)); got != exp {
				t.Fatalf("module (%d,%d) dark = %v, want %v", x, y, got, exp)
			}
		}
	}
	if _, err := e.svc.TokenByID(t.Context(), e.principals["alice"], minted.ID); err == nil {
		t.Fatal("the QR-code token was persisted")
	}

	wantEnmeshedError(t, e.do(t, http.MethodPost, "/api/v2/Files/"+unknownFileID+"/Token", nil, map[string]string{"Accept": "image/png"}),
		404, codeRecordNotFound, "")
}

func TestEnmeshedGetToken(t *testing.T) {
	e := newEnmeshedEnv(t)
	e.core.Clock.Set(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	f, _ := e.upload(t, "bob", core.FileAttrs{Name: "a.txt"}, "hello")
	bob := e.principals["bob"]
	live, err := e.svc.CreateTokenByID(t.Context(), bob, f.ID, time.Time{}, core.TokenPersisted)
	if err != nil {
		t.Fatal(err)
	}
	expired, err := e.svc.CreateTokenByID(t.Context(), bob, f.ID, e.core.Clock.Now().Add(time.Second), core.TokenPersisted)
	if err != nil {
		t.Fatal(err)
	}
	e.core.Clock.Advance(time.Minute)
	for _, tc := range []struct {
		name, key, id string
		status        int
		isOwn         bool
	}{
		{"creator", keyBob, live.ID, 200, true},
		{"VIEW_FILES", keyAdmin, live.ID, 200, false},
		{"someone else", keyAlice, live.ID, 404, false},
		{"expired", keyBob, expired.ID, 404, false},
		{"unknown", keyBob, "TOKaaaaaaaaaaaaaaaaa", 404, false},
		{"malformed", keyBob, "TOK1", 400, false},
		{"file id", keyBob, f.ID, 400, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(t, http.MethodGet, "/api/v2/Tokens/"+tc.id, nil, map[string]string{"X-API-KEY": tc.key})
			switch tc.status {
			case 400:
				wantEnmeshedError(t, r, 400, codeInvalidPropertyValue, "tokenId must match pattern TOK[A-Za-z0-9]{17}")
			case 404:
				wantEnmeshedError(t, r, 404, codeRecordNotFound, "Token not found. Make sure the ID exists and the record is not expired.")
			default:
				m := resultObject(t, r, 200, tokenDTOKeys...)
				if m["id"] != live.ID || m["isOwn"] != tc.isOwn || m["truncatedReference"] != live.Secret ||
					m["createdAt"] != "2026-01-01T00:00:00.000Z" || m["expiresAt"] != neverExpires || m["isEphemeral"] != false {
					t.Fatalf("TokenDTO = %v", m)
				}
			}
		})
	}
}

// TestEnmeshedCreateTokenServiceErrors: a persisted token fails at its proposal, an ephemeral one (no
// Raft write) at the read index; both answer 503 with Retry-After and mint nothing.
func TestEnmeshedCreateTokenServiceErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		read bool
		body string
	}{
		{"persisted", false, `{"ephemeral":false}`},
		{"ephemeral", true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnmeshedEnv(t)
			f, _ := e.upload(t, "alice", core.FileAttrs{Name: "a.txt"}, "hello")
			e.fail(tc.read, fsm.CmdCreateToken, errors.New("no leader")) // the type matters for proposals only
			r := e.do(t, http.MethodPost, "/api/v2/Files/"+f.ID+"/Token", strings.NewReader(tc.body), nil)
			wantEnmeshedError(t, r, 503, codeUnavailable, "")
			if r.header.Get("Retry-After") == "" {
				t.Fatal("503 without Retry-After")
			}
			if e.svc.mintedCount() != 0 {
				t.Fatal("a token was minted")
			}
		})
	}
}
