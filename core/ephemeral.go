package core

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"strings"
	"time"
)

// An ephemeral token is a self-contained, read-only capability that is never stored: the file id,
// the expiry and a nonce, MACed with the cluster's signing key (held in Raft, rotatable). Any node
// mints one without a Raft write, and any node verifies it. It dies when it expires, when its file
// is deleted (the file lookup fails), or when the signing key is rotated (the MAC fails).
//
// Wire form: "e1." + base64url(fileID[20] | expiresAtUnixMilli[8] | nonce[12] | mac[16]).
const (
	ephemeralPrefix  = "e1."
	ephemeralFileLen = 20 // "FIL" + 17
	ephemeralBodyLen = ephemeralFileLen + 8 + 12
	ephemeralMACLen  = 16
)

// ephemeralLen is the exact length of a well-formed ephemeral token.
var ephemeralLen = len(ephemeralPrefix) + base64.RawURLEncoding.EncodedLen(ephemeralBodyLen+ephemeralMACLen)

// ephemeralMACContext separates these MACs from any other use of the signing key.
const ephemeralMACContext = "cairn ephemeral token v1\x00"

func isEphemeral(token string) bool { return strings.HasPrefix(token, ephemeralPrefix) }

// mintEphemeral signs a read token for fileID that expires at expiresAt (zero: never), with a
// random nonce: every call gives a new token.
func mintEphemeral(key []byte, fileID string, expiresAt time.Time) string {
	var nonce [12]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return sealEphemeral(key, fileID, expiresAt, nonce[:])
}

// fileReference is the stable ephemeral token of a file: its nonce is derived from the file id
// and expiry, so the same file always shows the same reference (until the key rotates).
func fileReference(key []byte, fileID string, expiresAt time.Time) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("cairn file reference v1\x00" + fileID))
	return sealEphemeral(key, fileID, expiresAt, m.Sum(nil)[:12])
}

func sealEphemeral(key []byte, fileID string, expiresAt time.Time, nonce []byte) string {
	body := make([]byte, ephemeralBodyLen, ephemeralBodyLen+ephemeralMACLen)
	copy(body, fileID)
	var ms int64
	if !expiresAt.IsZero() {
		ms = expiresAt.UnixMilli()
	}
	binary.BigEndian.PutUint64(body[ephemeralFileLen:], uint64(ms))
	copy(body[ephemeralFileLen+8:], nonce)
	return ephemeralPrefix + base64.RawURLEncoding.EncodeToString(append(body, ephemeralMAC(key, body)...))
}

func ephemeralMAC(key, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(ephemeralMACContext))
	m.Write(body)
	return m.Sum(nil)[:ephemeralMACLen]
}

// verifyEphemeral checks the token's shape and MAC (in constant time) and returns what it grants.
// Any failure, tampering, truncation or a rotated key, is one answer: not valid.
func verifyEphemeral(key []byte, token string) (fileID string, expiresAt time.Time, ok bool) {
	if len(token) != ephemeralLen || !isEphemeral(token) {
		return "", time.Time{}, false
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(token[len(ephemeralPrefix):])
	if err != nil || len(raw) != ephemeralBodyLen+ephemeralMACLen {
		return "", time.Time{}, false
	}
	body, mac := raw[:ephemeralBodyLen], raw[ephemeralBodyLen:]
	if !hmac.Equal(mac, ephemeralMAC(key, body)) {
		return "", time.Time{}, false
	}
	if ms := int64(binary.BigEndian.Uint64(body[ephemeralFileLen:])); ms != 0 {
		expiresAt = time.UnixMilli(ms).UTC()
	}
	return string(body[:ephemeralFileLen]), expiresAt, true
}
