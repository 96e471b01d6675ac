package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// isTerminal says whether w is a terminal: the progress bar and the QR code are drawn only there,
// so that pipes, files and scripts get clean output.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// transferProgress counts the bytes of one transfer. On a terminal it draws a progress bar
// (bytes, rate, ETA) with schollz/progressbar; elsewhere, or with --quiet, it draws nothing.
type transferProgress struct {
	bar *progressbar.ProgressBar // nil: silent
}

// newProgress starts the progress of a transfer of total bytes (-1: unknown) on stderr, of which
// done are already there (a resumed download).
func newProgress(stderr io.Writer, quiet bool, description string, total, done int64) *transferProgress {
	if quiet || !isTerminal(stderr) {
		return &transferProgress{}
	}
	bar := progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(stderr),
		progressbar.OptionSetDescription(description),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowTotalBytes(true),
		progressbar.OptionUseIECUnits(true), // KiB, MiB: the units of every size flag
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true), // the ETA
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSpinnerType(14),
		progressbar.OptionSetRenderBlankState(true),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(stderr) }),
	)
	if done > 0 {
		_ = bar.Set64(done)
	}
	return &transferProgress{bar: bar}
}

// Write counts len(p) bytes as done; it never fails, so it can sit in an io.TeeReader or
// io.MultiWriter.
func (p *transferProgress) Write(b []byte) (int, error) {
	if p.bar != nil {
		_ = p.bar.Add(len(b))
	}
	return len(b), nil
}

// finish draws the final state and ends the line.
func (p *transferProgress) finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
	}
}

// abandon ends the line without claiming completion (the transfer failed).
func (p *transferProgress) abandon() {
	if p.bar != nil {
		_ = p.bar.Exit()
	}
}
