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

// Error codes of /api/v2. The first ones are the Connector's own; the last five have no Connector
// counterpart (the Connector never answers 412, 416, 503 or 507, and hides its 403s behind 400)
// and are cairn's, in the same naming scheme.
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
	codeRangeNotSatisfiable  = "error.connector.http.rangeNotSatisfiable"
	codePreconditionFailed   = "error.connector.http.preconditionFailed"
)

// enmeshedErrorDocs is where each code is documented; the code, lower-cased, is the anchor.
const enmeshedErrorDocs = "https://enmeshed.eu/integrate/error-codes#"

// enmeshedError is one error of /api/v2: an HTTP status with the Connector's code and message. Messages
// are our own text, never client input, so they cannot echo a secret.
type enmeshedError struct {
	status  int
	code    string
	message string
}

func (e *enmeshedError) Error() string { return e.code + ": " + e.message }

// invalidProperty is the runtime's validation failure, the 400 of every malformed input.
func invalidProperty(msg string) *enmeshedError {
	return &enmeshedError{http.StatusBadRequest, codeInvalidPropertyValue, msg}
}

func errInvalidJSON() *enmeshedError {
	return &enmeshedError{http.StatusBadRequest, codeInvalidJSON, "The given payload is not a valid json object."}
}

func errRouteDoesNotExist() *enmeshedError {
	return &enmeshedError{http.StatusNotFound, codeRouteDoesNotExist, "The requested route does not exist."}
}

func errMethodNotAllowed() *enmeshedError {
	return &enmeshedError{http.StatusMethodNotAllowed, codeMethodNotAllowed,
		"The request method is not supported for the requested resource."}
}

func errNotAcceptable() *enmeshedError {
	return &enmeshedError{http.StatusNotAcceptable, codeNotAcceptable,
		"The requested resource is capable of generating only content not acceptable according to the Accept headers sent in the request."}
}

func errUnexpected() *enmeshedError {
	return &enmeshedError{http.StatusInternalServerError, codeUnexpected, "An unexpected error occurred."}
}

// errContentTooLarge is an upload over the cluster's maximum file size. The Connector has no code
// for it (its runtime validates the content), so it is the runtime's validation failure; the
// message states the limit.
func errContentTooLarge(err error) *enmeshedError {
	return invalidProperty("file content exceeds" + strings.TrimPrefix(tooLargeMessage(err), "the file exceeds"))
}

// enmeshedServerError is the /api/v2 answer to a panic, for the middleware's one panic handler.
func enmeshedServerError(w http.ResponseWriter) { writeEnmeshedError(w, errUnexpected()) }

// enmeshedErrorFor is the one mapping from errors (core's sentinels, this package's request errors, the
// body limit) to /api/v2 errors. entity names the record of the route ("File", "Token").
func enmeshedErrorFor(err error, entity string) *enmeshedError {
	var (
		e        *enmeshedError
		form     *formError
		tooLarge *http.MaxBytesError
		refused  *downloadRefusedError
	)
	switch {
	case errors.As(err, &e):
		return e
	case errors.As(err, &refused) && refused.status == http.StatusPreconditionFailed:
		return &enmeshedError{http.StatusPreconditionFailed, codePreconditionFailed,
			"A precondition of the request (If-Match, If-Unmodified-Since) does not hold."}
	case errors.As(err, &refused):
		return &enmeshedError{http.StatusRequestedRangeNotSatisfiable, codeRangeNotSatisfiable,
			"The requested range is not satisfiable."}
	case errors.Is(err, core.ErrFileTooLarge), errors.As(err, &tooLarge):
		return errContentTooLarge(err)
	case errors.As(err, &form):
		return enmeshedFormError(form)
	case errors.Is(err, core.ErrInvalidInput):
		msg := core.ErrInvalidInput.Error()
		if _, why, ok := strings.Cut(err.Error(), msg+": "); ok {
			msg = why
		}
		return invalidProperty(msg)
	case errors.Is(err, core.ErrUnauthenticated):
		return &enmeshedError{http.StatusUnauthorized, codeUnauthorized, "Unauthorized."}
	case errors.Is(err, core.ErrPermissionDenied):
		var missing *core.MissingPermissionError
		if errors.As(err, &missing) {
			return &enmeshedError{http.StatusForbidden, codeNotOwnedByYou, "The API key lacks the permission " + missing.Permission + "."}
		}
		return &enmeshedError{http.StatusForbidden, codeNotOwnedByYou, "Only the owner of the File can perform this action."}
	case errors.Is(err, core.ErrNotFound), errors.Is(err, core.ErrInvalidToken):
		return &enmeshedError{http.StatusNotFound, codeRecordNotFound,
			entity + " not found. Make sure the ID exists and the record is not expired."}
	case errors.Is(err, core.ErrUnavailable), errors.Is(err, core.ErrShuttingDown),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return &enmeshedError{http.StatusServiceUnavailable, codeUnavailable,
			"The cluster cannot serve the request now; retry later."}
	case errors.Is(err, core.ErrNoSpace):
		return &enmeshedError{http.StatusInsufficientStorage, codeInsufficientStorage, "The cluster is out of storage space."}
	default:
		return errUnexpected()
	}
}

// enmeshedFormError words a problem of the shared upload form as the Connector's runtime does: every
// one is its validation failure.
func enmeshedFormError(e *formError) *enmeshedError {
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

// enmeshedErrorBody is the Connector's error envelope.
type enmeshedErrorBody struct {
	Error enmeshedErrorJSON `json:"error"`
}

type enmeshedErrorJSON struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	ID      string `json:"id"`
	Time    string `json:"time"`
	Docs    string `json:"docs"`
}

// writeEnmeshedError writes e in the envelope, with a fresh error id; 503 carries Retry-After.
func writeEnmeshedError(w http.ResponseWriter, e *enmeshedError) {
	if e.status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, e.status, enmeshedErrorBody{enmeshedErrorJSON{
		Code:    e.code,
		Message: e.message,
		ID:      newErrorID(),
		Time:    enmeshedTime(time.Now()),
		Docs:    enmeshedErrorDocs + strings.ToLower(e.code),
	}})
}

// newErrorID is "ERR" and 17 random alphanumerics (rand.Text draws from A-Z and 2-7).
func newErrorID() string { return fmt.Sprintf("ERR%.17s", rand.Text()) }
