package httpapi

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/cairn-dev/cairn/core"
)

// Error codes of /api/v2. The first ones are the Connector's own; the last three have no Connector
// counterpart (the Connector never answers 503 or 507, and hides its 403s behind 400) and are
// cairn's, in the same naming scheme.
const (
	codeUnauthorized         = "error.connector.unauthorized"
	codeRouteDoesNotExist    = "error.connector.http.routeDoesNotExist"
	codeMethodNotAllowed     = "error.connector.http.methodNotAllowed"
	codeNotAcceptable        = "error.connector.http.notAcceptable"
	codeInvalidJSON          = "error.connector.validation.invalidJsonInPayload"
	codeUnexpected           = "error.connector.unexpected"
	codeInvalidPropertyValue = "error.runtime.validation.invalidPropertyValue"
	codeRecordNotFound       = "error.runtime.recordNotFound"
	codeNotOwnedByYou        = "error.runtime.files.notOwnedByYou"
	codeUnavailable          = "error.connector.unavailable"
	codeInsufficientStorage  = "error.connector.insufficientStorage"
)

// v2ErrorDocs is where each code is documented; the code, lower-cased, is the anchor.
const v2ErrorDocs = "https://enmeshed.eu/integrate/error-codes#"

// v2Error is one error of /api/v2: an HTTP status with the Connector's code and message. Messages
// are our own text, never client input, so they cannot echo a secret.
type v2Error struct {
	status  int
	code    string
	message string
}

func (e *v2Error) Error() string { return e.code + ": " + e.message }

// invalidProperty is the runtime's validation failure, the 400 of every malformed input.
func invalidProperty(msg string) *v2Error {
	return &v2Error{http.StatusBadRequest, codeInvalidPropertyValue, msg}
}

func errInvalidJSON() *v2Error {
	return &v2Error{http.StatusBadRequest, codeInvalidJSON, "The given payload is not a valid json object."}
}

func errRouteDoesNotExist() *v2Error {
	return &v2Error{http.StatusNotFound, codeRouteDoesNotExist, "The requested route does not exist."}
}

func errMethodNotAllowed() *v2Error {
	return &v2Error{http.StatusMethodNotAllowed, codeMethodNotAllowed,
		"The request method is not supported for the requested resource."}
}

func errNotAcceptable() *v2Error {
	return &v2Error{http.StatusNotAcceptable, codeNotAcceptable,
		"The requested resource is capable of generating only content not acceptable according to the Accept headers sent in the request."}
}

func errUnexpected() *v2Error {
	return &v2Error{http.StatusInternalServerError, codeUnexpected, "An unexpected error occurred."}
}

// errContentTooLarge is an upload over the cluster's maximum file size. The Connector has no code
// for it (its runtime validates the content), so it is the runtime's validation failure; the
// message states the limit.
func errContentTooLarge(err error) *v2Error {
	return invalidProperty("file content exceeds" + strings.TrimPrefix(tooLargeMessage(err), "the file exceeds"))
}

// v2ServerError is the /api/v2 answer to a panic, for the middleware's one panic handler.
func v2ServerError(w http.ResponseWriter) { writeV2Error(w, errUnexpected()) }

// v2ErrorFor is the one mapping from errors (core's sentinels, this package's request errors, the
// body limit) to /api/v2 errors. entity names the record of the route ("File", "Token").
func v2ErrorFor(err error, entity string) *v2Error {
	var (
		e        *v2Error
		form     *formError
		tooLarge *http.MaxBytesError
	)
	switch {
	case errors.As(err, &e):
		return e
	case errors.Is(err, core.ErrFileTooLarge), errors.As(err, &tooLarge):
		return errContentTooLarge(err)
	case errors.As(err, &form):
		return v2FormError(form)
	case errors.Is(err, core.ErrInvalidInput):
		msg := core.ErrInvalidInput.Error()
		if _, why, ok := strings.Cut(err.Error(), msg+": "); ok {
			msg = why
		}
		return invalidProperty(msg)
	case errors.Is(err, core.ErrUnauthenticated):
		return &v2Error{http.StatusUnauthorized, codeUnauthorized, "Unauthorized."}
	case errors.Is(err, core.ErrPermissionDenied):
		var missing *core.MissingPermissionError
		if errors.As(err, &missing) {
			return &v2Error{http.StatusForbidden, codeNotOwnedByYou, "The API key lacks the permission " + missing.Permission + "."}
		}
		return &v2Error{http.StatusForbidden, codeNotOwnedByYou, "Only the owner of the File can perform this action."}
	case errors.Is(err, core.ErrNotFound), errors.Is(err, core.ErrInvalidToken):
		return &v2Error{http.StatusNotFound, codeRecordNotFound,
			entity + " not found. Make sure the ID exists and the record is not expired."}
	case errors.Is(err, core.ErrUnavailable), errors.Is(err, core.ErrShuttingDown),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return &v2Error{http.StatusServiceUnavailable, codeUnavailable,
			"The cluster cannot serve the request now; retry later."}
	case errors.Is(err, core.ErrNoSpace):
		return &v2Error{http.StatusInsufficientStorage, codeInsufficientStorage, "The cluster is out of storage space."}
	default:
		return errUnexpected()
	}
}

// v2FormError words a problem of the shared upload form as the Connector's runtime does: every
// one is its validation failure.
func v2FormError(e *formError) *v2Error {
	switch e.problem {
	case formNotMultipart, formNoFile:
		return invalidProperty(msgContentRequired)
	case formRepeatedFile:
		return invalidProperty(msgOneFilePart)
	case formRepeatedField:
		return invalidProperty(e.part + " must be string")
	case formTooManyTags:
		return invalidProperty(fmt.Sprintf("tags must NOT have more than %d items", maxTags))
	default: // malformed, a field too long or not UTF-8: our own text
		return invalidProperty(e.detail)
	}
}

// v2ErrorBody is the Connector's error envelope.
type v2ErrorBody struct {
	Error v2ErrorJSON `json:"error"`
}

type v2ErrorJSON struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	ID      string `json:"id"`
	Time    string `json:"time"`
	Docs    string `json:"docs"`
}

// writeV2Error writes e in the envelope, with a fresh error id; 503 carries Retry-After.
func writeV2Error(w http.ResponseWriter, e *v2Error) {
	if e.status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, e.status, v2ErrorBody{v2ErrorJSON{
		Code:    e.code,
		Message: e.message,
		ID:      newErrorID(),
		Time:    v2Time(time.Now()),
		Docs:    v2ErrorDocs + strings.ToLower(e.code),
	}})
}

// newErrorID is "ERR" and 17 random alphanumerics (rand.Text draws from A-Z and 2-7).
func newErrorID() string { return fmt.Sprintf("ERR%.17s", rand.Text()) }
