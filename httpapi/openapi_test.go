package httpapi

import (
	"context"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestOpenAPIDocumentValid: the merged document and each spec file are valid OpenAPI 3.
func TestOpenAPIDocumentValid(t *testing.T) {
	doc, err := OpenAPIDocument()
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("merged document: %v", err)
	}
}

// TestOpenAPICoversEveryRoute: every path and method the handlers register is in the document,
// and the document describes no route the handlers do not serve (HEAD is served wherever GET is,
// so the document may list it there). A route added without its spec, or a spec left behind by a
// removed route, fails here.
func TestOpenAPICoversEveryRoute(t *testing.T) {
	doc, err := OpenAPIDocument()
	if err != nil {
		t.Fatal(err)
	}
	served := map[string]bool{}   // "METHOD path"
	subtrees := map[string]bool{} // "METHOD prefix/" of ServeMux subtree patterns such as /debug/pprof/
	add := func(pattern string, methods []string) {
		path := strings.TrimSuffix(pattern, "{$}")
		for _, m := range methods {
			served[m+" "+path] = true
			if strings.HasSuffix(pattern, "/") {
				subtrees[m+" "+pattern] = true
			}
		}
	}
	var routes []route
	routes = append(routes, (&filesV1API{}).routes()...)
	routes = append(routes, (&opsHandlers{registry: prometheus.NewRegistry()}).routes()...)
	routes = append(routes, (&adminAPI{}).routes()...)
	routes = append(routes, (&snapshotAPI{}).routes()...)
	routes = append(routes, (&debugAPI{pprofs: true}).routes()...)
	for _, rt := range routes {
		add(rt.pattern, slices.Collect(maps.Keys(rt.methods)))
	}
	for _, rt := range (&enmeshedAPI{}).routes() {
		add(rt.pattern, slices.Collect(maps.Keys(rt.methods)))
	}
	specified := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			specified[method+" "+path] = true
		}
	}
	for _, k := range slices.Sorted(maps.Keys(served)) {
		if !specified[k] {
			t.Errorf("%s is served but not in the OpenAPI document", k)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(specified)) {
		method, path, _ := strings.Cut(k, " ")
		if !served[k] && !(method == http.MethodHead && served[http.MethodGet+" "+path]) && !inSubtree(subtrees, method, path) {
			t.Errorf("%s is in the OpenAPI document but not served", k)
		}
	}
}

// inSubtree reports whether a served pattern ending in "/" (a ServeMux subtree, such as
// /debug/pprof/) covers method and path.
func inSubtree(subtrees map[string]bool, method, path string) bool {
	for k := range subtrees {
		m, p, _ := strings.Cut(k, " ")
		if m == method && strings.HasSuffix(p, "/") && p != path && strings.HasPrefix(path, p) {
			return true
		}
	}
	return false
}
