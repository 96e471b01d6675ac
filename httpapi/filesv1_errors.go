package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/cairn-dev/cairn/core"
)

// filesV1Error is one error in the /files/v1 wire format: {"code","name","message"}. The SDK picks its
// error class from code alone, so code and HTTP status always travel together.
type filesV1Error struct {
	status  int
	Code    int    `json:"code"`
	Name    string `json:"name"`
	Message string `json:"message"`
}

func (e *filesV1Error) Error() string { return e.Name + ": " + e.Message }

// Request-format errors found by this package while parsing. Messages are fixed or built from our
// own text only, never from client input, so they cannot echo a secret.
func errEmptyBody(msg string) error {
	return &filesV1Error{http.StatusBadRequest, 13, "EMPTY_BODY_EXCEPTION", msg}
}

func errFieldFormat(msg string) error {
	return &filesV1Error{http.StatusBadRequest, 15, "FIELD_FORMAT_EXCEPTION", msg}
}

func errBodyFormat(msg string) error {
	return &filesV1Error{http.StatusBadRequest, 22, "BODY_FORMAT_EXCEPTION", msg}
}

func errResourceUnknown() *filesV1Error {
	return &filesV1Error{http.StatusNotFound, 16, "RESOURCE_UNKNOWN_EXCEPTION", "the requested resource does not exist"}
}

func errServer() *filesV1Error {
	return &filesV1Error{http.StatusInternalServerError, 1, "SERVER_EXCEPTION", "an unexpected error occurred"}
}

// filesV1ErrorFor is the one mapping from errors (core's sentinels, this package's request errors, the
// body limit) to the /files/v1 wire format. Messages are fixed per code because a wrapped error's text
// may carry a token.
func filesV1ErrorFor(err error) *filesV1Error {
	var (
		ve       *filesV1Error
		form     *formError
		tooLarge *http.MaxBytesError
		refused  *downloadRefusedError
	)
	switch {
	case errors.As(err, &ve):
		return ve
	case errors.As(err, &refused) && refused.status == http.StatusPreconditionFailed:
		return &filesV1Error{http.StatusPreconditionFailed, 1, "PRECONDITION_FAILED_EXCEPTION", refused.Error()}
	case errors.As(err, &refused):
		return &filesV1Error{http.StatusRequestedRangeNotSatisfiable, 1, "RANGE_NOT_SATISFIABLE_EXCEPTION", refused.Error()}
	case errors.As(err, &form):
		return filesV1FormError(form)
	case errors.Is(err, core.ErrInvalidToken):
		return &filesV1Error{http.StatusBadRequest, 2605, "INVALID_TOKEN_EXCEPTION", "the token is invalid"}
	case errors.Is(err, core.ErrReadOnlyToken):
		return &filesV1Error{http.StatusUnauthorized, 2606, "UNAUTHORIZED_TOKEN_EXCEPTION", "the token does not grant full access"}
	case errors.Is(err, core.ErrLastFullToken):
		return &filesV1Error{http.StatusForbidden, 2607, "TOKEN_NOT_DELETEABLE_EXCEPTION", "the last full token of a file cannot be deleted"}
	case errors.Is(err, core.ErrFileTooLarge), errors.As(err, &tooLarge):
		return &filesV1Error{http.StatusBadRequest, 2610, "FILE_TOO_LARGE_EXCEPTION", tooLargeMessage(err)}
	case errors.Is(err, core.ErrUnauthenticated):
		return &filesV1Error{http.StatusUnauthorized, 104, "USER_NOT_AUTHENTICATED_EXCEPTION", "a valid API key is required"}
	case errors.Is(err, core.ErrPermissionDenied):
		msg := "the principal lacks the required permission"
		var missing *core.MissingPermissionError
		if errors.As(err, &missing) {
			msg += " " + missing.Permission
		}
		return &filesV1Error{http.StatusUnauthorized, 10, "NO_PERMISSION_EXCEPTION", msg}
	case errors.Is(err, core.ErrNotFound):
		return errResourceUnknown()
	case errors.Is(err, core.ErrInvalidInput):
		// core's validation messages name a field and never carry a secret.
		return &filesV1Error{http.StatusBadRequest, 15, "FIELD_FORMAT_EXCEPTION", strings.TrimPrefix(err.Error(), core.ErrInvalidInput.Error()+": ")}
	case errors.Is(err, core.ErrUnavailable), errors.Is(err, core.ErrShuttingDown),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return &filesV1Error{http.StatusServiceUnavailable, 1, "SERVICE_UNAVAILABLE_EXCEPTION", "the cluster cannot serve the request now; retry later"}
	case errors.Is(err, core.ErrConflict):
		return &filesV1Error{http.StatusConflict, 1, "CONFLICT_EXCEPTION", strings.TrimPrefix(err.Error(), core.ErrConflict.Error()+": ")}
	case errors.Is(err, core.ErrNoSpace):
		return &filesV1Error{http.StatusInsufficientStorage, 1, "INSUFFICIENT_STORAGE_EXCEPTION", "the cluster is out of storage space"}
	default:
		return errServer()
	}
}

// filesV1FormError words a problem of the shared upload form as the contract does.
func filesV1FormError(e *formError) *filesV1Error {
	switch e.problem {
	case formFieldInvalid:
		return &filesV1Error{http.StatusBadRequest, 15, "FIELD_FORMAT_EXCEPTION", e.detail}
	case formTooManyTags:
		return &filesV1Error{http.StatusBadRequest, 15, "FIELD_FORMAT_EXCEPTION", fmt.Sprintf("an upload has at most %d tags", maxTags)}
	case formNoFile:
		return &filesV1Error{http.StatusBadRequest, 14, "MISSING_REQUIRED_FIELDS_EXCEPTION", "the upload has no file part"}
	default: // not multipart, malformed, a repeated file or name part
		return &filesV1Error{http.StatusBadRequest, 22, "BODY_FORMAT_EXCEPTION", e.detail}
	}
}

// writeFilesV1Error writes e in the /files/v1 shape; 503 carries Retry-After as the contract asks.
func writeFilesV1Error(w http.ResponseWriter, e *filesV1Error) {
	if e.status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, e.status, e)
}

// filesV1ServerError is the /files/v1 answer to a panic (and the admin and ops routes'), for the
// middleware's one panic handler.
func filesV1ServerError(w http.ResponseWriter) { writeFilesV1Error(w, errServer()) }

// notFound answers unknown routes and wrong methods on known ones: the reference service has no 405.
func notFound(w http.ResponseWriter, _ *http.Request) { writeFilesV1Error(w, errResourceUnknown()) }
