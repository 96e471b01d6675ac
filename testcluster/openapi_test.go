package testcluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

// specTransport checks every exchange of a test's clients against the OpenAPI document the node
// serves at /openapi.json, with kin-openapi's openapi3filter:
//   - every answer must be one the document allows for its route: a declared status, headers and,
//     for JSON, a body that matches the schema (unknown keys included, since the schemas close
//     their objects);
//   - every request the node accepted (2xx) must satisfy the document, so the spec is never
//     stricter than the code;
//   - a request outside the document may only get the front-end's "unknown route" or "wrong
//     method" error, in that front-end's error format.
//
// A drift between the handlers and the spec therefore fails the test that made the exchange.
type specTransport struct {
	t      *testing.T
	router routers.Router
	doc    *openapi3.T
	next   http.RoundTripper
	seen   atomic.Int64
}

// validateAgainstSpec makes every client of c validate its exchanges against the document node 0
// serves; at the end the test logs how many exchanges were checked.
func validateAgainstSpec(t *testing.T, c *Cluster) {
	t.Helper()
	resp, err := c.Client(0).Do(http.MethodGet, "/openapi.json", nil, nil)
	if err != nil || resp.Status != http.StatusOK {
		t.Fatalf("GET /openapi.json: %d %v", resp.Status, err)
	}
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(resp.Body)
	if err != nil {
		t.Fatalf("load the served OpenAPI document: %v", err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		t.Fatalf("the served OpenAPI document is invalid: %v", err)
	}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatalf("route the OpenAPI document: %v", err)
	}
	var transports []*specTransport
	for i := range c.clients {
		cl := c.Client(i)
		next := cl.HTTP.Transport
		if next == nil {
			next = http.DefaultTransport
		}
		st := &specTransport{t: t, router: router, doc: doc, next: next}
		transports = append(transports, st)
		cl.HTTP.Transport = st
		t.Cleanup(func() { cl.HTTP.Transport = next })
	}
	t.Cleanup(func() {
		var n int64
		for _, st := range transports {
			n += st.seen.Load()
		}
		t.Logf("checked %d exchanges against /openapi.json", n)
	})
}

func (s *specTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var reqBody []byte
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("spec check: read request body: %w", err)
		}
		reqBody = b
		req.Body = io.NopCloser(bytes.NewReader(b))
		req.ContentLength = int64(len(b))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	}
	resp, err := s.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	respBody, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(respBody))
	if err != nil {
		return resp, nil // a cut-off answer is the test's business, not the spec's
	}
	s.seen.Add(1)
	if problem := s.check(req, reqBody, resp, respBody); problem != "" {
		s.t.Errorf("OpenAPI drift: %s %s -> %d: %s\nanswer: %.512s", req.Method, req.URL.RequestURI(), resp.StatusCode, problem, respBody)
	}
	return resp, nil
}

// check returns what is wrong with one exchange, or "".
func (s *specTransport) check(req *http.Request, reqBody []byte, resp *http.Response, respBody []byte) string {
	ctx := context.Background()
	probe := req.Clone(ctx)
	probe.Body = io.NopCloser(bytes.NewReader(reqBody))
	route, params, err := s.router.FindRoute(probe)
	if err != nil {
		return s.offSpec(req, resp, respBody, err)
	}
	opts := &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, MultiError: true,
		IncludeResponseStatus: true}
	in := &openapi3filter.RequestValidationInput{Request: probe, PathParams: params, Route: route, Options: opts}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if err := openapi3filter.ValidateRequest(ctx, in); err != nil {
			return "the node accepted a request the spec forbids: " + err.Error()
		}
	}
	respOpts := *opts
	if !isJSON(resp.Header.Get("Content-Type")) || req.Method == http.MethodHead {
		// File bytes, QR codes, metrics text: the status and headers are checked, not the bytes.
		respOpts.ExcludeResponseBody = true
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode,
		Header: resp.Header, Body: io.NopCloser(bytes.NewReader(respBody)), Options: &respOpts}
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		return "the answer does not match the spec: " + err.Error()
	}
	return ""
}

// offSpec judges an exchange whose route or method the document does not have: only the
// front-end's own unknown-route (404) or wrong-method (404 on /files/v1, 405 on /api/v2) answer
// is allowed, in its error format.
func (s *specTransport) offSpec(req *http.Request, resp *http.Response, body []byte, findErr error) string {
	if resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMethodNotAllowed &&
		resp.StatusCode != http.StatusUnauthorized {
		return fmt.Sprintf("route not in the spec (%v) but answered %d", findErr, resp.StatusCode)
	}
	schema := "V1Error"
	if strings.HasPrefix(req.URL.Path, "/api/v2") {
		schema = "V2Error"
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Sprintf("route not in the spec (%v); its error is not JSON: %v", findErr, err)
	}
	if err := s.doc.Components.Schemas[schema].Value.VisitJSON(v); err != nil {
		return fmt.Sprintf("route not in the spec (%v); its error is not a %s: %v", findErr, schema, err)
	}
	return ""
}

func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}
