package fsm

import (
	"errors"
	"fmt"
)

// Sentinel results of applying a command. They travel inside Result and, via ErrorCode and
// ErrorFromCode, across the network from the leader to the proposing node.
var (
	// ErrNotFound: the file or token the command names does not exist.
	ErrNotFound = errors.New("fsm: not found")
	// ErrConflict: an id or secret the command introduces is already in use.
	ErrConflict = errors.New("fsm: conflict")
	// ErrLastFullToken: deleting the token would leave the file without a live full token.
	ErrLastFullToken = errors.New("fsm: last full token")
	// ErrAlreadyInitialized: initCluster was applied before.
	ErrAlreadyInitialized = errors.New("fsm: cluster already initialized")
	// ErrNotInitialized: the command needs an initialized cluster.
	ErrNotInitialized = errors.New("fsm: cluster not initialized")
	// ErrInvalidCommand: the entry could not be decoded or violates a command's rules.
	ErrInvalidCommand = errors.New("fsm: invalid command")
	// ErrLastAdminKey: revoking the key would leave no key that holds MANAGE_API_KEYS.
	ErrLastAdminKey = errors.New("fsm: last api key with MANAGE_API_KEYS")
	// ErrNotEnabled: the leader refused to propose the command because a Raft server does not
	// speak the protocol that introduced it yet (a rolling upgrade is under way). The FSM never
	// returns it; the leader's protocol gate does, before the command reaches the log.
	ErrNotEnabled = errors.New("fsm: command not enabled until every raft server speaks its protocol")
	// ErrClockAhead: the leader refused to propose the command because its time is further ahead
	// of the leader's own clock than the allowed clock offset: the proposing node's clock is
	// wrong, and the command would push the state's clock (request de-duplication, expiry) into
	// the future. Like ErrNotEnabled, only the leader's admission returns it.
	ErrClockAhead = errors.New("fsm: the command's time is ahead of the leader's clock")
	// ErrNoAuthority: the authority a command names (CreateToken.Authority) no longer holds at
	// its place in the log: the API key was revoked, or the full token was deleted or expired.
	ErrNoAuthority = errors.New("fsm: the authority the command names no longer holds")
	// ErrStateUnavailable: the state store could not commit the batch (a full or failing disk).
	// The outcome is unknown: the FSM holds the entry back and applies it once the store commits
	// again, so a retry must reuse the request id. It is never stored in the de-duplication table.
	ErrStateUnavailable = errors.New("fsm: state store write failed")
)

// codes are stable: they are stored in the de-duplication table, snapshots and RPC replies.
var codes = []struct {
	code string
	err  error
}{
	{"not_found", ErrNotFound},
	{"conflict", ErrConflict},
	{"last_full_token", ErrLastFullToken},
	{"already_initialized", ErrAlreadyInitialized},
	{"not_initialized", ErrNotInitialized},
	{"invalid_command", ErrInvalidCommand},
	{"last_admin_key", ErrLastAdminKey},
	{"not_enabled", ErrNotEnabled},
	{"state_write_failed", ErrStateUnavailable},
	{"no_authority", ErrNoAuthority},
	{"clock_ahead", ErrClockAhead},
}

// codeInternal stands for any error that is not one of the sentinels.
const codeInternal = "internal"

// ErrorCode returns the stable short code of err's sentinel, "" for nil, and "internal" for any
// other error.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return codeInternal
}

// ErrorFromCode is the inverse of ErrorCode. An unknown code yields a generic error that matches
// no sentinel, so that a newer peer's code is never mistaken for a known outcome.
func ErrorFromCode(code string) error {
	if code == "" {
		return nil
	}
	for _, c := range codes {
		if c.code == code {
			return c.err
		}
	}
	return fmt.Errorf("fsm: remote error %q", code)
}
