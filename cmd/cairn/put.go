package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
)

// uploadedFile is the part of /files/v1's FileMetadata that put shows.
type uploadedFile struct {
	Name     string   `json:"name"`
	Mimetype string   `json:"mimetype"`
	Size     int64    `json:"size"`
	Tags     []string `json:"tags"`
	Tokens   []struct {
		Token       string `json:"token"`
		AccessLevel string `json:"accessLevel"`
	} `json:"tokens"`
}

// runPut implements `cairn put FILE`: upload through /files/v1 and print the full token.
func runPut(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := newCommand("cairn put", "<file>", "Upload a file and print its full-access token ('-' reads standard input; then --name is required).\n"+
		"The file streams from disk: memory stays flat whatever its size.", stderr)
	cf := addClientFlags(cmd.fs, "API key of the uploader (not needed when the cluster allows anonymous uploads)")
	name := cmd.fs.String("name", "", "the file's name in cairn (default: the file's base name)")
	var tags []string
	cmd.fs.Var(repeatedValue{&tags}, "tag", "a tag; repeat for several")
	quiet := cmd.fs.Bool("quiet", false, "no progress bar")
	asJSON := cmd.fs.Bool("json", false, "print the whole FileMetadata answer as JSON instead of the token")
	pos, err := cmd.parse(args, 1)
	if err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	path := pos[0]
	var (
		src  io.Reader
		size int64 = -1
	)
	if path == "-" {
		if *name == "" {
			return cmd.usageErr("--name is required when the file is standard input")
		}
		src = os.Stdin
	} else {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return err
		}
		if !st.Mode().IsRegular() {
			return fmt.Errorf("%s is not a regular file", path)
		}
		src, size = f, st.Size()
		if *name == "" {
			*name = filepath.Base(path)
		}
	}
	body, err := newUploadBody(*name, tags, src, size)
	if err != nil {
		return err
	}
	progress := newProgress(stderr, *quiet, "upload", size, 0)
	body.progress = progress
	req, err := c.newRequest(ctx, http.MethodPost, "/files/v1/", body, c.key != "")
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", body.contentType)
	req.ContentLength = body.length() // -1 (chunked) for standard input
	// A node that refuses the upload from its headers (no key, a declared size over the limit)
	// answers before a byte of the file is sent.
	req.Header.Set("Expect", "100-continue")
	resp, err := c.do(req)
	if err != nil {
		progress.abandon()
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		progress.abandon()
		return fmt.Errorf("read the upload's answer: %w", err)
	}
	progress.finish()
	var meta uploadedFile
	if err := json.Unmarshal(raw, &meta); err != nil {
		return fmt.Errorf("decode the upload's answer: %w", err)
	}
	if *asJSON {
		_, err := stdout.Write(append(bytes.TrimSpace(raw), '\n'))
		return err
	}
	for _, t := range meta.Tokens {
		if t.AccessLevel == "full" {
			_, err := fmt.Fprintln(stdout, t.Token)
			return err
		}
	}
	return fmt.Errorf("the upload's answer holds no full token: %s", raw)
}

// uploadBody is a multipart/form-data body that streams the file between a small header and
// trailer built up front, so its length is known without reading the file: the server sees an
// honest Content-Length and memory stays flat.
type uploadBody struct {
	contentType string
	head, tail  []byte
	fileSize    int64 // -1: unknown (standard input)
	r           io.Reader
	progress    io.Writer
}

// newUploadBody lays out the parts as /files/v1 reads them: name, one tags[] per tag, then file
// (with a Content-Type from the name's extension, or none so that the server derives one).
func newUploadBody(name string, tags []string, file io.Reader, size int64) (*uploadBody, error) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if err := mw.WriteField("name", name); err != nil {
		return nil, err
	}
	for _, t := range tags {
		if err := mw.WriteField("tags[]", t); err != nil {
			return nil, err
		}
	}
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="file"; filename="%s"`, escapeQuotes(name)))
	if mt := mime.TypeByExtension(filepath.Ext(name)); mt != "" {
		h.Set("Content-Type", mt)
	}
	if _, err := mw.CreatePart(h); err != nil {
		return nil, err
	}
	head := bytes.Clone(buf.Bytes())
	buf.Reset()
	if err := mw.Close(); err != nil {
		return nil, err
	}
	b := &uploadBody{contentType: mw.FormDataContentType(), head: head, tail: bytes.Clone(buf.Bytes()), fileSize: size}
	b.r = io.MultiReader(bytes.NewReader(b.head), &countingReader{r: file, w: b}, bytes.NewReader(b.tail))
	return b, nil
}

var quoteEscaper = strings.NewReplacer("\\", "\\\\", `"`, "\\\"")

func escapeQuotes(s string) string { return quoteEscaper.Replace(s) }

// length is the body's exact length, or -1 when the file's size is unknown.
func (b *uploadBody) length() int64 {
	if b.fileSize < 0 {
		return -1
	}
	return int64(len(b.head)) + b.fileSize + int64(len(b.tail))
}

func (b *uploadBody) Read(p []byte) (int, error) { return b.r.Read(p) }

// countingReader reports the file bytes read to the body's progress.
type countingReader struct {
	r io.Reader
	w *uploadBody
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 && c.w.progress != nil {
		_, _ = c.w.progress.Write(p[:n])
	}
	return n, err
}
