package httpapi

import (
	"context"
	"net/http"
	"net/http/pprof"

	"github.com/cairn-dev/cairn/core"
)

// DebugService is what the debugging routes need; node implements it over *core.Service and its
// configuration.
type DebugService interface {
	Authenticate(ctx context.Context, apiKey string) (core.Principal, error)
	// Authorize is nil when p holds perm, core.ErrUnauthenticated or a core.MissingPermissionError
	// otherwise.
	Authorize(p core.Principal, perm string) error
	// Config is the node's configuration with its secrets redacted.
	Config() map[string]any
}

// debugAPI serves the routes an operator debugs a node with, all behind MANAGE_CLUSTER and in the
// /files/v1 error format: GET /v1/config (the redacted configuration) always, and /debug/pprof/…
// (net/http/pprof) only when the node runs with --enable-debug. Profiles expose memory contents
// and cost CPU, so they are off by default and never anonymous.
type debugAPI struct {
	debug   DebugService
	filesV1 *filesV1API // for its error writer
	pprofs  bool
}

func (d *debugAPI) routes() []route {
	rs := []route{{"/v1/config", "/v1/config", map[string]http.HandlerFunc{http.MethodGet: d.guard(d.config)}}}
	if !d.pprofs {
		return rs
	}
	// pprof.Index serves every named profile (goroutine, heap, allocs, block, mutex, threadcreate)
	// under /debug/pprof/{name}, all under the one metric label "/debug/pprof/"; the other four are
	// their own handlers, as in net/http/pprof's init (which registers on DefaultServeMux, unused here).
	return append(rs,
		route{"/debug/pprof/", "/debug/pprof/", map[string]http.HandlerFunc{http.MethodGet: d.guard(pprof.Index)}},
		route{"/debug/pprof/cmdline", "/debug/pprof/cmdline", map[string]http.HandlerFunc{http.MethodGet: d.guard(pprof.Cmdline)}},
		route{"/debug/pprof/profile", "/debug/pprof/profile", map[string]http.HandlerFunc{http.MethodGet: d.guard(pprof.Profile)}},
		route{"/debug/pprof/symbol", "/debug/pprof/symbol", map[string]http.HandlerFunc{
			http.MethodGet: d.guard(pprof.Symbol), http.MethodPost: d.guard(pprof.Symbol)}},
		route{"/debug/pprof/trace", "/debug/pprof/trace", map[string]http.HandlerFunc{http.MethodGet: d.guard(pprof.Trace)}},
	)
}

// guard lets a request through only with an API key that holds MANAGE_CLUSTER.
func (d *debugAPI) guard(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := keyPrincipal(r, d.debug)
		if err == nil {
			err = d.debug.Authorize(p, core.PermManageCluster)
		}
		if err != nil {
			d.filesV1.fail(w, r, err)
			return
		}
		h(w, r)
	}
}

func (d *debugAPI) config(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, d.debug.Config())
}
