package httpapi

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/cairn-dev/cairn/core"
	"github.com/cairn-dev/cairn/httpapi/rql"
)

// listFields are the FileMetadata attributes RQL may filter, sort and select on.
var listFields = rql.Fields{
	"name": rql.KindString, "mimetype": rql.KindString, "creatorId": rql.KindString,
	"size": rql.KindNumber, "tags": rql.KindStringList, "tokens": rql.KindStringList,
	"creationTimestamp": rql.KindTime, "updateTimestamp": rql.KindTime,
}

// listRecord exposes a file to RQL under the contract's attribute names.
type listRecord struct{ l core.FileListing }

func (r listRecord) Field(name string) (any, bool) {
	f := r.l.File
	switch name {
	case "name":
		return f.Name, true
	case "mimetype":
		return f.MimeType, true
	case "creatorId":
		return f.CreatorID, true
	case "size":
		return f.Size, true
	case "tags":
		return f.Tags, true
	case "tokens":
		secrets := make([]string, len(r.l.Tokens))
		for i, t := range r.l.Tokens {
			secrets[i] = t.Secret
		}
		return secrets, true
	case "creationTimestamp":
		return f.CreatedAt, true
	case "updateTimestamp":
		return f.UpdatedAt, true
	}
	return nil, false
}

type pageJSON struct {
	Total  int `json:"total"`
	Offset int `json:"offset"`
	Limit  int `json:"limit"`
}

// list serves GET /files/v1/?<RQL>: every file with its tokens, for a principal with VIEW_FILES.
func (v *filesV1API) list(w http.ResponseWriter, r *http.Request) {
	p, err := keyPrincipal(r, v.files)
	if err != nil {
		v.fail(w, r, err)
		return
	}
	q, err := rql.Parse(r.URL.RawQuery, listFields)
	if err != nil {
		v.fail(w, r, &filesV1Error{http.StatusBadRequest, 19, "INVALID_RQL_EXCEPTION",
			strings.TrimPrefix(err.Error(), rql.ErrInvalid.Error()+": ")})
		return
	}
	// The pager holds offset+limit records at most, whatever the number of files.
	pager := rql.NewPager[listRecord](q)
	if err := v.files.ScanFilesWithTokens(r.Context(), p, func(l core.FileListing) bool {
		pager.Add(listRecord{l})
		return true
	}); err != nil {
		v.fail(w, r, err)
		return
	}
	page, total, limit, offset := pager.Page()
	data := make([]any, 0, len(page))
	for _, rec := range page {
		md := metadataJSON(rec.l.File, rec.l.Tokens)
		if md.Tokens == nil {
			md.Tokens = []tokenJSON{}
		}
		if q.Select == nil {
			data = append(data, md)
			continue
		}
		selected, err := selectKeys(md, q.Select)
		if err != nil {
			v.fail(w, r, err)
			return
		}
		data = append(data, selected)
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"page": pageJSON{Total: total, Offset: offset, Limit: limit},
		"data": data,
	})
}

// selectKeys keeps only the selected attributes of a FileMetadata.
func selectKeys(md fileMetadata, keys []string) (map[string]json.RawMessage, error) {
	b, err := json.Marshal(md)
	if err != nil {
		return nil, err
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(b, &all); err != nil {
		return nil, err
	}
	out := make(map[string]json.RawMessage, len(keys))
	for _, k := range keys {
		if v, ok := all[k]; ok {
			out[k] = v
		}
	}
	return out, nil
}
