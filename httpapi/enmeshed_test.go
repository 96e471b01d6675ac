package httpapi

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairn-dev/cairn/cluster/clusterapi"
	"github.com/cairn-dev/cairn/core"
	"github.com/cairn-dev/cairn/fsm"
)

const unknownFileID = "FILaaaaaaaaaaaaaaaaa"

func TestEnmeshedAuthComesFirst(t *testing.T) {
	e := newEnmeshedEnv(t)
	f, _ := e.upload(t, "alice", core.FileAttrs{Name: "a.txt"}, "hello")
	for _, tc := range []struct {
		name         string
		method, path string
		body         string
		header       map[string]string
	}{
		{"no key", http.MethodGet, "/api/v2/Files", "", map[string]string{"X-API-KEY": ""}},
		{"unknown key", http.MethodGet, "/api/v2/Files/" + f.ID, "", map[string]string{"X-API-KEY": "nope"}},
		{"empty bearer", http.MethodGet, "/api/v2/Files", "", map[string]string{"X-API-KEY": "", "Authorization": "Bearer "}},
		{"basic scheme", http.MethodGet, "/api/v2/Files", "", map[string]string{"X-API-KEY": "", "Authorization": "Basic a2V5LWFsaWNl"}},
		{"bad key and bad body", http.MethodPost, "/api/v2/Files/" + f.ID + "/Token", "{", map[string]string{"X-API-KEY": "nope"}},
		{"bad key and malformed id", http.MethodGet, "/api/v2/Files/x", "", map[string]string{"X-API-KEY": "nope"}},
		{"bad key and unknown route", http.MethodGet, "/api/v2/Nothing", "", map[string]string{"X-API-KEY": "nope"}},
		{"bad key and wrong method", http.MethodPut, "/api/v2/Files", "", map[string]string{"X-API-KEY": "nope"}},
		{"bad key and bad accept", http.MethodGet, "/api/v2/Files", "", map[string]string{"X-API-KEY": "nope", "Accept": "image/png"}},
		{"bad key and upload", http.MethodPost, "/api/v2/Files/Own", "x", map[string]string{"X-API-KEY": "nope"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(t, tc.method, tc.path, strings.NewReader(tc.body), tc.header)
			wantEnmeshedError(t, r, http.StatusUnauthorized, codeUnauthorized, "Unauthorized.")
		})
	}
	t.Run("bearer works", func(t *testing.T) {
		r := e.do(t, http.MethodGet, "/api/v2/Files/"+f.ID, nil,
			map[string]string{"X-API-KEY": "", "Authorization": "Bearer key-alice"})
		resultObject(t, r, http.StatusOK, fileDTOBareKeys...)
	})
}

func TestEnmeshedErrorEnvelopes(t *testing.T) {
	e := newEnmeshedEnv(t)
	f, _ := e.upload(t, "alice", core.FileAttrs{Name: "a.txt"}, "hello")
	for _, tc := range []struct {
		name         string
		method, path string
		header       map[string]string
		status       int
		code         string
		allow        string
	}{
		{"unknown route", http.MethodGet, "/api/v2/Nothing", nil, 404, codeRouteDoesNotExist, ""},
		{"api root", http.MethodGet, "/api/v2", nil, 404, codeRouteDoesNotExist, ""},
		{"api root slash", http.MethodGet, "/api/v2/", nil, 404, codeRouteDoesNotExist, ""},
		{"too deep", http.MethodGet, "/api/v2/Files/" + f.ID + "/Download/x", nil, 404, codeRouteDoesNotExist, ""},
		{"trailing slash", http.MethodGet, "/api/v2/Files/", nil, 404, codeRouteDoesNotExist, ""},
		{"wrong method on list", http.MethodDelete, "/api/v2/Files", nil, 405, codeMethodNotAllowed, "GET, HEAD"},
		{"wrong method on Own", http.MethodPut, "/api/v2/Files/Own", nil, 405, codeMethodNotAllowed, "GET, HEAD, POST"},
		{"wrong method on file", http.MethodPost, "/api/v2/Files/" + f.ID, nil, 405, codeMethodNotAllowed, "DELETE, GET, HEAD"},
		{"wrong method on token create", http.MethodGet, "/api/v2/Files/" + f.ID + "/Token", nil, 405, codeMethodNotAllowed, "POST"},
		{"wrong method on token", http.MethodDelete, "/api/v2/Tokens/TOKaaaaaaaaaaaaaaaaa", nil, 405, codeMethodNotAllowed, "GET, HEAD"},
		{"png list", http.MethodGet, "/api/v2/Files", map[string]string{"Accept": "image/png"}, 406, codeNotAcceptable, ""},
		{"json refused", http.MethodGet, "/api/v2/Files/" + f.ID, map[string]string{"Accept": "application/json;q=0, text/html"}, 406, codeNotAcceptable, ""},
		{"html token", http.MethodPost, "/api/v2/Files/" + f.ID + "/Token", map[string]string{"Accept": "text/html"}, 406, codeNotAcceptable, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(t, tc.method, tc.path, nil, tc.header)
			wantEnmeshedError(t, r, tc.status, tc.code, "")
			if got := r.header.Get("Allow"); got != tc.allow {
				t.Fatalf("Allow = %q, want %q", got, tc.allow)
			}
		})
	}
}

// TestEnmeshedServiceErrors drives the failures of the layers below core, and a rule of core's, through
// real routes.
func TestEnmeshedServiceErrors(t *testing.T) {
	for _, tc := range []struct {
		name       string
		read       bool   // the fault hits the read index; otherwise every proposal
		method     string // on alice's file when not GET (the list)
		err        error
		status     int
		code       string
		retryAfter string
	}{
		{"unavailable", true, http.MethodGet, errors.New("no leader"), 503, codeUnavailable, "1"},
		{"shutting down", true, http.MethodGet, clusterapi.ErrShutdown, 503, codeUnavailable, "1"},
		{"no space", true, http.MethodGet, fmt.Errorf("append: %w", clusterapi.ErrLogStoreFull), 507, codeInsufficientStorage, ""},
		{"unexpected", false, http.MethodDelete, fmt.Errorf("disk on fire %s: %w", keyAlice, fsm.ErrInvalidCommand), 500, codeUnexpected, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnmeshedEnv(t)
			f, _ := e.upload(t, "alice", core.FileAttrs{Name: "a.txt"}, "hello")
			e.fail(tc.read, "", tc.err)
			path := "/api/v2/Files"
			if tc.method != http.MethodGet {
				path += "/" + f.ID
			}
			r := e.do(t, tc.method, path, nil, nil)
			wantEnmeshedError(t, r, tc.status, tc.code, "")
			if got := r.header.Get("Retry-After"); got != tc.retryAfter {
				t.Fatalf("Retry-After = %q, want %q", got, tc.retryAfter)
			}
			if strings.Contains(e.logs.String(), keyAlice) {
				t.Fatalf("the API key reached the logs: %s", e.logs)
			}
		})
	}
	t.Run("permission", func(t *testing.T) {
		// VIEW_FILES sees every file but deletes only its own.
		e := newEnmeshedEnv(t)
		f, _ := e.upload(t, "bob", core.FileAttrs{Name: "b.txt"}, "bob's")
		r := e.do(t, http.MethodDelete, "/api/v2/Files/"+f.ID, nil, map[string]string{"X-API-KEY": keyAdmin})
		wantEnmeshedError(t, r, 403, codeNotOwnedByYou, "")
		if e.core.Files() != 1 {
			t.Fatal("the file was deleted")
		}
	})
	t.Run("panic", func(t *testing.T) {
		e := newEnmeshedEnv(t)
		f, _ := e.upload(t, "alice", core.FileAttrs{Name: "a.txt"}, "hello")
		e.panicOnRead("FileByID exploded")
		r := e.do(t, http.MethodGet, "/api/v2/Files/"+f.ID, nil, nil)
		wantEnmeshedError(t, r, 500, codeUnexpected, "An unexpected error occurred.")
		if !strings.Contains(e.logs.String(), "panic serving request") {
			t.Fatalf("panic not logged: %s", e.logs)
		}
		if got := requestCount(t, e.reg, "/api/v2/Files/{id}", "500"); got != 1 {
			t.Fatalf("500s counted = %v, want 1", got)
		}
	})
}

// TestEnmeshedErrorFor maps every core sentinel to the /api/v2 wire answer.
func TestEnmeshedErrorFor(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
		code   string
	}{
		{core.ErrUnavailable, 503, codeUnavailable},
		{core.ErrShuttingDown, 503, codeUnavailable},
		{core.ErrNoSpace, 507, codeInsufficientStorage},
		{core.ErrPermissionDenied, 403, codeNotOwnedByYou},
		{core.ErrNotFound, 404, codeRecordNotFound},
		{errors.New("disk on fire"), 500, codeUnexpected},
	} {
		e := enmeshedErrorFor(fmt.Errorf("wrapped: %w", tc.err), "File")
		if e.status != tc.status || e.code != tc.code {
			t.Errorf("enmeshedErrorFor(%v) = %d %s, want %d %s", tc.err, e.status, e.code, tc.status, tc.code)
		}
	}
}

// requestCount is the request counter of one route and status.
func requestCount(t testing.TB, reg *prometheus.Registry, route, code string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() != "cairn_http_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["route"] == route && labels["code"] == code {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func TestEnmeshedOrderOfChecks(t *testing.T) {
	e := newEnmeshedEnv(t)
	f, _ := e.upload(t, "alice", core.FileAttrs{Name: "a.txt"}, "hello")
	for _, tc := range []struct {
		name         string
		method, path string
		body         string
		header       map[string]string
		status       int
		code         string
	}{
		{"wrong method before accept", http.MethodPut, "/api/v2/Files", "", map[string]string{"Accept": "image/png"}, 405, codeMethodNotAllowed},
		{"accept before malformed id", http.MethodGet, "/api/v2/Files/x", "", map[string]string{"Accept": "text/html"}, 406, codeNotAcceptable},
		{"accept before bad body", http.MethodPost, "/api/v2/Files/x/Token", "{", map[string]string{"Accept": "text/html"}, 406, codeNotAcceptable},
		{"accept before bad query", http.MethodGet, "/api/v2/Files?nope=1", "", map[string]string{"Accept": "text/csv"}, 406, codeNotAcceptable},
		{"validation before existence", http.MethodPost, "/api/v2/Files/" + unknownFileID + "/Token", `{"expiresAt":"2000-01-01"}`, nil, 400, codeInvalidPropertyValue},
		{"first failure only", http.MethodPost, "/api/v2/Files/" + f.ID + "/Token", `{"expiresAt":"2000","ephemeral":"x"}`, nil, 400, codeInvalidPropertyValue},
		{"existence last", http.MethodPost, "/api/v2/Files/" + unknownFileID + "/Token", `{"expiresAt":"2099"}`, nil, 404, codeRecordNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantEnmeshedError(t, e.do(t, tc.method, tc.path, strings.NewReader(tc.body), tc.header), tc.status, tc.code, "")
		})
	}
	// The schema (ephemeral's type) is checked before expiresAt's value.
	r := e.do(t, http.MethodPost, "/api/v2/Files/"+f.ID+"/Token", strings.NewReader(`{"expiresAt":"2000","ephemeral":"x"}`), nil)
	wantEnmeshedError(t, r, 400, codeInvalidPropertyValue, "ephemeral must be boolean")
}

func TestNegotiate(t *testing.T) {
	json, both := []string{mediaJSON}, []string{mediaJSON, mediaPNG}
	for _, tc := range []struct {
		accept string
		offers []string
		want   string
	}{
		{"", both, mediaJSON},
		{"*/*", both, mediaJSON},
		{"image/png", both, mediaPNG},
		{"IMAGE/PNG", both, mediaPNG},
		{"image/*", both, mediaPNG},
		{"application/json", both, mediaJSON},
		{"image/png, application/json", both, mediaPNG},
		{"application/json, image/png", both, mediaJSON},
		{"image/png;q=0.5, application/json", both, mediaJSON},
		{"image/png, */*;q=0.1", both, mediaPNG},
		{"*/*, image/png;q=0", both, mediaJSON},
		{"text/html", both, ""},
		{"image/png", json, ""},
		{"application/json;q=0", json, ""},
		{"application/json;q=2", json, ""},
		{"application/*;q=0.3", json, mediaJSON},
		{"garbage", json, ""},
		{";;;,", json, ""},
	} {
		if got := negotiate(tc.accept, tc.offers); got != tc.want {
			t.Errorf("negotiate(%q, %v) = %q, want %q", tc.accept, tc.offers, got, tc.want)
		}
	}
}

func TestParseISO8601(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // "" means refused
	}{
		{"2099", "2099-01-01T00:00:00.000Z"},
		{"2099-03", "2099-03-01T00:00:00.000Z"},
		{"2099-03-04", "2099-03-04T00:00:00.000Z"},
		{"2099-03-04T05", "2099-03-04T05:00:00.000Z"},
		{"2099-03-04T05:06", "2099-03-04T05:06:00.000Z"},
		{"2099-03-04T05:06:07", "2099-03-04T05:06:07.000Z"},
		{"2099-03-04T05:06:07.8Z", "2099-03-04T05:06:07.800Z"},
		{"2099-03-04T05:06:07.123456789Z", "2099-03-04T05:06:07.123Z"},
		{"2099-03-04T05:06:07+02:00", "2099-03-04T03:06:07.000Z"},
		{"2099-03-04T05:06:07-0130", "2099-03-04T06:36:07.000Z"},
		{"2099-03-04T05:06+01", "2099-03-04T04:06:00.000Z"},
		{"", ""},
		{"tomorrow", ""},
		{"2099-13-01", ""},
		{"2099-02-30", ""},
		{" 2099", ""},
		{"2099-03-04 05:06:07", ""},
		{"99", ""},
	} {
		got, ok := parseISO8601(tc.in)
		switch {
		case tc.want == "" && ok:
			t.Errorf("parseISO8601(%q) = %v, want refused", tc.in, got)
		case tc.want != "" && (!ok || enmeshedTime(got) != tc.want):
			t.Errorf("parseISO8601(%q) = %v, %v, want %s", tc.in, enmeshedTime(got), ok, tc.want)
		}
	}
}

func TestEnmeshedDates(t *testing.T) {
	at := time.Date(2026, 2, 9, 11, 3, 27, 179_654_321, time.FixedZone("CET", 3600))
	if got := enmeshedTime(at); got != "2026-02-09T10:03:27.179Z" {
		t.Fatalf("enmeshedTime = %s", got)
	}
	if got := enmeshedExpiry(time.Time{}); got != "9999-12-31T00:00:00.000Z" {
		t.Fatalf("enmeshedExpiry(zero) = %s", got)
	}
}

func TestEnmeshedNotMountedWithoutService(t *testing.T) {
	e := newEnv(t) // /files/v1 only
	r := e.do(t, http.MethodGet, "/api/v2/Files", nil, map[string]string{"X-API-KEY": keyAlice})
	wantError(t, r, http.StatusNotFound, 16, "RESOURCE_UNKNOWN_EXCEPTION")
}

func TestEnmeshedMetricsAndLogsHoldNoIDsOrKeys(t *testing.T) {
	e := newEnmeshedEnv(t)
	f, _ := e.upload(t, "alice", core.FileAttrs{Name: "a.txt"}, "hello")
	e.do(t, http.MethodGet, "/api/v2/Files/"+f.ID, nil, nil)
	e.do(t, http.MethodGet, "/api/v2/Nothing/"+f.ID, nil, nil)
	if got := requestCount(t, e.reg, "/api/v2/Files/{id}", "200"); got != 1 {
		t.Fatalf("requests = %v, want 1", got)
	}
	if got := requestCount(t, e.reg, "/api/v2 (unmatched)", "404"); got != 1 {
		t.Fatalf("unmatched requests = %v, want 1", got)
	}
	families, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if strings.Contains(mf.String(), f.ID) {
			t.Fatalf("metric %s carries a file id", mf.GetName())
		}
	}
	if logs := e.logs.String(); strings.Contains(logs, f.ID) || strings.Contains(logs, keyAlice) {
		t.Fatalf("logs carry a path or key: %s", logs)
	}
}

func TestEnmeshedHeadFallsBackToGet(t *testing.T) {
	e := newEnmeshedEnv(t)
	f, _ := e.upload(t, "alice", core.FileAttrs{Name: "a.txt"}, "hello")
	r := e.do(t, http.MethodHead, "/api/v2/Files/"+f.ID+"/Download", nil, nil)
	if r.status != http.StatusOK || r.header.Get("Content-Length") != "5" || len(r.body) != 0 {
		t.Fatalf("HEAD = %d %v %q", r.status, r.header, r.body)
	}
}

func TestEnmeshedPanicAfterWriteIsReraised(t *testing.T) {
	// A panic after the answer started must abort the connection, not append an error envelope.
	api := &enmeshedAPI{svc: newStack(t).svc, log: slog.New(slog.DiscardHandler)}
	h := api.handler(enmeshedRoute{pattern: "/p", entity: "File", methods: map[string]enmeshedHandler{
		http.MethodGet: {nil, func(w http.ResponseWriter, _ *http.Request, _ core.Principal, _ string) error {
			w.WriteHeader(http.StatusOK)
			panic("late")
		}, false},
	}})
	req := httptest.NewRequest(http.MethodGet, "/p", nil)
	req.Header.Set("X-API-KEY", keyAlice)
	defer func() {
		if p := recover(); p != "late" {
			t.Fatalf("recovered %v, want the handler's panic re-raised", p)
		}
	}()
	h.ServeHTTP(httptest.NewRecorder(), req)
	t.Fatal("no panic")
}
