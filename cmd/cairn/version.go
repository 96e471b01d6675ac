package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=..." (the Makefile uses git describe).
var version = "dev"

// runVersion implements `cairn version`: the build version first (what gossip, /v1/status and
// `cairn members` show for this binary), then the Go version and, when the build recorded it, the
// VCS revision.
func runVersion(stdout io.Writer) error {
	fmt.Fprintln(stdout, "cairn", version)
	fmt.Fprintln(stdout, "go", runtime.Version())
	if rev := vcsRevision(); rev != "" {
		fmt.Fprintln(stdout, "revision", rev)
	}
	return nil
}

// vcsRevision is the commit the binary was built from, when go build recorded it (-buildvcs).
func vcsRevision() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev != "" && dirty {
		rev += "-dirty"
	}
	return rev
}
