package main

import (
	"fmt"
	"io"
	"runtime"
)

// runVersion implements `cairn version`: the build version first (what gossip, /v1/status and
// `cairn members` show for this binary), then the Go version and, when the build recorded it, the
// VCS revision.
func runVersion(stdout io.Writer) error {
	fmt.Fprintln(stdout, "cairn", version)
	fmt.Fprintln(stdout, "go", runtime.Version())
	if rev := buildRevision(); rev != "" {
		fmt.Fprintln(stdout, "revision", rev)
	}
	return nil
}
