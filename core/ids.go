package core

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"time"
)

const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// sortedAlnum is the same alphabet in byte order, so that digits written with it sort like the
// numbers they encode.
const sortedAlnum = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

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

// Time-ordered ids. The state store keeps ids in a sorted key space (an LSM tree, fsm/DESIGN.md),
// and every create checks that its ids are not taken yet. With random ids each check falls into
// every table of the store; when the first characters are the creation time, new ids cluster at
// the end of the key space, and the check skips every table whose key range ends before it.
//
// An id of this kind is its prefix, idTimeChars characters of the whole seconds since idEpoch in
// base 62 (digits of sortedAlnum, so that byte order is time order), and idRandomChars
// characters from crypto/rand: 11 of 62 symbols are 65.5 bits, so two ids of the same second
// collide with negligible probability, and the id cannot be guessed. The shape stays the
// enmeshed one (prefix and 17 of [A-Za-z0-9]); ids minted before, fully random, are as valid and
// are stored and looked up the same way. The id reveals its creation second, which the file's
// metadata (createdAt) tells its readers anyway.
const (
	idTimeChars   = 6  // 62^6 seconds: about 1,800 years from idEpoch
	idRandomChars = 11 // 65.5 bits
)

// idEpoch is second 0 of the time-ordered ids.
var idEpoch = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

// timeOrderedAlnum is idTimeChars of at's seconds since idEpoch, then idRandomChars random
// alphanumerics. Times before idEpoch count as second 0, after the range as its last second.
func timeOrderedAlnum(at time.Time) string {
	secs := max(at.Unix()-idEpoch.Unix(), 0)
	var digits [idTimeChars]byte
	for i := idTimeChars - 1; i >= 0; i-- {
		digits[i] = sortedAlnum[secs%62]
		secs /= 62
	}
	if secs > 0 { // past the range: stay the largest prefix rather than wrap around
		for i := range digits {
			digits[i] = sortedAlnum[61]
		}
	}
	return string(digits[:]) + randomAlnum(idRandomChars)
}

// NewFileID returns a fresh file id, "FIL" and 17 alphanumerics (the enmeshed id shape), of which
// the first 6 are the creation second.
func NewFileID() string { return "FIL" + timeOrderedAlnum(time.Now()) }

// NewTokenID returns a fresh token id, "TOK" and 17 alphanumerics, time-ordered as NewFileID.
func NewTokenID() string { return "TOK" + timeOrderedAlnum(time.Now()) }

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

// requestIDTimeBytes of a request id's 16 bytes are its second since idEpoch (big endian), so
// that request ids sort by time in the de-duplication table as file ids do (above); the other
// 11 bytes (88 bits) come from crypto/rand. The id is the 32 hex characters of the 16 bytes, as
// before.
const requestIDTimeBytes = 5

func newRequestID() string {
	var b [16]byte
	if _, err := rand.Read(b[requestIDTimeBytes:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	var secs [8]byte
	binary.BigEndian.PutUint64(secs[:], uint64(max(time.Now().Unix()-idEpoch.Unix(), 0)))
	copy(b[:requestIDTimeBytes], secs[8-requestIDTimeBytes:])
	return hex.EncodeToString(b[:])
}
