package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/draw"
	"image/png"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/boombuler/barcode"
	"github.com/boombuler/barcode/qr"

	"github.com/cairn-dev/cairn/core"
)

// tokenCreate is a validated POST /api/v2/Files/{id}/Token request.
type tokenCreate struct {
	fileID    string
	expiresAt time.Time // zero: the file's own expiry
	kind      core.TokenKind
}

// parseTokenCreate validates a token-create request and reports the first failure only, in the
// Connector's order: the JSON itself (parsed before routing there), the path id, the schema
// (expiresAt's format, ephemeral's type), then expiresAt's value. An empty body is {}; ephemeral
// defaults to true; a JSON null counts as absent. Fields that ask for a protection cairn does not
// offer are refused rather than silently dropped.
func parseTokenCreate(fileID string, body []byte, now time.Time) (tokenCreate, error) {
	req := tokenCreate{fileID: fileID, kind: core.TokenEphemeral}
	var fields map[string]json.RawMessage
	if len(bytes.TrimSpace(body)) > 0 {
		if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
			return tokenCreate{}, errInvalidJSON()
		}
	}
	if !validID(fileID, "FIL") {
		return tokenCreate{}, invalidProperty(msgFileIDPattern)
	}
	var expiresAt string
	if raw, ok := fields["expiresAt"]; ok && !isJSONNull(raw) {
		if err := json.Unmarshal(raw, &expiresAt); err != nil {
			return tokenCreate{}, invalidProperty(msgExpiresAtFormat)
		}
		t, ok := parseISO8601(expiresAt)
		if !ok {
			return tokenCreate{}, invalidProperty(msgExpiresAtFormat)
		}
		req.expiresAt = t
	}
	if raw, ok := fields["ephemeral"]; ok && !isJSONNull(raw) {
		var ephemeral bool
		if err := json.Unmarshal(raw, &ephemeral); err != nil {
			return tokenCreate{}, invalidProperty("ephemeral must be boolean")
		}
		if !ephemeral {
			req.kind = core.TokenPersisted
		}
	}
	for _, unsupported := range []string{"forIdentity", "passwordProtection"} {
		if raw, ok := fields[unsupported]; ok && !isJSONNull(raw) {
			return tokenCreate{}, invalidProperty(unsupported + " is not supported")
		}
	}
	if !req.expiresAt.IsZero() && !req.expiresAt.After(now) {
		return tokenCreate{}, invalidProperty(msgExpiresAtFuture)
	}
	return req, nil
}

// createToken serves POST /api/v2/Files/{id}/Token: a TokenDTO, or with Accept: image/png a QR
// code of the token's reference. A QR code is for sharing on the spot, so it is always ephemeral.
func (a *enmeshedAPI) createToken(w http.ResponseWriter, r *http.Request, p core.Principal, mediaType string) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxTokenRequestBytes+1))
	if err != nil {
		return errInvalidJSON()
	}
	if len(body) > maxTokenRequestBytes {
		return invalidProperty(fmt.Sprintf("the payload must NOT have more than %d bytes", maxTokenRequestBytes))
	}
	req, err := parseTokenCreate(r.PathValue("id"), body, time.Now())
	if err != nil {
		return err
	}
	if mediaType == mediaPNG {
		req.kind = core.TokenEphemeral
	}
	t, err := a.svc.CreateTokenByID(r.Context(), p, req.fileID, req.expiresAt, req.kind)
	if err != nil {
		return err
	}
	if mediaType != mediaPNG {
		writeResult(w, http.StatusCreated, newTokenDTO(t, p))
		return nil
	}
	return writeQR(w, http.StatusCreated, t.Secret, req.fileID)
}

// writeQR answers a PNG QR code of reference, as an attachment named after name.
func writeQR(w http.ResponseWriter, status int, reference, name string) error {
	img, err := qrPNG(reference)
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", mediaPNG)
	h.Set("Content-Length", strconv.Itoa(len(img)))
	h.Set("Content-Disposition", "attachment;filename="+name+".png")
	w.WriteHeader(status)
	_, _ = w.Write(img) // the client went away; nothing left to tell it
	return nil
}

// getToken serves GET /api/v2/Tokens/{id}: persisted tokens only (ephemeral ones are not stored).
func (a *enmeshedAPI) getToken(w http.ResponseWriter, r *http.Request, p core.Principal, mediaType string) error {
	id := r.PathValue("id")
	if !validID(id, "TOK") {
		return invalidProperty(msgTokenIDPattern)
	}
	t, err := a.svc.TokenByID(r.Context(), p, id)
	if err != nil {
		return err
	}
	if mediaType == mediaPNG {
		return writeQR(w, http.StatusOK, t.Secret, t.ID)
	}
	writeResult(w, http.StatusOK, newTokenDTO(t, p))
	return nil
}

// QR code geometry: pixels per module and the quiet zone (4 modules, as ISO/IEC 18004 requires).
const (
	qrModulePixels = 8
	qrQuietModules = 4
)

// qrPNG renders content as a QR code (error correction M) in a grey-scale PNG.
func qrPNG(content string) ([]byte, error) {
	code, err := qr.Encode(content, qr.M, qr.Auto)
	if err != nil {
		return nil, fmt.Errorf("encode QR code: %w", err)
	}
	modules := code.Bounds().Dx()
	inner := modules * qrModulePixels
	scaled, err := barcode.Scale(code, inner, inner)
	if err != nil {
		return nil, fmt.Errorf("scale QR code: %w", err)
	}
	margin := qrQuietModules * qrModulePixels
	img := image.NewGray(image.Rect(0, 0, inner+2*margin, inner+2*margin))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	draw.Draw(img, image.Rect(margin, margin, margin+inner, margin+inner), scaled, image.Point{}, draw.Src)
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, fmt.Errorf("encode PNG: %w", err)
	}
	return buf.Bytes(), nil
}
