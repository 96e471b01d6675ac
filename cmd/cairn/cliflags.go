package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/cairn-dev/cairn/erasure"
	"github.com/cairn-dev/cairn/node"
)

// command is one subcommand's flag set with the parsing rules every subcommand shares:
//   - `-h`/`--help` prints the command's own usage and ends the program with exit 0;
//   - flags may come before or after the positional arguments (`--` ends the flags);
//   - every flag not given on the command line may come from CAIRN_<FLAG> (see applyEnv).
type command struct {
	fs       *flag.FlagSet
	name     string // "cairn apikey revoke"
	synopsis string // positional arguments, e.g. "<key id>"
	summary  string // one sentence on what it does
	stderr   io.Writer
	// fromCommandLine are the flags given on the command line (not from the environment), once
	// parse has run.
	fromCommandLine map[string]bool
}

// newCommand starts the flag set of the subcommand name ("cairn token create"); synopsis names its
// positional arguments and summary says what it does, both for its usage text.
func newCommand(name, synopsis, summary string, stderr io.Writer) *command {
	c := &command{fs: flag.NewFlagSet(name, flag.ContinueOnError), name: name, synopsis: synopsis,
		summary: summary, stderr: stderr}
	c.fs.SetOutput(stderr)
	c.fs.Usage = c.usage
	return c
}

func (c *command) usage() {
	fmt.Fprintf(c.stderr, "Usage: %s\n\n%s\n", strings.TrimSpace(c.name+" [flags] "+c.synopsis), c.summary)
	hasFlags := false
	c.fs.VisitAll(func(*flag.Flag) { hasFlags = true })
	if hasFlags {
		fmt.Fprintln(c.stderr, "\nFlags (each also from CAIRN_<FLAG>, upper case, '-' as '_'):")
		c.fs.PrintDefaults()
	}
}

// parse parses args, flags and positional arguments interleaved, applies the environment to the
// flags not given, and returns the positional arguments. want is how many positional arguments
// the command takes (-1: any number); another count is a usage error.
func (c *command) parse(args []string, want int) ([]string, error) {
	var positional []string
	for len(args) > 0 {
		if c.isDashToken(args[0]) {
			positional, args = append(positional, args[0]), args[1:]
			continue
		}
		// The flag package sees only the run of arguments before the next dash token.
		end := c.flagRunEnd(args)
		run, after := args[:end], args[end:]
		if err := c.fs.Parse(run); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{c.name, err.Error(), false}
		}
		rest := c.fs.Args()
		if consumed := len(run) - len(rest); consumed > 0 && run[consumed-1] == "--" {
			positional = append(append(positional, rest...), after...)
			break
		}
		if len(rest) > 0 {
			positional = append(positional, rest[0])
			rest = rest[1:]
		}
		args = append(slices.Clone(rest), after...)
	}
	c.fromCommandLine = map[string]bool{}
	c.fs.Visit(func(f *flag.Flag) { c.fromCommandLine[f.Name] = true })
	if err := applyEnv(c.fs); err != nil {
		return nil, usageError{c.name, err.Error(), false}
	}
	if want >= 0 && len(positional) != want {
		if len(positional) > want {
			return nil, c.usageErr("unexpected arguments: %s", strings.Join(positional[want:], " "))
		}
		return nil, c.usageErr("missing %s", c.synopsis)
	}
	return positional, nil
}

// isDashToken says whether a starts with '-' but is a token, not a flag: file tokens are URL-safe
// base64 and one in 64 begins with '-'. It names no flag of the command and is as long as a token
// (a mistyped flag is shorter; were it not, it would still fail as an unexpected argument).
func (c *command) isDashToken(a string) bool {
	if len(a) < 32 || !strings.HasPrefix(a, "-") {
		return false
	}
	name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
	return c.fs.Lookup(name) == nil
}

// flagRunEnd is the index of the first dash token in args that is not a flag's value ("--" ends
// the scan: after it everything is positional anyway).
func (c *command) flagRunEnd(args []string) int {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return len(args)
		case c.isDashToken(a):
			return i
		case strings.HasPrefix(a, "-") && a != "-" && !strings.Contains(a, "="):
			if f := c.fs.Lookup(strings.TrimLeft(a, "-")); f != nil && !isBoolFlag(f) {
				i++ // its value, whatever it looks like
			}
		}
	}
	return len(args)
}

// usageErr is a usage error of this command: main prints it with a pointer to `-h` and exits 2.
func (c *command) usageErr(format string, args ...any) error {
	return usageError{c.name, fmt.Sprintf(format, args...), true}
}

// usageError is a command line the command cannot run: a bad flag, a missing or extra argument.
type usageError struct {
	command string
	msg     string
	hint    bool // add "run '<command> -h'"; false when the flag package already printed the usage
}

func (e usageError) Error() string {
	if e.hint {
		return fmt.Sprintf("%s (run '%s -h' for usage)", e.msg, e.command)
	}
	return e.msg
}

// group dispatches a command with subcommands (`cairn apikey create|list|revoke`). Help, or
// nothing at all, prints the group's usage; help exits 0, nothing or an unknown name is a usage
// error.
func group(name, usage string, args []string, stdout, stderr io.Writer, subs map[string]func([]string) error) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageError{name, "a subcommand is required", false}
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	sub, ok := subs[args[0]]
	if !ok {
		fmt.Fprint(stderr, usage)
		return usageError{name, fmt.Sprintf("unknown subcommand %q", args[0]), false}
	}
	return sub(args[1:])
}

// applyEnv gives every flag not set on the command line the value of CAIRN_<NAME> (upper case, '-'
// as '_'), so that each flag can also come from the environment.
func applyEnv(fs *flag.FlagSet) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		if v, ok := os.LookupEnv(envName(f.Name)); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s (--%s): %w", envName(f.Name), f.Name, err))
			}
		}
	})
	return errors.Join(errs...)
}

// envName is the environment variable of a flag: CAIRN_<NAME>, upper case, '-' as '_'.
func envName(flagName string) string {
	return "CAIRN_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// defaultAddr is the CLI's default --addr: the agent's default --http-addr, so that a client and an
// agent started without flags on one machine find each other.
func defaultAddr() string { return "http://" + node.DefaultConfig().HTTPAddr }

// normalizeAddr turns --addr into a base URL: host:port gets http://, a URL keeps its scheme
// (http or https), and anything else is an error that says what is wanted.
func normalizeAddr(addr string) (string, error) {
	const want = "want host:port or an http(s):// URL, e.g. 127.0.0.1:8080 or https://cairn.example:8080"
	a := strings.TrimSpace(addr)
	if a == "" {
		return "", fmt.Errorf("--addr is empty: %s", want)
	}
	if !strings.Contains(a, "://") {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return "", fmt.Errorf("--addr %q: %s", addr, want)
		}
		a = "http://" + a
	}
	u, err := url.Parse(a)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("--addr %q: %s", addr, want)
	}
	return strings.TrimSuffix(u.String(), "/"), nil
}

// sizeValue is a flag holding a byte size (8MiB, 1GiB, 1048576), parsed with node.ParseSize.
type sizeValue struct {
	name string
	n    *int64
}

func (v sizeValue) String() string {
	if v.n == nil {
		return ""
	}
	return node.FormatSize(*v.n)
}

func (v sizeValue) Set(s string) error {
	n, err := node.ParseSize(s)
	if err != nil {
		return fmt.Errorf("--%s: %w", v.name, err)
	}
	*v.n = n
	return nil
}

// sizeVar defines a byte-size flag whose default is *p.
func sizeVar(fs *flag.FlagSet, p *int64, name, usage string) {
	fs.Var(sizeValue{name, p}, name, usage)
}

// geometryValue is the --erasure K+M flag.
type geometryValue struct{ g *erasure.Geometry }

func (v geometryValue) String() string {
	if v.g == nil {
		return ""
	}
	return v.g.String()
}

func (v geometryValue) Set(s string) error {
	g, err := erasure.ParseGeometry(s)
	if err != nil {
		return fmt.Errorf("--erasure: %w", err)
	}
	*v.g = g
	return nil
}

// listValue is a comma-separated list flag (--join a,b,c); each Set replaces the list, so that a
// flag given once overrides the environment and the config file instead of adding to them.
type listValue struct{ items *[]string }

func (v listValue) String() string {
	if v.items == nil {
		return ""
	}
	return strings.Join(*v.items, ",")
}

func (v listValue) Set(s string) error {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	*v.items = out
	return nil
}

// repeatedValue is a flag that may be given several times (--tag a --tag b).
type repeatedValue struct{ items *[]string }

func (v repeatedValue) String() string {
	if v.items == nil {
		return ""
	}
	return strings.Join(*v.items, ",")
}

func (v repeatedValue) Set(s string) error {
	*v.items = append(*v.items, s)
	return nil
}
