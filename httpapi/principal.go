package httpapi

import (
	"context"
	"net/http"
	"strings"

	"github.com/cairn-dev/cairn/core"
)

// authenticator resolves an API key; every front-end's service has it.
type authenticator interface {
	Authenticate(ctx context.Context, apiKey string) (core.Principal, error) // core.ErrUnauthenticated
}

// apiKey returns the caller's API key (Authorization: Bearer, else X-API-KEY) and whether one was
// presented at all. A presented but empty or non-Bearer Authorization header still counts as
// presented: it must fail, not fall back to anonymous.
func apiKey(r *http.Request) (string, bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, key, _ := strings.Cut(h, " ")
		if !strings.EqualFold(scheme, "Bearer") {
			return "", true
		}
		return strings.TrimSpace(key), true
	}
	if vals, ok := r.Header["X-Api-Key"]; ok {
		return strings.TrimSpace(vals[0]), true
	}
	return "", false
}

// principal is the one resolver of the caller for every route of both front-ends: the principal
// of the API key r presents, or core.Anonymous when it presents none. A key that is presented is
// checked even where anonymous callers would do, so a typo in a key never silently acts
// anonymously. What Anonymous may do is core's rule (core.Service.AuthorizeUpload; it holds no
// permission).
func principal(r *http.Request, auth authenticator) (core.Principal, error) {
	key, presented := apiKey(r)
	if !presented {
		return core.Anonymous, nil
	}
	return auth.Authenticate(r.Context(), key) // an empty key is core.ErrUnauthenticated
}

// keyPrincipal is principal for routes that need an API key: Anonymous is refused at once with
// core.ErrUnauthenticated, before anything else is asked of core.
func keyPrincipal(r *http.Request, auth authenticator) (core.Principal, error) {
	p, err := principal(r, auth)
	if err == nil && p.Anonymous {
		return core.Principal{}, core.ErrUnauthenticated
	}
	return p, err
}
