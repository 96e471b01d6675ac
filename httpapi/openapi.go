package httpapi

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
)

// openAPIFiles are the OpenAPI 3 specs of each front-end, one file per area, kept next to the
// handlers they describe. Each file stands alone (its component names carry its prefix: V1, V2,
// Admin, Debug, Ops), so that OpenAPIDocument can merge them without renaming.
//
//go:embed openapi/*.yaml
var openAPIFiles embed.FS

// OpenAPISpecFiles lists the embedded spec files, in merge order.
var OpenAPISpecFiles = []string{"openapi/files-v1.yaml", "openapi/api-v2.yaml", "openapi/admin.yaml", "openapi/debug.yaml", "openapi/ops.yaml"}

// OpenAPIDocument merges the embedded specs into one OpenAPI 3 document: every path and component
// of every file. Two files defining the same path or component is an error.
func OpenAPIDocument() (*openapi3.T, error) {
	merged := &openapi3.T{
		OpenAPI: "3.0.3",
		Info: &openapi3.Info{Title: "cairn HTTP API", Version: "1",
			Description: "Every route a cairn node serves on --http-addr: /files/v1, /api/v2, the admin, debugging and ops routes. docs/api.md is the prose reference."},
		Paths:      openapi3.NewPaths(),
		Components: &openapi3.Components{},
	}
	for _, name := range OpenAPISpecFiles {
		raw, err := fs.ReadFile(openAPIFiles, name)
		if err != nil {
			return nil, fmt.Errorf("openapi: %w", err)
		}
		doc, err := openapi3.NewLoader().LoadFromData(raw)
		if err != nil {
			return nil, fmt.Errorf("openapi: load %s: %w", name, err)
		}
		for path, item := range doc.Paths.Map() {
			if merged.Paths.Value(path) != nil {
				return nil, fmt.Errorf("openapi: %s defines %s again", name, path)
			}
			// A document-wide security requirement becomes each operation's own, since the merged
			// document has none of its own.
			if doc.Security != nil {
				for _, op := range item.Operations() {
					if op.Security == nil {
						sec := slices.Clone(doc.Security)
						op.Security = &sec
					}
				}
			}
			merged.Paths.Set(path, item)
		}
		if doc.Components == nil {
			continue
		}
		c, m := doc.Components, merged.Components
		var err2 error
		mergeInto(&m.Schemas, c.Schemas, name, &err2)
		mergeInto(&m.Parameters, c.Parameters, name, &err2)
		mergeInto(&m.Responses, c.Responses, name, &err2)
		mergeInto(&m.RequestBodies, c.RequestBodies, name, &err2)
		mergeInto(&m.Headers, c.Headers, name, &err2)
		mergeInto(&m.SecuritySchemes, c.SecuritySchemes, name, &err2)
		if err2 != nil {
			return nil, err2
		}
	}
	return merged, nil
}

// mergeInto adds src's entries to *dst, recording in *err the first name both define.
func mergeInto[M ~map[string]V, V any](dst *M, src M, file string, err *error) {
	if len(src) == 0 {
		return
	}
	if *dst == nil {
		*dst = M{}
	}
	for _, k := range slices.Sorted(maps.Keys(src)) {
		if _, dup := (*dst)[k]; dup && *err == nil {
			*err = fmt.Errorf("openapi: %s defines component %s again", file, k)
		}
		(*dst)[k] = src[k]
	}
}

// openAPIHandler serves the merged document as JSON, built once.
func openAPIHandler() http.HandlerFunc {
	build := sync.OnceValues(func() ([]byte, error) {
		doc, err := OpenAPIDocument()
		if err != nil {
			return nil, err
		}
		return json.Marshal(doc)
	})
	return func(w http.ResponseWriter, _ *http.Request) {
		body, err := build()
		if err != nil {
			// The specs are embedded and tested, so this is a build defect; say so plainly.
			writeFilesV1Error(w, errServer())
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
	}
}
