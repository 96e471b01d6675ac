package testcluster

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strings"
	"time"
)

// Client speaks the public /files/v1 API of one node, the way the official SDK does (multipart
// with chunked transfer encoding). Every call returns the HTTP status and the decoded body.
type Client struct {
	Base string
	HTTP *http.Client
	// APIKey is sent as a bearer token on uploads when set.
	APIKey string
}

// NewClient returns a client for the node whose HTTP API listens on addr.
func NewClient(addr string) *Client {
	return &Client{
		Base: "http://" + addr,
		HTTP: &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}},
	}
}

// UseTLS switches the client to HTTPS with (a copy of) cfg.
func (c *Client) UseTLS(cfg *tls.Config) {
	c.Base = "https://" + strings.TrimPrefix(c.Base, "http://")
	c.HTTP.Transport = &http.Transport{MaxIdleConnsPerHost: 16, TLSClientConfig: cfg.Clone(), ForceAttemptHTTP2: true}
}

// FileMetadata is the /files/v1 file shape.
type FileMetadata struct {
	Name              string       `json:"name"`
	MimeType          string       `json:"mimetype"`
	CreatorID         string       `json:"creatorId"`
	Size              int64        `json:"size"`
	Tags              []string     `json:"tags"`
	Tokens            []TokenGrant `json:"tokens,omitempty"`
	CreationTimestamp string       `json:"creationTimestamp"`
	UpdateTimestamp   string       `json:"updateTimestamp"`
}

// TokenGrant is a token and its access level.
type TokenGrant struct {
	Token       string `json:"token"`
	AccessLevel string `json:"accessLevel"`
}

// APIError is the /files/v1 error body.
type APIError struct {
	Code    int    `json:"code"`
	Name    string `json:"name"`
	Message string `json:"message"`
}

// Response is a raw answer: status, headers and body.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Err decodes the body as an API error (zero value when it is not one).
func (r Response) Err() APIError {
	var e APIError
	_ = json.Unmarshal(r.Body, &e)
	return e
}

// Upload sends a file as the SDK does: name, file, then one tags[] part per tag, chunked.
func (c *Client) Upload(name string, data []byte, tags ...string) (FileMetadata, Response, error) {
	return c.UploadStream(name, bytes.NewReader(data), tags...)
}

// UploadStream is Upload with the file content read from r (never buffered whole).
func (c *Client) UploadStream(name string, r io.Reader, tags ...string) (FileMetadata, Response, error) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		err := writeUploadBody(mw, name, r, tags)
		pw.CloseWithError(err)
	}()
	req, err := http.NewRequest(http.MethodPost, c.Base+"/files/v1/", pr)
	if err != nil {
		return FileMetadata{}, Response{}, err
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	if c.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.APIKey)
	}
	resp, err := c.do(req)
	if err != nil {
		return FileMetadata{}, resp, err
	}
	var meta FileMetadata
	if resp.Status == http.StatusOK {
		if err := json.Unmarshal(resp.Body, &meta); err != nil {
			return meta, resp, fmt.Errorf("decode upload answer: %w", err)
		}
	}
	return meta, resp, nil
}

func writeUploadBody(mw *multipart.Writer, name string, r io.Reader, tags []string) error {
	if err := mw.WriteField("name", name); err != nil {
		return err
	}
	h := make(textproto.MIMEHeader)
	h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="file"; filename=%q`, name))
	h.Set("Content-Type", "application/octet-stream")
	part, err := mw.CreatePart(h)
	if err != nil {
		return err
	}
	if _, err := io.Copy(part, r); err != nil {
		return err
	}
	for _, tag := range tags {
		if err := mw.WriteField("tags[]", tag); err != nil {
			return err
		}
	}
	return mw.Close()
}

// Download fetches a file's bytes.
func (c *Client) Download(token string) (Response, error) {
	return c.Do(http.MethodGet, "/files/v1/"+token+"/file", nil, nil)
}

// Details fetches a file's metadata.
func (c *Client) Details(token string) (FileMetadata, Response, error) {
	resp, err := c.Do(http.MethodGet, "/files/v1/"+token+"/details", nil, nil)
	var meta FileMetadata
	if err == nil && resp.Status == http.StatusOK {
		err = json.Unmarshal(resp.Body, &meta)
	}
	return meta, resp, err
}

// Delete removes the file behind a full token.
func (c *Client) Delete(token string) (Response, error) {
	return c.Do(http.MethodDelete, "/files/v1/"+token, nil, nil)
}

// CreateToken adds a token of the given access level.
func (c *Client) CreateToken(token, access string) (TokenGrant, Response, error) {
	body := fmt.Sprintf(`{"accessLevel":%q}`, access)
	resp, err := c.Do(http.MethodPost, "/files/v1/"+token+"/tokens", strings.NewReader(body),
		http.Header{"Content-Type": {"application/json"}})
	var g TokenGrant
	if err == nil && resp.Status == http.StatusOK {
		err = json.Unmarshal(resp.Body, &g)
	}
	return g, resp, err
}

// DeleteToken removes tokenToDelete using the full token.
func (c *Client) DeleteToken(token, tokenToDelete string) (Response, error) {
	return c.Do(http.MethodDelete, "/files/v1/"+token+"/tokens/"+tokenToDelete, nil, nil)
}

// Do sends any request to the node and reads the whole answer.
func (c *Client) Do(method, path string, body io.Reader, header http.Header) (Response, error) {
	req, err := http.NewRequest(method, c.Base+path, body)
	if err != nil {
		return Response{}, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	return c.do(req)
}

func (c *Client) do(req *http.Request) (Response, error) {
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return Response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	out := Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
	if err != nil {
		return out, fmt.Errorf("read answer: %w", err)
	}
	return out, nil
}
