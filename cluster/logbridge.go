package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log"
	"log/slog"
	"net"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// newStdLogger bridges a *log.Logger (memberlist's) to slog, mapping its "[LEVEL]" prefixes.
func newStdLogger(l *slog.Logger) *log.Logger {
	return log.New(stdLogWriter{l}, "", 0)
}

type stdLogWriter struct{ l *slog.Logger }

func (w stdLogWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	level := slog.LevelInfo
	for prefix, lv := range map[string]slog.Level{
		"[DEBUG]": slog.LevelDebug, "[TRACE]": slog.LevelDebug, "[INFO]": slog.LevelInfo,
		"[WARN]": slog.LevelWarn, "[ERR]": slog.LevelError, "[ERROR]": slog.LevelError,
	} {
		if strings.HasPrefix(msg, prefix) {
			level = lv
			msg = strings.TrimSpace(strings.TrimPrefix(msg, prefix))
			break
		}
	}
	w.l.Log(context.Background(), level, msg)
	return len(p), nil
}

// NewHCLogger bridges hclog (raft's logger) to slog: hclog writes JSON lines, which are re-emitted
// as structured slog records at the same level.
func NewHCLogger(l *slog.Logger, name string) hclog.Logger {
	level := hclog.Info
	if l.Enabled(context.Background(), slog.LevelDebug) {
		level = hclog.Debug
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:       name,
		Level:      level,
		JSONFormat: true,
		Output:     hclogWriter{l},
	})
}

type hclogWriter struct{ l *slog.Logger }

func (w hclogWriter) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(bytes.TrimSpace(p), []byte("\n")) {
		var rec map[string]any
		if err := json.Unmarshal(line, &rec); err != nil {
			w.l.Info(string(line))
			continue
		}
		level := slog.LevelInfo
		switch rec["@level"] {
		case "trace", "debug":
			level = slog.LevelDebug
		case "warn":
			level = slog.LevelWarn
		case "error":
			level = slog.LevelError
		}
		msg, _ := rec["@message"].(string)
		// Raft reports connections the node itself closed while shutting down as errors; they are
		// routine (net.ErrClosed), not failures.
		if e, ok := rec["error"].(string); ok && level > slog.LevelDebug && strings.Contains(e, net.ErrClosed.Error()) {
			level = slog.LevelDebug
		}
		attrs := make([]any, 0, 2*len(rec))
		for k, v := range rec {
			if !strings.HasPrefix(k, "@") {
				attrs = append(attrs, k, v)
			}
		}
		if mod, ok := rec["@module"].(string); ok {
			attrs = append(attrs, "component", mod)
		}
		w.l.Log(context.Background(), level, msg, attrs...)
	}
	return len(p), nil
}

var _ io.Writer = hclogWriter{}
