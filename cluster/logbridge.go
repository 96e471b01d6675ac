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
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// newStdLogger bridges a *log.Logger (memberlist's) to slog, mapping its "[LEVEL]" prefixes. Lines
// about packets memberlist could not decrypt or decode go through bad (when not nil), which counts
// them and lets at most one a second through.
func newStdLogger(l *slog.Logger, bad *badPacketLog) *log.Logger {
	return log.New(stdLogWriter{l, bad}, "", 0)
}

type stdLogWriter struct {
	l   *slog.Logger
	bad *badPacketLog
}

// badPacketLogEvery is how often a line about a bad packet may be logged: memberlist writes one
// per datagram, so garbage sent to the gossip port would otherwise write one line per packet.
const badPacketLogEvery = time.Second

// badPacketMarkers identify memberlist's lines about an undecryptable, unlabelled or malformed
// packet or stream from someone else (memberlist v0.7 net.go), as opposed to its own failures.
var badPacketMarkers = []string{
	"Decrypt packet failed", "cannot decode label", "label header cannot be empty",
	"unacceptable label", "double packet label", "double stream label", "invalid checksum",
	"missing message type byte", "not supported", "Failed to decode", "Failed to decompress",
	"Compound request had", "Received invalid msgType", "failed to receive",
}

// badPacketLog counts bad-packet lines and rate-limits them, like the cluster port's rejections.
type badPacketLog struct {
	total atomic.Uint64
	mu    sync.Mutex
	last  time.Time
	quiet uint64 // lines suppressed since last
}

// Total is how many bad-packet lines memberlist has written, logged or not.
func (b *badPacketLog) Total() uint64 { return b.total.Load() }

// admit counts one line and reports whether to log it, with how many were suppressed before it.
func (b *badPacketLog) admit(now time.Time) (bool, uint64) {
	b.total.Add(1)
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.last.IsZero() && now.Sub(b.last) < badPacketLogEvery {
		b.quiet++
		return false, 0
	}
	suppressed := b.quiet
	b.last, b.quiet = now, 0
	return true, suppressed
}

func isBadPacketLine(msg string) bool {
	for _, m := range badPacketMarkers {
		if strings.Contains(msg, m) {
			return true
		}
	}
	return false
}

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
	if w.bad != nil && level >= slog.LevelWarn && isBadPacketLine(msg) {
		ok, suppressed := w.bad.admit(time.Now())
		if !ok {
			return len(p), nil
		}
		w.l.Log(context.Background(), level, msg, "suppressed_since_last", suppressed,
			"note", "lines like this are logged at most once a second; cairn_gossip_bad_packets_total counts them all")
		return len(p), nil
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
		// routine (net.ErrClosed), not failures. It also logs every RPC the stalled-log fence
		// withholds ("failed to heartbeat to", several a second for as long as the disk hangs);
		// the fence logs its start and end once, and cairn_raft_rpcs_withheld_total counts them.
		if e, ok := rec["error"].(string); ok && level > slog.LevelDebug &&
			(strings.Contains(e, net.ErrClosed.Error()) || strings.Contains(e, errLogWriteStalled.Error())) {
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
