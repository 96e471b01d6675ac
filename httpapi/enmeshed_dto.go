package httpapi

import (
	"net/http"
	"time"

	"github.com/cairn-dev/cairn/core"
)

// enmeshedEnvelope is the Connector's success envelope.
type enmeshedEnvelope struct {
	Result any `json:"result"`
}

// writeResult answers result in the success envelope.
func writeResult(w http.ResponseWriter, status int, result any) {
	writeJSON(w, status, enmeshedEnvelope{result})
}

// fileDTO is the contract's FileDTO, keys exactly as the Connector SDK reads them.
type fileDTO struct {
	ID              string   `json:"id"`
	IsOwn           bool     `json:"isOwn"`
	Filename        string   `json:"filename"`
	Tags            []string `json:"tags,omitempty"`
	Filesize        int64    `json:"filesize"`
	CreatedAt       string   `json:"createdAt"`
	CreatedBy       string   `json:"createdBy"`
	CreatedByDevice string   `json:"createdByDevice"`
	ExpiresAt       string   `json:"expiresAt"`
	Mimetype        string   `json:"mimetype"`
	Title           string   `json:"title"`
	Description     string   `json:"description,omitempty"`
	// TruncatedReference is a shareable read reference to the file (an ephemeral token).
	TruncatedReference string `json:"truncatedReference"`
}

func newFileDTO(f core.FileInfo, p core.Principal, ref string) fileDTO {
	return fileDTO{
		TruncatedReference: ref,
		ID:                 f.ID,
		IsOwn:              f.CreatorID == p.ID,
		Filename:           f.Name,
		Tags:               f.Tags,
		Filesize:           f.Size,
		CreatedAt:          enmeshedTime(f.CreatedAt),
		CreatedBy:          f.CreatorID,
		CreatedByDevice:    f.CreatedByNode,
		ExpiresAt:          enmeshedExpiry(f.ExpiresAt),
		Mimetype:           f.MimeType,
		Title:              f.Title,
		Description:        f.Description,
	}
}

// tokenDTO is the contract's TokenDTO.
type tokenDTO struct {
	ID                 string          `json:"id"`
	IsOwn              bool            `json:"isOwn"`
	CreatedBy          string          `json:"createdBy"`
	CreatedAt          string          `json:"createdAt"`
	ExpiresAt          string          `json:"expiresAt"`
	Content            tokenContentDTO `json:"content"`
	TruncatedReference string          `json:"truncatedReference"`
	IsEphemeral        bool            `json:"isEphemeral"`
	CreatedByDevice    string          `json:"createdByDevice"`
}

type tokenContentDTO struct {
	Type   string `json:"@type"`
	FileID string `json:"fileId"`
}

func newTokenDTO(t core.TokenInfo, p core.Principal) tokenDTO {
	return tokenDTO{
		ID:                 t.ID,
		IsOwn:              t.CreatorID == p.ID,
		CreatedBy:          t.CreatorID,
		CreatedAt:          enmeshedTime(t.CreatedAt),
		ExpiresAt:          enmeshedExpiry(t.ExpiresAt),
		Content:            tokenContentDTO{Type: "TokenContentFile", FileID: t.FileID},
		TruncatedReference: t.Secret,
		IsEphemeral:        t.Kind == core.TokenEphemeral,
		CreatedByDevice:    t.CreatedByNode,
	}
}

// enmeshedTime formats t as the Connector does (JavaScript's toISOString): UTC, milliseconds, "Z".
func enmeshedTime(t time.Time) string { return filesV1Timestamp(t) }

// neverExpires is how the Connector writes "no expiry".
const neverExpires = "9999-12-31T00:00:00.000Z"

// enmeshedExpiry formats an expiry; the zero time means never.
func enmeshedExpiry(t time.Time) string {
	if t.IsZero() {
		return neverExpires
	}
	return enmeshedTime(t)
}

// isoLayouts are the ISO-8601 forms accepted on input, from a bare year to a full timestamp with
// fractional seconds (time.Parse accepts those after any seconds field) and an offset. A form
// without an offset is UTC.
var isoLayouts = func() []string {
	out := []string{"2006", "2006-01", "2006-01-02"}
	for _, t := range []string{"2006-01-02T15", "2006-01-02T15:04", "2006-01-02T15:04:05"} {
		for _, zone := range []string{"", "Z07:00", "Z0700", "Z07"} {
			out = append(out, t+zone)
		}
	}
	return out
}()

// parseISO8601 parses s leniently, as the Connector's date handling does.
func parseISO8601(s string) (time.Time, bool) {
	for _, layout := range isoLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), true
		}
	}
	return time.Time{}, false
}

// validID reports whether id is prefix followed by 17 of [A-Za-z0-9], the enmeshed id shape.
func validID(id, prefix string) bool {
	if len(id) != len(prefix)+17 || id[:len(prefix)] != prefix {
		return false
	}
	for _, c := range []byte(id[len(prefix):]) {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// Messages for malformed path ids.
const (
	msgFileIDPattern  = "fileId must match pattern FIL[A-Za-z0-9]{17}"
	msgTokenIDPattern = "tokenId must match pattern TOK[A-Za-z0-9]{17}"
)

// fileIDParam is the route's {id} as a file id, or the 400 for a malformed one.
func fileIDParam(r *http.Request) (string, error) {
	id := r.PathValue("id")
	if !validID(id, "FIL") {
		return "", invalidProperty(msgFileIDPattern)
	}
	return id, nil
}
