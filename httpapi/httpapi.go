package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairn-dev/cairn/core"
)

// FilesV1Service is what /files/v1 (and its admin listing and settings) needs from the use
// cases; *core.Service implements it.
type FilesV1Service interface {
	Authenticate(ctx context.Context, apiKey string) (core.Principal, error) // core.ErrUnauthenticated
	AuthorizeUpload(p core.Principal) error                                  // core.ErrUnauthenticated
	MaxFileSize() int64
	BeginUpload(ctx context.Context, p core.Principal) (core.Upload, error)
	// Details resolves the token (linearizably). tokens lists all of the file's persisted tokens when
	// the presented token is full, nil for a read token.
	Details(ctx context.Context, token string) (file core.FileInfo, presented core.TokenInfo, tokens []core.TokenInfo, err error)
	OpenFile(ctx context.Context, token string) (core.FileInfo, core.Content, error)
	DeleteFile(ctx context.Context, token string) error
	CreateToken(ctx context.Context, token string, access core.AccessLevel, expiresAt time.Time) (core.TokenInfo, error)
	DeleteToken(ctx context.Context, token, tokenToDelete string) error
	// Settings and UpdateSettings need VIEW_/UPDATE_FILE_SERVICE_SETTINGS; CurrentSettings is the
	// local, unchecked read that downloads use.
	Settings(ctx context.Context, p core.Principal) (core.Settings, error)
	UpdateSettings(ctx context.Context, p core.Principal, patch core.SettingsPatch) (core.Settings, error)
	CurrentSettings() core.Settings
	// ScanFilesWithTokens calls fn with every live file and its tokens (needs VIEW_FILES).
	ScanFilesWithTokens(ctx context.Context, p core.Principal, fn func(core.FileListing) bool) error
}

// OpsService feeds the ops endpoints.
type OpsService interface {
	Status(ctx context.Context) Status
	Ready(ctx context.Context) error // nil when this node can serve; otherwise why not
}

// Config is everything New needs. FilesV1, Ops and Registry are required; a nil Logger discards logs.
type Config struct {
	FilesV1  FilesV1Service
	Ops      OpsService
	Registry *prometheus.Registry // per node; New registers its collectors on it and serves it at /metrics
	Logger   *slog.Logger
	// Enmeshed serves the enmeshed Connector-compatible /api/v2; nil leaves /api/v2 unmounted.
	Enmeshed EnmeshedService
	// Admin serves cairn's administration routes (/v1/apikeys, /v1/signing-key/rotate); nil
	// leaves them unmounted.
	Admin AdminService
	// MaxConcurrentUploads caps the uploads this node receives at once, on both APIs together;
	// the next one answers 503 with Retry-After. 0: no cap.
	MaxConcurrentUploads int
	// UploadIdleTimeout aborts an upload whose body sends nothing for this long, and bounds every
	// other request body the same way (a token, settings or admin body, a snapshot). 0: no deadline.
	UploadIdleTimeout time.Duration
	// DownloadStallTimeout aborts a download whose client accepts no downloadWriteChunk bytes for
	// this long, so a client that stops reading cannot pin the request and its shard streams on
	// k nodes for as long as its connection lives. 0: no deadline.
	DownloadStallTimeout time.Duration
	// Debug serves GET /v1/config (MANAGE_CLUSTER); nil leaves it unmounted.
	Debug DebugService
	// EnablePprof mounts /debug/pprof (MANAGE_CLUSTER) next to Debug's routes (--enable-debug).
	EnablePprof bool
	// Snapshots serves /v1/snapshot (admin_snapshot.go); it needs Admin for authentication. nil
	// leaves the snapshot routes unmounted.
	Snapshots SnapshotService
}

// route is one path pattern with a handler per method. Dispatching on the method ourselves (rather
// than with "GET /x" patterns) is what lets a wrong method answer 404 code 16 like the reference
// service instead of the mux's 405.
type route struct {
	pattern string // http.ServeMux pattern, without a method
	label   string // the metric and log label; never the raw path, which may hold a token
	methods map[string]http.HandlerFunc
}

// New builds the public HTTP handler of one node: /files/v1, /api/v2 (when Config.Enmeshed is set),
// the ops endpoints and the middleware around them.
func New(cfg Config) (http.Handler, error) {
	switch {
	case cfg.FilesV1 == nil:
		return nil, errors.New("httpapi: Config.FilesV1 is required")
	case cfg.Ops == nil:
		return nil, errors.New("httpapi: Config.Ops is required")
	case cfg.Registry == nil:
		return nil, errors.New("httpapi: Config.Registry is required")
	case cfg.MaxConcurrentUploads < 0 || cfg.UploadIdleTimeout < 0 || cfg.DownloadStallTimeout < 0:
		return nil, errors.New("httpapi: MaxConcurrentUploads, UploadIdleTimeout and DownloadStallTimeout must not be negative")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m, err := newHTTPMetrics(cfg.Registry)
	if err != nil {
		return nil, err
	}
	mw := &middleware{log: logger, metrics: m, bodyIdle: cfg.UploadIdleTimeout}
	bounds, err := newUploadBounds(cfg.Registry, cfg.MaxConcurrentUploads, cfg.UploadIdleTimeout)
	if err != nil {
		return nil, err
	}
	downloads, err := newDownloadBounds(cfg.Registry, cfg.DownloadStallTimeout)
	if err != nil {
		return nil, err
	}
	filesV1 := &filesV1API{files: cfg.FilesV1, log: logger, bounds: bounds, downloads: downloads}
	ops := &opsHandlers{ops: cfg.Ops, registry: cfg.Registry}

	routes := append(filesV1.routes(), ops.routes()...)
	if cfg.Admin != nil {
		admin := &adminAPI{admin: cfg.Admin, filesV1: filesV1, log: logger}
		routes = append(routes, admin.routes()...)
		if cfg.Snapshots != nil {
			routes = append(routes, (&snapshotAPI{admin: admin, snapshots: cfg.Snapshots}).routes()...)
		}
	}
	if cfg.Debug != nil {
		routes = append(routes, (&debugAPI{debug: cfg.Debug, filesV1: filesV1, pprofs: cfg.EnablePprof}).routes()...)
	}
	mux := http.NewServeMux()
	for _, rt := range routes {
		mux.Handle(rt.pattern, mw.wrap(rt.label, dispatch(rt.methods), filesV1ServerError))
	}
	var enmeshedUnmatched http.Handler
	if cfg.Enmeshed != nil {
		enmeshedUnmatched = (&enmeshedAPI{svc: cfg.Enmeshed, log: logger, bounds: bounds, downloads: downloads}).mount(mux, mw)
	}
	// Everything else, including paths the patterns above do not match, is the reference service's
	// "unknown resource".
	unmatched := mw.wrap("unmatched", http.HandlerFunc(notFound), filesV1ServerError)
	mux.Handle("/", unmatched)
	return &uncleanPathRouter{mux: mux, filesV1Unmatched: unmatched, enmeshedUnmatched: enmeshedUnmatched}, nil
}

// uncleanPathRouter answers a path that http.ServeMux would redirect (one with "//", or a "." or
// ".." segment) as an unknown route of the front-end its cleaned form falls under, and hands
// every other request to the mux. The mux's 301 with an HTML body came before any of our
// handlers: the contracts have no redirects (the Extra Horizon SDK follows none), /api/v2 checks
// the API key before routing and answers every error in its envelope, and a client that built
// such a path has a bug that a 404 shows, where following a redirect would hide it. The path is
// not served as its cleaned form either: it holds bearer tokens, and one spelling per resource
// keeps what logs, metrics and caches see simple.
type uncleanPathRouter struct {
	mux               *http.ServeMux
	filesV1Unmatched  http.Handler
	enmeshedUnmatched http.Handler // nil when /api/v2 is not mounted
}

func (u *uncleanPathRouter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	escaped := r.URL.EscapedPath() // as the mux sees it: a token's %2F is not a separator
	clean := cleanPath(escaped)
	switch {
	case clean == escaped:
		u.mux.ServeHTTP(w, r)
	case u.enmeshedUnmatched != nil && (clean == "/api/v2" || strings.HasPrefix(clean, "/api/v2/")):
		u.enmeshedUnmatched.ServeHTTP(w, r)
	default:
		u.filesV1Unmatched.ServeHTTP(w, r)
	}
}

// cleanPath is the path http.ServeMux routes a request by (its own cleanPath, which it does not
// export, applied to the escaped path): rooted, path.Clean'ed, with a trailing slash kept. When it
// differs from the request's path the mux redirects.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	cleaned := path.Clean(p)
	if p[len(p)-1] == '/' && cleaned != "/" {
		cleaned += "/"
	}
	return cleaned
}

// dispatch picks the handler for the request's method; HEAD falls back to GET, whose body the server
// discards.
func dispatch(methods map[string]http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, ok := methods[r.Method]
		if !ok && r.Method == http.MethodHead {
			h, ok = methods[http.MethodGet]
		}
		if !ok {
			notFound(w, r)
			return
		}
		h(w, r)
	})
}
