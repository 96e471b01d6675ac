package core

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestEphemeralTokenRoundTripAndRefusals(t *testing.T) {
	key := bytes.Repeat([]byte{1}, 32)
	other := bytes.Repeat([]byte{2}, 32)
	fileID := NewFileID()
	exp := time.Date(2099, 1, 2, 3, 4, 5, 6_000_000, time.UTC)

	tok := mintEphemeral(key, fileID, exp)
	if len(tok) != ephemeralLen || !isEphemeral(tok) || plausibleSecret(tok) {
		t.Fatalf("token %q: len %d (want %d)", tok, len(tok), ephemeralLen)
	}
	got, gotExp, ok := verifyEphemeral(key, tok)
	if !ok || got != fileID || !gotExp.Equal(exp) {
		t.Fatalf("verify = %q %v %v", got, gotExp, ok)
	}
	if again := mintEphemeral(key, fileID, exp); again == tok {
		t.Fatal("two mints gave the same token: the nonce is missing")
	}
	if _, never, ok := verifyEphemeral(key, mintEphemeral(key, fileID, time.Time{})); !ok || !never.IsZero() {
		t.Fatalf("a token without expiry decodes as %v %v", never, ok)
	}

	refused := map[string]string{
		"wrong key":   mintEphemeral(other, fileID, exp),
		"truncated":   tok[:len(tok)-1],
		"extended":    tok + "A",
		"no prefix":   strings.TrimPrefix(tok, ephemeralPrefix),
		"empty":       "",
		"bad base64":  tok[:len(tok)-2] + "!!",
		"other file":  mintEphemeral(key, NewFileID(), exp)[:20] + tok[20:],
		"prefix only": ephemeralPrefix,
	}
	// Flip every character position once: any change must break the MAC.
	for i := len(ephemeralPrefix); i < len(tok); i++ {
		b := []byte(tok)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		refused["flip "+string(rune('0'+i%10))+"@"+time.Duration(i).String()] = string(b)
	}
	for name, bad := range refused {
		if _, _, ok := verifyEphemeral(key, bad); ok {
			t.Errorf("%s: verified", name)
		}
	}
}

func FuzzVerifyEphemeral(f *testing.F) {
	key := bytes.Repeat([]byte{9}, 32)
	f.Add(mintEphemeral(key, NewFileID(), time.Now()))
	f.Add("e1.")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		id, _, ok := verifyEphemeral(key, s)
		if ok && len(id) != ephemeralFileLen {
			t.Fatalf("verified token with file id %q", id)
		}
	})
}
