package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/boombuler/barcode"
	"github.com/boombuler/barcode/qr"
)

// runShare implements `cairn share TOKEN|--id FILE_ID`: a read link to a file, and its QR code
// when standard output is a terminal.
func runShare(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := newCommand("cairn share", "<full token> | --id <file id>", "Print a read-only download link to a file, and a QR code of it on a terminal.\n"+
		"With a full token, the link holds a new persisted read token (delete it with 'cairn token delete').\n"+
		"With --id (an /api/v2 file id) and an API key that may see the file, it holds an ephemeral read\n"+
		"token: signed, never stored, dead when it expires, the file is deleted or the signing key rotates.", stderr)
	cf := addClientFlags(cmd.fs, "API key for --id")
	fileID := cmd.fs.String("id", "", "share the file with this /api/v2 id instead of a token")
	expires := cmd.fs.Duration("expires", 0, "lifetime of the link, e.g. 24h (default: the token never expires; with --id, the file's own expiry)")
	noQR := cmd.fs.Bool("no-qr", false, "print no QR code, even on a terminal")
	want := 1
	if hasFlag(args, "id") {
		want = 0
	}
	pos, err := cmd.parse(args, want)
	if err != nil {
		return err
	}
	if *expires < 0 {
		return cmd.usageErr("--expires must be positive")
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	var readToken string
	if *fileID != "" {
		if readToken, err = ephemeralToken(ctx, c, *fileID, *expires); err != nil {
			return err
		}
	} else {
		grant, err := createToken(ctx, c, pos[0], true, *expires)
		if err != nil {
			return err
		}
		readToken = grant.Token
	}
	link := c.url("/files/v1/" + url.PathEscape(readToken) + "/file")
	if _, err := fmt.Fprintln(stdout, link); err != nil {
		return err
	}
	if *expires > 0 {
		fmt.Fprintf(stdout, "expires %s\n", time.Now().Add(*expires).UTC().Format(time.RFC3339))
	}
	if *noQR || !isTerminal(stdout) {
		return nil
	}
	code, err := qrText(link)
	if err != nil {
		return err
	}
	_, err = io.WriteString(stdout, code)
	return err
}

// hasFlag says whether args set the flag name (-name, --name, -name=v, --name=v) before any "--".
func hasFlag(args []string, name string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		a = strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		if a == name || strings.HasPrefix(a, name+"=") {
			return true
		}
	}
	return false
}

// ephemeralToken asks /api/v2 for an ephemeral read token of a file.
func ephemeralToken(ctx context.Context, c *apiClient, fileID string, lifetime time.Duration) (string, error) {
	body := map[string]any{"ephemeral": true}
	if lifetime > 0 {
		body["expiresAt"] = isoTime(time.Now().Add(lifetime))
	}
	var out struct {
		Result struct {
			TruncatedReference string `json:"truncatedReference"`
		} `json:"result"`
	}
	if err := c.callJSON(ctx, http.MethodPost, "/api/v2/Files/"+url.PathEscape(fileID)+"/Token", true, body, &out); err != nil {
		return "", err
	}
	if out.Result.TruncatedReference == "" {
		return "", fmt.Errorf("the token answer holds no truncatedReference")
	}
	return out.Result.TruncatedReference, nil
}

// qrText draws a QR code of s with Unicode half blocks, two modules rows per text line, light
// modules drawn and dark ones blank (a terminal's usual dark background), inside a quiet zone.
func qrText(s string) (string, error) {
	code, err := qr.Encode(s, qr.M, qr.Auto)
	if err != nil {
		return "", fmt.Errorf("qr code: %w", err)
	}
	return renderQR(code), nil
}

func renderQR(code barcode.Barcode) string {
	const quiet = 2
	size := code.Bounds().Dx()
	dark := func(x, y int) bool {
		x, y = x-quiet, y-quiet
		if x < 0 || y < 0 || x >= size || y >= size {
			return false
		}
		r, _, _, _ := code.At(x, y).RGBA()
		return r == 0
	}
	var b strings.Builder
	for y := 0; y < size+2*quiet; y += 2 {
		for x := 0; x < size+2*quiet; x++ {
			top, bottom := !dark(x, y), !dark(x, y+1) // light modules are drawn
			if y+1 >= size+2*quiet {
				bottom = false
			}
			switch {
			case top && bottom:
				b.WriteRune('█')
			case top:
				b.WriteRune('▀')
			case bottom:
				b.WriteRune('▄')
			default:
				b.WriteRune(' ')
			}
		}
		b.WriteByte('\n')
	}
	return b.String()
}
