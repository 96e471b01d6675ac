package core

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
)

const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// randomAlnum returns n characters drawn uniformly from [A-Za-z0-9] with crypto/rand.
func randomAlnum(n int) string {
	out := make([]byte, 0, n)
	var buf [64]byte
	for len(out) < n {
		if _, err := rand.Read(buf[:]); err != nil {
			panic("crypto/rand failed: " + err.Error()) // the runtime never returns an error here
		}
		for _, b := range buf {
			// 248 = 4*62: rejecting larger values keeps the draw uniform.
			if b < 248 && len(out) < n {
				out = append(out, alnum[b%62])
			}
		}
	}
	return string(out)
}

// NewFileID returns a fresh file id, "FIL" and 17 alphanumerics (the enmeshed id shape).
func NewFileID() string { return "FIL" + randomAlnum(17) }

// NewTokenID returns a fresh token id, "TOK" and 17 alphanumerics.
func NewTokenID() string { return "TOK" + randomAlnum(17) }

// tokenSecretLen is the length of a bearer secret: 32 random bytes, unpadded URL-safe base64.
const tokenSecretLen = 43

// NewSecret returns 256 random bits, URL-safe: the bearer secret of a file token or an API key.
func NewSecret() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// plausibleSecret rejects strings that cannot be a token secret before any lookup, so garbage
// costs no read index.
func plausibleSecret(s string) bool {
	if len(s) != tokenSecretLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func newRequestID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return hex.EncodeToString(b[:])
}
