package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// partSuffix names the partial file of a download in progress, beside its destination. A later
// `cairn get` to the same destination resumes from it.
const partSuffix = ".cairn-part"

// runGet implements `cairn get TOKEN [-o FILE]`: download with /files/v1/{token}/file, resuming an
// interrupted transfer with Range (within one run, and across runs from FILE.cairn-part), and check
// the result against the file's SHA-256 (its ETag) before it takes the destination's name.
func runGet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := newCommand("cairn get", "<token>", "Download a file with a full or read token. An interrupted download resumes where it\n"+
		"stopped (Range), also in a later run from FILE"+partSuffix+"; the result is checked against the file's SHA-256.", stderr)
	cf := addClientFlags(cmd.fs, "")
	var out string
	cmd.fs.StringVar(&out, "o", "", "where to write the file ('-': standard output; default: the file's name in cairn, in this directory)")
	cmd.fs.StringVar(&out, "output", "", "same as -o")
	force := cmd.fs.Bool("force", false, "overwrite the destination if it exists")
	quiet := cmd.fs.Bool("quiet", false, "no progress bar")
	retries := cmd.fs.Int("retries", 5, "how many times an interrupted transfer is resumed in this run")
	pos, err := cmd.parse(args, 1)
	if err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	d := &download{c: c, token: pos[0], stderr: stderr, quiet: *quiet, retries: max(*retries, 0)}
	if out == "-" {
		return d.toWriter(ctx, stdout)
	}
	if out == "" {
		if out, err = d.storedName(ctx); err != nil {
			return err
		}
	}
	if _, err := os.Stat(out); err == nil && !*force {
		return fmt.Errorf("%s exists (--force overwrites it)", out)
	}
	return d.toFile(ctx, out)
}

// download is one file's transfer, in as many requests as interruptions need.
type download struct {
	c       *apiClient
	token   string
	stderr  io.Writer
	quiet   bool
	retries int

	etag     string // hex SHA-256, from the first answer
	total    int64  // file size; -1 until known
	progress *transferProgress
}

func (d *download) path() string { return "/files/v1/" + url.PathEscape(d.token) + "/file" }

// storedName is the file's name in cairn, reduced to a safe base name for this directory.
func (d *download) storedName(ctx context.Context) (string, error) {
	var meta struct {
		Name string `json:"name"`
	}
	if err := d.c.callJSON(ctx, http.MethodGet, "/files/v1/"+url.PathEscape(d.token)+"/details", false, nil, &meta); err != nil {
		return "", err
	}
	name := filepath.Base(filepath.Clean("/" + strings.ReplaceAll(meta.Name, "\\", "/")))
	if name == "/" || name == "." || name == ".." || strings.HasPrefix(name, ".") {
		name = "cairn-download"
	}
	return name, nil
}

// toFile downloads into out+partSuffix, resuming from what is there, then renames it to out once
// its SHA-256 matches.
func (d *download) toFile(ctx context.Context, out string) error {
	part := out + partSuffix
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	have, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	h := sha256.New()
	if have > 0 { // the part already there is hashed first, so the check covers the whole file
		if _, err := io.Copy(h, io.NewSectionReader(f, 0, have)); err != nil {
			return fmt.Errorf("read %s: %w", part, err)
		}
	}
	restart := func() error {
		h.Reset()
		if err := f.Truncate(0); err != nil {
			return err
		}
		_, err := f.Seek(0, io.SeekStart)
		return err
	}
	if err := d.transfer(ctx, f, h, have, restart); err != nil {
		return err
	}
	if err := d.verify(h); err != nil {
		_ = f.Close()
		_ = os.Remove(part)
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(part, out)
}

// toWriter streams to w (standard output); an interruption resumes with Range in this run.
func (d *download) toWriter(ctx context.Context, w io.Writer) error {
	h := sha256.New()
	noRestart := func() error {
		return errors.New("the server restarted the file from the beginning; cannot rewind standard output")
	}
	if err := d.transfer(ctx, w, h, 0, noRestart); err != nil {
		return err
	}
	return d.verify(h)
}

// verify compares the bytes written with the file's SHA-256, when the server gave one.
func (d *download) verify(h hash.Hash) error {
	if d.etag == "" {
		return nil
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != d.etag {
		return fmt.Errorf("the download does not match the file's SHA-256 (%s, got %s): a stale partial download? run the command again", d.etag, got)
	}
	return nil
}

// errRangeUnsatisfiable is a resume offset past the end: the part on disk is not this file's.
var errRangeUnsatisfiable = errors.New("range not satisfiable")

// transfer writes the file from offset have onwards to w (and h), resuming after each broken
// response up to d.retries times. restart empties w when the server sends the whole file again.
func (d *download) transfer(ctx context.Context, w io.Writer, h hash.Hash, have int64, restart func() error) error {
	d.total = -1
	var lastErr error
	for attempt := 0; attempt <= d.retries; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
			}
		}
		n, done, err := d.fetch(ctx, w, h, have, restart)
		have += n
		switch {
		case done:
			d.finishProgress()
			return nil
		case errors.Is(err, errRangeUnsatisfiable):
			if err := restart(); err != nil {
				return err
			}
			have = 0
			lastErr = err
			continue
		case ctx.Err() != nil:
			d.abandonProgress()
			return ctx.Err()
		}
		var ae *apiError
		if errors.As(err, &ae) && ae.exitCode() != exitUnavailable {
			d.abandonProgress()
			return err // the API said no: retrying would not change its mind
		}
		lastErr = err
	}
	d.abandonProgress()
	return fmt.Errorf("download interrupted %d times, last: %w (run the command again to resume)", d.retries+1, lastErr)
}

// fetch sends one request from offset have and copies the answer. It returns the bytes added and
// whether the file is complete.
func (d *download) fetch(ctx context.Context, w io.Writer, h hash.Hash, have int64, restart func() error) (int64, bool, error) {
	req, err := d.c.newRequest(ctx, http.MethodGet, d.path(), nil, false)
	if err != nil {
		return 0, false, err
	}
	if have > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(have, 10)+"-")
		if d.etag != "" {
			req.Header.Set("If-Range", `"`+d.etag+`"`)
		}
	}
	resp, err := d.c.do(req)
	var ae *apiError
	if errors.As(err, &ae) && ae.Status == http.StatusRequestedRangeNotSatisfiable {
		return 0, false, errRangeUnsatisfiable
	}
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	if etag := strings.Trim(resp.Header.Get("ETag"), `"`); etag != "" {
		d.etag = etag
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		start, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != have {
			return 0, false, fmt.Errorf("unexpected Content-Range %q for a resume at %d", resp.Header.Get("Content-Range"), have)
		}
		d.total = total
	case http.StatusOK:
		if have > 0 { // the server sent the whole file: start over
			if err := restart(); err != nil {
				return 0, false, err
			}
			return d.copyBody(resp, w, h, 0, -have)
		}
		d.total = resp.ContentLength
	default:
		return 0, false, fmt.Errorf("unexpected answer %s", resp.Status)
	}
	return d.copyBody(resp, w, h, have, 0)
}

// copyBody copies the answer's body from file offset have, reporting progress. adjust is added to
// the byte count returned (a restart discards what was there).
func (d *download) copyBody(resp *http.Response, w io.Writer, h hash.Hash, have, adjust int64) (int64, bool, error) {
	if d.total < 0 {
		d.total = resp.ContentLength
	}
	if d.progress == nil {
		d.progress = newProgress(d.stderr, d.quiet, "download", d.total, have)
	} else if adjust != 0 && d.progress.bar != nil {
		_ = d.progress.bar.Set64(have)
	}
	n, err := io.Copy(io.MultiWriter(w, h, d.progress), resp.Body)
	if err != nil {
		return n + adjust, false, fmt.Errorf("download cut off after %d bytes: %w", have+n, err)
	}
	if d.total >= 0 && have+n != d.total {
		return n + adjust, false, fmt.Errorf("download cut off after %d of %d bytes", have+n, d.total)
	}
	return n + adjust, true, nil
}

func (d *download) finishProgress() {
	if d.progress != nil {
		d.progress.finish()
	}
}

func (d *download) abandonProgress() {
	if d.progress != nil {
		d.progress.abandon()
	}
}

// parseContentRange reads "bytes START-END/TOTAL".
func parseContentRange(v string) (start, total int64, ok bool) {
	rest, found := strings.CutPrefix(v, "bytes ")
	if !found {
		return 0, 0, false
	}
	span, totalText, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, false
	}
	startText, _, found := strings.Cut(span, "-")
	if !found {
		return 0, 0, false
	}
	start, err1 := strconv.ParseInt(startText, 10, 64)
	total, err2 := strconv.ParseInt(totalText, 10, 64)
	return start, total, err1 == nil && err2 == nil
}
