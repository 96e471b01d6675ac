package main

// Helpers of the readiness, start-up and load-balancer end-to-end tests.

import (
	"errors"
	"fmt"
	"os"
	"testing"
)

// errNotYet is a poll result that only needs more time.
var errNotYet = errors.New("not yet")

// inCI reports whether the test runs on CI (CI=true), where a missing tool or privilege is a
// failure, not a reason to skip.
func inCI() bool { return os.Getenv("CI") == "true" }

// skipOrFailWithoutPrivilege skips a test that needs something this machine does not give (root,
// mount, a package), and fails it on CI, where the machine must provide it.
func skipOrFailWithoutPrivilege(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if inCI() {
		t.Fatalf("CI=true and this test cannot run: %s", msg)
	}
	t.Skipf("skipped (set up the machine or run as root to run it): %s", msg)
}
