package httpapi

import (
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/cairn-dev/cairn/core"
)

// filesV1API is the Extra Horizon-compatible /files/v1 front-end.
type filesV1API struct {
	files     FilesV1Service
	log       *slog.Logger
	bounds    *uploadBounds
	downloads *downloadBounds
}

func (v *filesV1API) routes() []route {
	upload := map[string]http.HandlerFunc{http.MethodPost: v.upload, http.MethodGet: v.list}
	return []route{
		{"/files/v1/{$}", "/files/v1/", upload},
		{"/files/v1", "/files/v1/", upload}, // the SDK posts without the slash; redirects are not followed
		// "settings" is a resource, never a token: the literal outranks {token}.
		{"/files/v1/settings", "/files/v1/settings", map[string]http.HandlerFunc{
			http.MethodGet: v.getSettings, http.MethodPut: v.putSettings}},
		{"/files/v1/{token}", "/files/v1/{token}", map[string]http.HandlerFunc{http.MethodDelete: v.deleteFile}},
		{"/files/v1/{token}/details", "/files/v1/{token}/details", map[string]http.HandlerFunc{http.MethodGet: v.details}},
		{"/files/v1/{token}/file", "/files/v1/{token}/file", map[string]http.HandlerFunc{
			http.MethodGet: v.download, http.MethodHead: v.download}},
		{"/files/v1/{token}/tokens", "/files/v1/{token}/tokens", map[string]http.HandlerFunc{http.MethodPost: v.createToken}},
		{"/files/v1/{token}/tokens/{tokenToDelete}", "/files/v1/{token}/tokens/{tokenToDelete}",
			map[string]http.HandlerFunc{http.MethodDelete: v.deleteToken}},
	}
}

// fail answers err in the /files/v1 shape. Unexpected errors are logged with every secret of the
// request blanked out, since a wrapped error's text may quote the token it failed on.
func (v *filesV1API) fail(w http.ResponseWriter, r *http.Request, err error) {
	e := filesV1ErrorFor(err)
	if e.status >= http.StatusInternalServerError {
		v.log.LogAttrs(r.Context(), failureLevel(r, e.status), "files/v1 request failed",
			slog.String("route", r.Pattern), slog.Int("status", e.status),
			slog.String("error", redact(err.Error(), requestSecrets(r)...)))
	}
	writeFilesV1Error(w, e)
}

// requestSecrets lists the secrets a request may carry: path tokens and API keys.
func requestSecrets(r *http.Request) []string {
	key, _ := apiKey(r)
	return []string{r.PathValue("token"), r.PathValue("tokenToDelete"), key}
}

// redact replaces every occurrence of each non-empty secret in s.
func redact(s string, secrets ...string) string {
	for _, secret := range secrets {
		if secret != "" {
			s = strings.ReplaceAll(s, secret, "[redacted]")
		}
	}
	return s
}

// fileMetadata is the contract's FileMetadata, keys exactly as the SDK reads them.
type fileMetadata struct {
	Name              string      `json:"name"`
	MimeType          string      `json:"mimetype"`
	CreatorID         string      `json:"creatorId"`
	Size              int64       `json:"size"`
	Tags              []string    `json:"tags"`
	Tokens            []tokenJSON `json:"tokens,omitempty"`
	CreationTimestamp string      `json:"creationTimestamp"`
	UpdateTimestamp   string      `json:"updateTimestamp"`
}

type tokenJSON struct {
	Token       string `json:"token"`
	AccessLevel string `json:"accessLevel"`
}

// createdToken is the answer to POST /files/v1/{token}/tokens.
type createdToken struct {
	Token       string `json:"token"`
	AccessLevel string `json:"accessLevel"`
	ExpiresAt   string `json:"expiresAt,omitempty"`
}

// affectedRecords is the answer to the deletes; the SDK reports success only on a 200.
type affectedRecords struct {
	AffectedRecords int `json:"affectedRecords"`
}

// filesV1Timestamp formats t as the reference service does: ISO-8601 UTC with milliseconds.
func filesV1Timestamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// metadataJSON renders f; tokens are included only when the caller may see them (non-nil).
func metadataJSON(f core.FileInfo, tokens []core.TokenInfo) fileMetadata {
	md := fileMetadata{
		Name:              f.Name,
		MimeType:          f.MimeType,
		CreatorID:         f.CreatorID,
		Size:              f.Size,
		Tags:              f.Tags,
		CreationTimestamp: filesV1Timestamp(f.CreatedAt),
		UpdateTimestamp:   filesV1Timestamp(f.UpdatedAt),
	}
	if md.Tags == nil {
		md.Tags = []string{}
	}
	for _, t := range tokens {
		md.Tokens = append(md.Tokens, tokenJSON{Token: t.Secret, AccessLevel: string(t.Access)})
	}
	return md
}

func (v *filesV1API) details(w http.ResponseWriter, r *http.Request) {
	file, presented, tokens, err := v.files.Details(r.Context(), r.PathValue("token"))
	if err != nil {
		v.fail(w, r, err)
		return
	}
	if presented.Access != core.AccessFull {
		tokens = nil
	}
	writeJSON(w, http.StatusOK, metadataJSON(file, tokens))
}

func (v *filesV1API) deleteFile(w http.ResponseWriter, r *http.Request) {
	if err := v.files.DeleteFile(r.Context(), r.PathValue("token")); err != nil {
		v.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, affectedRecords{1})
}

func (v *filesV1API) createToken(w http.ResponseWriter, r *http.Request) {
	req, err := readTokenRequest(r.Body, time.Now())
	if err != nil {
		v.fail(w, r, err)
		return
	}
	t, err := v.files.CreateToken(r.Context(), r.PathValue("token"), req.access, req.expiresAt)
	if err != nil {
		v.fail(w, r, err)
		return
	}
	out := createdToken{Token: t.Secret, AccessLevel: string(t.Access)}
	if !t.ExpiresAt.IsZero() {
		out.ExpiresAt = filesV1Timestamp(t.ExpiresAt)
	}
	writeJSON(w, http.StatusOK, out)
}

func (v *filesV1API) deleteToken(w http.ResponseWriter, r *http.Request) {
	if err := v.files.DeleteToken(r.Context(), r.PathValue("token"), r.PathValue("tokenToDelete")); err != nil {
		v.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, affectedRecords{1})
}
