package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/cairn-dev/cairn/core"
)

// maxTokenRequestBytes bounds the token-create body; the real thing is a few dozen bytes.
const maxTokenRequestBytes = 64 << 10

// tokenRequest is a parsed POST /files/v1/{token}/tokens body.
type tokenRequest struct {
	access    core.AccessLevel
	expiresAt time.Time // zero: never
}

// readTokenRequest reads and parses a token-create body, bounded to maxTokenRequestBytes.
func readTokenRequest(body io.Reader, now time.Time) (tokenRequest, error) {
	b, err := io.ReadAll(io.LimitReader(body, maxTokenRequestBytes+1))
	if err != nil {
		return tokenRequest{}, errBodyFormat("the request body could not be read")
	}
	if len(b) > maxTokenRequestBytes {
		return tokenRequest{}, errBodyFormat(fmt.Sprintf("the request body exceeds %d bytes", maxTokenRequestBytes))
	}
	return parseTokenRequest(b, now)
}

// parseTokenRequest parses {"accessLevel":"full"|"read","expiresAt":"<ISO-8601>"}. An empty body
// means {} and a missing (or null) accessLevel means full. Malformed JSON is a body error (22); a
// field of the wrong type or value is a field error (15). Unknown fields are ignored, as JSON APIs
// conventionally do, but known keys match exactly (encoding/json's case folding would not).
func parseTokenRequest(b []byte, now time.Time) (tokenRequest, error) {
	req := tokenRequest{access: core.AccessFull}
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return req, nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		return tokenRequest{}, errBodyFormat("the request body must be a JSON object")
	}
	if raw, ok := fields["accessLevel"]; ok && !isJSONNull(raw) {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return tokenRequest{}, errFieldFormat(`accessLevel must be "full" or "read"`)
		}
		req.access = core.AccessLevel(s)
		if !req.access.Valid() {
			return tokenRequest{}, errFieldFormat(`accessLevel must be "full" or "read"`)
		}
	}
	if raw, ok := fields["expiresAt"]; ok && !isJSONNull(raw) {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return tokenRequest{}, errFieldFormat("expiresAt must be an ISO-8601 timestamp")
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return tokenRequest{}, errFieldFormat("expiresAt must be an ISO-8601 timestamp")
		}
		if !t.After(now) {
			return tokenRequest{}, errFieldFormat("expiresAt must be in the future")
		}
		req.expiresAt = t.UTC()
	}
	return req, nil
}

func isJSONNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }
