package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

// cliResult is what one in-process run of the CLI printed and how it would exit.
type cliResult struct {
	stdout, stderr string
	code           int
	err            error
}

// runCLI runs the CLI in this process, as main would, with buffers for its output. An answer of
// "unavailable, retry later" (exit 6: a leader election on a loaded machine) is retried for up to
// 30 s, as a script honouring that exit code would; no test expects exit 6.
func runCLI(t *testing.T, args ...string) cliResult {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var stdout, stderr bytes.Buffer
		err := run(args, &stdout, &stderr)
		r := cliResult{stdout.String(), stderr.String(), exitCodeOf(err), err}
		if r.code != exitUnavailable || time.Now().After(deadline) {
			return r
		}
		t.Logf("%v: %v; retrying", args, err)
		time.Sleep(200 * time.Millisecond) // the Retry-After of a 503, not a synchronisation
	}
}

// runCLIWith runs the CLI with the given output files (a pseudo-terminal, say).
func runCLIWith(stdout, stderr io.Writer, args ...string) (int, error) {
	err := run(args, stdout, stderr)
	return exitCodeOf(err), err
}

func TestCLIEveryCommandAnswersHelp(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // the usage line that must be the command's own
	}{
		{[]string{"agent", "-h"}, "Usage: cairn agent"},
		{[]string{"dev", "--help"}, "Usage: cairn dev"},
		{[]string{"status", "-h"}, "Usage: cairn status"},
		{[]string{"members", "-h"}, "Usage: cairn members"},
		{[]string{"put", "-h"}, "Usage: cairn put [flags] <file>"},
		{[]string{"get", "-h"}, "Usage: cairn get [flags] <token>"},
		{[]string{"token", "-h"}, "Usage: cairn token create|delete"},
		{[]string{"token", "create", "-h"}, "Usage: cairn token create"},
		{[]string{"token", "delete", "-h"}, "Usage: cairn token delete"},
		{[]string{"share", "-h"}, "Usage: cairn share"},
		{[]string{"apikey", "-h"}, "Usage: cairn apikey create|list|revoke"},
		{[]string{"apikey", "create", "-h"}, "Usage: cairn apikey create"},
		{[]string{"apikey", "list", "-h"}, "Usage: cairn apikey list"},
		{[]string{"apikey", "revoke", "-h"}, "Usage: cairn apikey revoke [flags] <key id>"},
		{[]string{"keys", "-h"}, "Usage: cairn keys rotate"},
		{[]string{"keys", "rotate", "-h"}, "Usage: cairn keys rotate"},
		{[]string{"node", "-h"}, "Usage: cairn node remove"},
		{[]string{"node", "remove", "-h"}, "Usage: cairn node remove [flags] <node id>"},
		{[]string{"debug", "-h"}, "Usage: cairn debug"},
		{[]string{"bench", "-h"}, "Usage: cairn bench"},
		{[]string{"snapshot", "save", "-h"}, "Usage: cairn snapshot save"},
		{[]string{"help"}, "cairn put FILE"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := runCLI(t, tc.args...)
			if r.code != 0 {
				t.Fatalf("exit %d (%v), want 0", r.code, r.err)
			}
			if out := r.stdout + r.stderr; !strings.Contains(out, tc.want) {
				t.Fatalf("help does not show %q:\n%s", tc.want, out)
			}
		})
	}
}

func TestCLIUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"apikey"}, "a subcommand is required"},
		{[]string{"apikey", "rename"}, `unknown subcommand "rename"`},
		{[]string{"apikey", "revoke"}, "missing <key id>"},
		{[]string{"apikey", "revoke", "a", "b"}, "unexpected arguments: b"},
		{[]string{"node", "remove", "--bogus", "n1"}, "flag provided but not defined: -bogus"},
		{[]string{"apikey", "list", "--an-unknown-but-very-long-flag-name=1"}, "unexpected arguments: --an-unknown-but-very-long-flag-name=1"},
		{[]string{"get"}, "missing <token>"},
		{[]string{"status", "--addr", "127.0.0.1"}, `--addr "127.0.0.1": want host:port or an http(s):// URL`},
		{[]string{"status", "--addr", "ftp://127.0.0.1:21"}, "want host:port or an http(s):// URL"},
		{[]string{"apikey", "list", "--addr", "127.0.0.1:1"}, "--key (or CAIRN_KEY) is required"},
		{[]string{"share"}, "missing <full token> | --id <file id>"},
		{[]string{"nonsense"}, `unknown command "nonsense"`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := runCLI(t, tc.args...)
			if r.code != exitUsage {
				t.Fatalf("exit %d (%v), want %d", r.code, r.err, exitUsage)
			}
			if !strings.Contains(r.err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", r.err, tc.want)
			}
		})
	}
}

// dashToken is a file token that begins with '-', as one in 64 does.
const dashToken = "-QgOYAbpv3ahVLJgvb_8URj2B_LnUlW7G1P9YrguwxI"

func TestCommandParseInterleavesFlagsAndArguments(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		wantPos  []string
		wantAddr string
		wantTags []string
	}{
		{[]string{"ID", "--addr", "x:1"}, []string{"ID"}, "x:1", nil},
		{[]string{"--addr", "x:1", "ID"}, []string{"ID"}, "x:1", nil},
		{[]string{"--tag", "a", "F", "--tag=b"}, []string{"F"}, defaultAddr(), []string{"a", "b"}},
		{[]string{"--", "--addr", "x:1"}, []string{"--addr", "x:1"}, defaultAddr(), nil},
		{[]string{"A", "--", "-B"}, []string{"A", "-B"}, defaultAddr(), nil},
		// A token may begin with '-': it is still an argument, wherever it stands.
		{[]string{dashToken, "--addr", "x:1"}, []string{dashToken}, "x:1", nil},
		{[]string{"--addr", "x:1", dashToken, "--tag", "a"}, []string{dashToken}, "x:1", []string{"a"}},
		{[]string{"--tag", dashToken, "F"}, []string{"F"}, defaultAddr(), []string{dashToken}}, // a flag's value stays its value
		{[]string{"--", dashToken}, []string{dashToken}, defaultAddr(), nil},
		{[]string{"F", dashToken, "G"}, []string{"F", dashToken, "G"}, defaultAddr(), nil},
	} {
		cmd := newCommand("cairn test", "<args>", "a test", io.Discard)
		cf := addClientFlags(cmd.fs, "")
		var tags []string
		cmd.fs.Var(repeatedValue{&tags}, "tag", "")
		pos, err := cmd.parse(tc.args, -1)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if strings.Join(pos, "|") != strings.Join(tc.wantPos, "|") || cf.addr != tc.wantAddr ||
			strings.Join(tags, "|") != strings.Join(tc.wantTags, "|") {
			t.Errorf("%v: positional %q addr %q tags %q, want %q %q %q", tc.args, pos, cf.addr, tags,
				tc.wantPos, tc.wantAddr, tc.wantTags)
		}
	}
}

func TestNormalizeAddr(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:8080":        "http://127.0.0.1:8080",
		"http://127.0.0.1:8080": "http://127.0.0.1:8080",
		"https://cairn.example": "https://cairn.example",
		"http://h:1/":           "http://h:1",
		"[::1]:8080":            "http://[::1]:8080",
		" localhost:1 ":         "http://localhost:1",
	} {
		got, err := normalizeAddr(in)
		if err != nil || got != want {
			t.Errorf("normalizeAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "127.0.0.1", "ftp://h:1", "http://", "http://u:p@h:1", "http://h:1/?x=1", "h:1:2"} {
		if got, err := normalizeAddr(bad); err == nil {
			t.Errorf("normalizeAddr(%q) = %q, want an error", bad, got)
		}
	}
}

func TestDefaultAddrIsAgentDefault(t *testing.T) {
	a := newAgentFlags(flag.NewFlagSet("x", flag.ContinueOnError))
	if want := "http://" + a.cfg.HTTPAddr; defaultAddr() != want {
		t.Fatalf("CLI --addr default %s, agent --http-addr default %s", defaultAddr(), want)
	}
}

// TestAgentFlagDefaultsComeFromDefaultConfig: a flag set parsed from nothing yields exactly
// node.DefaultConfig, and every flag's printed default parses back to it.
func TestAgentFlagDefaultsComeFromDefaultConfig(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	a := newAgentFlags(fs)
	want := a.cfg.Redacted()
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	// Setting every flag to its own printed default changes nothing.
	fs.VisitAll(func(f *flag.Flag) {
		if err := fs.Set(f.Name, f.DefValue); err != nil {
			t.Errorf("--%s: its default %q does not parse: %v", f.Name, f.DefValue, err)
		}
	})
	got := a.cfg.Redacted()
	for k, v := range want {
		if g := got[k]; fmt.Sprint(g) != fmt.Sprint(v) {
			t.Errorf("%s: %v after setting the flags to their defaults, %v in DefaultConfig", k, g, v)
		}
	}
}

func TestExitCodes(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, 0},
		{flag.ErrHelp, 0},
		{usageError{"cairn", "x", false}, exitUsage},
		{&apiError{Status: 401, Code: "104"}, exitDenied},
		{&apiError{Status: 403, Code: "error.runtime.files.notOwnedByYou"}, exitDenied},
		{&apiError{Status: 400, Code: "2605"}, exitNotFound},
		{&apiError{Status: 404, Code: "16"}, exitNotFound},
		{&apiError{Status: 400, Code: "2610"}, exitRejected},
		{&apiError{Status: 503, Code: "1"}, exitUnavailable},
		{&apiError{Status: 507, Code: "1"}, exitUnavailable},
		{&apiError{Status: 500, Code: "1"}, exitFailure},
		{errors.New("disk"), exitFailure},
		{os.ErrNotExist, exitFailure},
	} {
		if got := exitCodeOf(tc.err); got != tc.want {
			t.Errorf("exitCodeOf(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}
