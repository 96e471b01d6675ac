package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclparse"
)

// The agent's config file maps onto the same flags, so a setting has one name, one parser and one
// validation whichever way it arrives: key node_id is flag --node-id, written with '_' because that
// is how HCL (and Consul's and Nomad's files) spell keys. Precedence: a flag on the command line,
// then its CAIRN_* variable, then the file, then node.DefaultConfig.

// Where a setting came from, as --print-config shows it.
const (
	sourceDefault = "default"
	sourceFlag    = "flag"
	sourceEnv     = "env"
	sourceFile    = "file"
)

// notInConfigFile are the agent flags that make no sense inside a config file.
var notInConfigFile = []string{"config-file", "print-config"}

// applyConfigFile sets, from the file at path (none when empty), every flag that neither the
// command line nor the environment set, and reports each flag's source.
func applyConfigFile(cmd *command, path string) (map[string]string, error) {
	sources := map[string]string{}
	cmd.fs.Visit(func(f *flag.Flag) {
		sources[f.Name] = sourceEnv
		if cmd.fromCommandLine[f.Name] {
			sources[f.Name] = sourceFlag
		}
	})
	if path != "" {
		settings, err := readConfigFile(path, cmd.fs)
		if err != nil {
			return nil, err
		}
		for _, s := range settings {
			if _, set := sources[s.flag]; set {
				continue // the command line or the environment wins
			}
			if err := cmd.fs.Set(s.flag, s.value); err != nil {
				return nil, fmt.Errorf("%s: %s: %w", s.pos, s.key, err)
			}
			sources[s.flag] = sourceFile
		}
	}
	cmd.fs.VisitAll(func(f *flag.Flag) {
		if _, ok := sources[f.Name]; !ok {
			sources[f.Name] = sourceDefault
		}
	})
	return sources, nil
}

// configSetting is one key = value of a config file, as the flag's text.
type configSetting struct {
	key   string // as written: node_id
	flag  string // node-id
	value string
	pos   string // file:line
}

// readConfigFile parses an HCL file, or JSON when the name ends in .json, with hashicorp/hcl. Each
// top-level key must name a flag of fs; an unknown key, a block, a duplicate or a value of the wrong
// type is an error that names the key and its line.
func readConfigFile(path string, fs *flag.FlagSet) ([]configSetting, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--config-file: %w", err)
	}
	parser := hclparse.NewParser()
	var file *hcl.File
	var diags hcl.Diagnostics
	if strings.EqualFold(filepath.Ext(path), ".json") {
		file, diags = parser.ParseJSON(src, path)
	} else {
		file, diags = parser.ParseHCL(src, path)
	}
	if diags.HasErrors() {
		return nil, fmt.Errorf("--config-file: %w", diags)
	}
	attrs, diags := file.Body.JustAttributes()
	if diags.HasErrors() {
		return nil, fmt.Errorf("--config-file: %w", diags)
	}
	names := make([]string, 0, len(attrs))
	for name := range attrs {
		names = append(names, name)
	}
	// In file order, so that the first problem reported is the first in the file.
	slices.SortFunc(names, func(a, b string) int { return attrs[a].Range.Start.Byte - attrs[b].Range.Start.Byte })
	var out []configSetting
	for _, key := range names {
		attr := attrs[key]
		pos := fmt.Sprintf("%s:%d", path, attr.NameRange.Start.Line)
		name := strings.ReplaceAll(key, "_", "-")
		f := fs.Lookup(name)
		if f == nil || slices.Contains(notInConfigFile, name) || strings.Contains(key, "-") {
			return nil, fmt.Errorf("%s: unknown key %q in --config-file (keys are the agent's flag names with '_' for '-', e.g. node_id)", pos, key)
		}
		value, err := decodeSetting(attr, f)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", pos, key, err)
		}
		out = append(out, configSetting{key: key, flag: name, value: value, pos: pos})
	}
	return out, nil
}

// decodeSetting decodes the value of attr with gohcl into the flag's text: a list for list flags
// (join = ["a:1", "b:2"], or one comma-separated string), true/false for booleans, otherwise a
// string (HCL converts numbers: bootstrap_expect = 3).
func decodeSetting(attr *hcl.Attribute, f *flag.Flag) (string, error) {
	switch f.Value.(type) {
	case listValue:
		var list []string
		if diags := gohcl.DecodeExpression(attr.Expr, nil, &list); !diags.HasErrors() {
			return strings.Join(list, ","), nil
		}
	}
	if isBoolFlag(f) {
		var b bool
		if diags := gohcl.DecodeExpression(attr.Expr, nil, &b); diags.HasErrors() {
			return "", fmt.Errorf("want true or false: %w", diags)
		}
		return strconv.FormatBool(b), nil
	}
	var s string
	if diags := gohcl.DecodeExpression(attr.Expr, nil, &s); diags.HasErrors() {
		return "", fmt.Errorf("want a string or a number: %w", diags)
	}
	return s, nil
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// isSecretFlag says whether a flag's value must never be printed: the root key, any secret, any
// key that is not a file name.
func isSecretFlag(name string) bool {
	return name == "root-key" || strings.Contains(name, "secret") ||
		(strings.HasSuffix(name, "-key") && !strings.Contains(name, "file"))
}

const redacted = "<redacted>"

// writeEffectiveConfig prints every setting of fs as an HCL config file, with its source as a
// comment and secrets redacted: the output is a valid --config-file.
func writeEffectiveConfig(w io.Writer, fs *flag.FlagSet, sources map[string]string) error {
	var b strings.Builder
	b.WriteString("# Effective configuration of cairn agent: flag > CAIRN_* env > config file > default.\n")
	b.WriteString("# Secrets are redacted.\n")
	var rows [][3]string
	fs.VisitAll(func(f *flag.Flag) {
		if slices.Contains(notInConfigFile, f.Name) {
			return
		}
		rows = append(rows, [3]string{strings.ReplaceAll(f.Name, "-", "_"), hclValue(f), sources[f.Name]})
	})
	width := 0
	for _, r := range rows {
		width = max(width, len(r[0])+3+len(r[1]))
	}
	for _, r := range rows {
		line := r[0] + " = " + r[1]
		fmt.Fprintf(&b, "%-*s  # %s\n", width, line, r[2])
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// hclValue is the flag's current value as an HCL literal.
func hclValue(f *flag.Flag) string {
	v := f.Value.String()
	switch {
	case isSecretFlag(f.Name):
		if v == "" {
			return `""`
		}
		return strconv.Quote(redacted)
	case isBoolFlag(f):
		return v
	}
	if _, ok := f.Value.(listValue); ok {
		var items []string
		for _, s := range strings.Split(v, ",") {
			if s != "" {
				items = append(items, hclQuote(s))
			}
		}
		return "[" + strings.Join(items, ", ") + "]"
	}
	if g, ok := f.Value.(flag.Getter); ok {
		switch g.Get().(type) {
		case int, int64, uint, uint64:
			return v
		}
	}
	return hclQuote(v)
}

// hclQuote quotes s as an HCL string literal: Go's quoting, with template sequences escaped.
func hclQuote(s string) string {
	q := strconv.Quote(s)
	q = strings.ReplaceAll(q, "${", "$${")
	return strings.ReplaceAll(q, "%{", "%%{")
}
