package httpapi

import (
	"net/http"
	"strings"
	"testing"
)

// TestFilenameCapAtTheBoundary: a filename of exactly maxFilenameBytes is accepted, one byte more is
// refused with each API's validation error, before anything is committed.
func TestFilenameCapAtTheBoundary(t *testing.T) {
	atCap, overCap := strings.Repeat("n", maxFilenameBytes), strings.Repeat("n", maxFilenameBytes+1)

	v1 := newEnv(t)
	body, ct := multipartBody(t, part{name: "file", filename: atCap, body: "abc"})
	if r := v1.do(t, http.MethodPost, "/files/v1/", body, map[string]string{"Content-Type": ct, "Authorization": "Bearer key-alice"}); r.status != http.StatusOK {
		t.Fatalf("/files/v1 filename of %d bytes: %d %s", len(atCap), r.status, r.body)
	}
	body, ct = multipartBody(t, part{name: "file", filename: overCap, body: "abc"})
	r := v1.do(t, http.MethodPost, "/files/v1/", body, map[string]string{"Content-Type": ct, "Authorization": "Bearer key-alice"})
	wantError(t, r, http.StatusBadRequest, 15, "FIELD_FORMAT_EXCEPTION")

	v2 := newEnmeshedEnv(t)
	body, ct = multipartBody(t, part{name: "file", filename: atCap, body: "abc"})
	if r := v2.do(t, http.MethodPost, "/api/v2/Files/Own", body, map[string]string{"Content-Type": ct}); r.status != http.StatusCreated {
		t.Fatalf("/api/v2 filename of %d bytes: %d %s", len(atCap), r.status, r.body)
	}
	body, ct = multipartBody(t, part{name: "file", filename: overCap, body: "abc"})
	r = v2.do(t, http.MethodPost, "/api/v2/Files/Own", body, map[string]string{"Content-Type": ct})
	wantEnmeshedError(t, r, http.StatusBadRequest, codeInvalidPropertyValue, "the filename of the file part exceeds 65536 bytes")
}
