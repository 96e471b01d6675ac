package core

import (
	"errors"
	"fmt"
)

// Sentinel errors of the use cases. Front-ends map them to their own wire format, once, with
// errors.Is.
var (
	// ErrInvalidToken covers an unknown, malformed, expired or deleted file token. One error for all
	// cases so that nothing leaks about which it was.
	ErrInvalidToken = errors.New("invalid token")
	// ErrReadOnlyToken is a read token used where a full token is required.
	ErrReadOnlyToken = errors.New("token does not grant full access")
	// ErrLastFullToken refuses to remove a file's last full token.
	ErrLastFullToken = errors.New("cannot delete the last full token of a file")
	// ErrFileTooLarge is an upload over the cluster's maximum file size.
	ErrFileTooLarge = errors.New("file too large")
	// ErrUnauthenticated is a missing or unknown API key where one is needed.
	ErrUnauthenticated = errors.New("not authenticated")
	// errNoAuthority is the FSM's refusal of a token create whose named authority no longer held
	// at apply (fsm.ErrNoAuthority); each use case maps it to its own answer.
	errNoAuthority = errors.New("the key or token that authorized the command no longer holds")
	// ErrPermissionDenied is a principal without the permission the action needs.
	ErrPermissionDenied = errors.New("permission denied")
	// ErrUnavailable means the cluster cannot serve the request now (no leader or quorum, too few
	// shard nodes for the write quorum or a read). Retrying later may succeed.
	ErrUnavailable = errors.New("cluster unavailable")
	// ErrNoSpace means no placement is possible because nodes are out of space.
	ErrNoSpace = errors.New("insufficient storage")
	// ErrNotFound is an unknown resource addressed by id (not by token).
	ErrNotFound = errors.New("not found")
	// ErrShuttingDown is returned for work that arrives while the node stops.
	ErrShuttingDown = errors.New("node is shutting down")
)

// ErrInvalidInput is a request argument that fails validation; the wrapped message says which.
var ErrInvalidInput = errors.New("invalid input")

// ErrConflict refuses a change that would break an invariant of the current state (e.g. revoking
// the last administrator key).
var ErrConflict = errors.New("conflict")

// MissingPermissionError is ErrPermissionDenied with the permission that was needed, so that a
// front-end can name it (the permission names are public; nothing secret is in them).
type MissingPermissionError struct {
	Permission string
}

func (e *MissingPermissionError) Error() string {
	return ErrPermissionDenied.Error() + ": " + e.Permission + " required"
}

// Is makes errors.Is(err, ErrPermissionDenied) hold.
func (e *MissingPermissionError) Is(target error) bool { return target == ErrPermissionDenied }

// FileTooLargeError is ErrFileTooLarge with the limit, so that the answer can state it.
type FileTooLargeError struct {
	Limit int64 // bytes
}

func (e *FileTooLargeError) Error() string {
	return fmt.Sprintf("%s: the limit is %d bytes", ErrFileTooLarge, e.Limit)
}

// Is makes errors.Is(err, ErrFileTooLarge) hold.
func (e *FileTooLargeError) Is(target error) bool { return target == ErrFileTooLarge }
