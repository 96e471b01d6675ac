package httpapi

import (
	"context"
	"log/slog"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cairn-dev/cairn/core"
)

// EnmeshedService is what /api/v2 needs from the use cases.
type EnmeshedService interface {
	Authenticate(ctx context.Context, apiKey string) (core.Principal, error) // core.ErrUnauthenticated
	// AuthenticateUnconfirmed resolves the key without a read index, for a route whose use case has
	// the FSM check it at apply (keyAtApply); core refuses such a principal everywhere else.
	AuthenticateUnconfirmed(ctx context.Context, apiKey string) (core.Principal, error)
	MaxFileSize() int64
	BeginUpload(ctx context.Context, p core.Principal) (core.Upload, error) // as on /files/v1
	// FileByID returns the file when p may see it (p created it, or p has VIEW_FILES); otherwise,
	// and for unknown or expired files, core.ErrNotFound.
	FileByID(ctx context.Context, p core.Principal, id string) (core.FileInfo, error)
	// ScanFiles calls fn with the files p may see (ownOnly: only those p created), unfiltered, in
	// creation order (CreatedAt, then id).
	ScanFiles(ctx context.Context, p core.Principal, ownOnly bool, fn func(core.FileInfo) bool) error
	OpenFileByID(ctx context.Context, p core.Principal, id string) (core.FileInfo, core.Content, error)
	DeleteFileByID(ctx context.Context, p core.Principal, id string) error
	// CreateTokenByID issues a read token for the file. expiresAt zero means "the file's own expiry".
	// core.TokenEphemeral: signed and not stored (no Raft write). core.ErrNotFound when the
	// file is not visible; core.ErrInvalidInput (wrapped, message says why) e.g. for a past expiry.
	CreateTokenByID(ctx context.Context, p core.Principal, fileID string, expiresAt time.Time, kind core.TokenKind) (core.TokenInfo, error)
	// TokenByID returns a persisted token visible to p (p created it or has VIEW_FILES); ephemeral or
	// unknown ids -> core.ErrNotFound.
	TokenByID(ctx context.Context, p core.Principal, id string) (core.TokenInfo, error)
	// FileReference returns a shareable read reference to a file p may see (FileDTO's
	// truncatedReference): a capability that works as a read token on /files/v1.
	FileReference(f core.FileInfo) (string, error)
}

// Media types /api/v2 answers with.
const (
	mediaJSON = "application/json"
	mediaPNG  = "image/png"
)

// enmeshedAPI is the enmeshed Connector-compatible /api/v2 front-end.
type enmeshedAPI struct {
	svc       EnmeshedService
	log       *slog.Logger
	bounds    *uploadBounds // shared with /files/v1: one cap per node
	downloads *downloadBounds
}

// enmeshedHandler serves one method of one route. It runs after authentication and content negotiation
// and returns an error only while nothing has been written, so that the error becomes an envelope.
type enmeshedHandler struct {
	produces []string // media types it can answer with, preferred first; nil: not negotiated
	serve    func(w http.ResponseWriter, r *http.Request, p core.Principal, mediaType string) error
	// keyAtApply: the use case takes a principal whose key core resolved without a read index
	// (core.Service.AuthenticateUnconfirmed) and has the FSM check the key at apply.
	keyAtApply bool
}

// enmeshedRoute is one path pattern of /api/v2. entity names the record in "not found" messages.
type enmeshedRoute struct {
	pattern string
	entity  string
	methods map[string]enmeshedHandler
}

func (a *enmeshedAPI) routes() []enmeshedRoute {
	json := []string{mediaJSON}
	return []enmeshedRoute{
		{"/api/v2/Files", "File", map[string]enmeshedHandler{
			http.MethodGet: {json, a.listFiles(false), false}}},
		// The literal "Own" outranks {id} in http.ServeMux, as the contract asks.
		{"/api/v2/Files/Own", "File", map[string]enmeshedHandler{
			http.MethodGet:  {json, a.listFiles(true), false},
			http.MethodPost: {json, a.upload, false}}},
		// Accept: image/png on a file or token answers a QR code of its reference, as the SDK's
		// getQrCodeForFile and getQrCodeForToken ask.
		{"/api/v2/Files/{id}", "File", map[string]enmeshedHandler{
			http.MethodGet:    {[]string{mediaJSON, mediaPNG}, a.getFile, false},
			http.MethodDelete: {nil, a.deleteFile, false}}},
		// A download answers with the file's own type, whatever the client accepts: a 406 here
		// would only break clients that send a narrow Accept for a file they know.
		{"/api/v2/Files/{id}/Download", "File", map[string]enmeshedHandler{
			http.MethodGet: {nil, a.download, false}}},
		{"/api/v2/Files/{id}/Token", "File", map[string]enmeshedHandler{
			http.MethodPost: {[]string{mediaJSON, mediaPNG}, a.createToken, true}}},
		{"/api/v2/Tokens/{id}", "Token", map[string]enmeshedHandler{
			http.MethodGet: {[]string{mediaJSON, mediaPNG}, a.getToken, false}}},
	}
}

// mount registers /api/v2 on mux behind the shared middleware. Everything under /api/v2 that no
// route matches is the Connector's routeDoesNotExist, in this front-end's envelope; mount returns
// that handler for the paths the mux never routes (uncleanPathRouter).
func (a *enmeshedAPI) mount(mux *http.ServeMux, mw *middleware) http.Handler {
	for _, rt := range a.routes() {
		mux.Handle(rt.pattern, mw.wrap(rt.pattern, a.handler(rt), enmeshedServerError))
	}
	unmatched := mw.wrap("/api/v2 (unmatched)", a.handler(enmeshedRoute{}), enmeshedServerError)
	mux.Handle("/api/v2/", unmatched)
	mux.Handle("/api/v2", unmatched)
	return unmatched
}

// handler runs the checks in the contract's order: auth (401), route and method (404/405), Accept
// (406); the route's handler then validates (400) before it looks anything up (404).
func (a *enmeshedAPI) handler(rt enmeshedRoute) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, ok := rt.methods[r.Method]
		if !ok && r.Method == http.MethodHead {
			h, ok = rt.methods[http.MethodGet]
		}
		var auth authenticator = a.svc
		if ok && h.keyAtApply {
			auth = unconfirmedAuthenticator{a.svc}
		}
		p, err := keyPrincipal(r, auth) // every route, even an unknown one, needs a valid key, as on the Connector
		if err != nil {
			a.fail(w, r, rt, err)
			return
		}
		if rt.methods == nil {
			a.fail(w, r, rt, errRouteDoesNotExist())
			return
		}
		if !ok {
			w.Header().Set("Allow", allowedMethods(rt.methods))
			a.fail(w, r, rt, errMethodNotAllowed())
			return
		}
		var mediaType string
		if h.produces != nil {
			if mediaType = negotiate(r.Header.Get("Accept"), h.produces); mediaType == "" {
				a.fail(w, r, rt, errNotAcceptable())
				return
			}
		}
		if err := h.serve(w, r, p, mediaType); err != nil {
			a.fail(w, r, rt, err)
		}
	})
}

// fail answers err as an error envelope. Unexpected errors are logged with the API key blanked out.
// unconfirmedAuthenticator authenticates without a read index, for keyAtApply routes.
type unconfirmedAuthenticator struct{ svc EnmeshedService }

func (u unconfirmedAuthenticator) Authenticate(ctx context.Context, apiKey string) (core.Principal, error) {
	return u.svc.AuthenticateUnconfirmed(ctx, apiKey)
}

func (a *enmeshedAPI) fail(w http.ResponseWriter, r *http.Request, rt enmeshedRoute, err error) {
	e := enmeshedErrorFor(err, rt.entity)
	if e.status >= http.StatusInternalServerError {
		key, _ := apiKey(r)
		a.log.LogAttrs(r.Context(), failureLevel(r, e.status), "api/v2 request failed",
			slog.String("route", rt.pattern), slog.Int("status", e.status),
			slog.String("error", redact(err.Error(), key)))
	}
	writeEnmeshedError(w, e)
}

// allowedMethods is the Allow header of a 405: the route's methods, HEAD wherever GET is.
func allowedMethods(methods map[string]enmeshedHandler) string {
	var out []string
	for m := range methods {
		out = append(out, m)
		if m == http.MethodGet {
			out = append(out, http.MethodHead)
		}
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

// negotiate picks what to answer from offers (the server's preference order) given an Accept
// header, as the Connector's negotiator does: highest q wins, then the more specific matching
// range, then the range listed first by the client, then the server's order. No header means the
// first offer; "" means nothing acceptable. (goautoneg, in go.mod via Prometheus, accepts q=0.)
func negotiate(accept string, offers []string) string {
	if strings.TrimSpace(accept) == "" {
		return offers[0]
	}
	type rank struct {
		q           float64
		specificity int
		clause      int
	}
	best, bestRank := "", rank{}
	for _, offer := range offers {
		typ, sub, _ := strings.Cut(offer, "/")
		var r rank
		found := false
		for i, clause := range strings.Split(accept, ",") {
			mt, params, err := mime.ParseMediaType(clause)
			if err != nil {
				continue
			}
			ctyp, csub, _ := strings.Cut(mt, "/")
			var spec int
			switch {
			case ctyp == typ && csub == sub:
				spec = 2
			case ctyp == typ && csub == "*":
				spec = 1
			case mt == "*/*" || mt == "*":
				spec = 0
			default:
				continue
			}
			q := parseQ(params["q"])
			if !found || spec > r.specificity {
				r, found = rank{q, spec, i}, true
			}
		}
		if !found || r.q <= 0 {
			continue
		}
		if best == "" || r.q > bestRank.q ||
			(r.q == bestRank.q && (r.specificity > bestRank.specificity ||
				(r.specificity == bestRank.specificity && r.clause < bestRank.clause))) {
			best, bestRank = offer, r
		}
	}
	return best
}

// parseQ reads a quality value; absent means 1, malformed or out of range means 0 (not acceptable).
func parseQ(s string) float64 {
	if s == "" {
		return 1
	}
	q, err := strconv.ParseFloat(s, 64)
	if err != nil || q < 0 || q > 1 {
		return 0
	}
	return q
}
