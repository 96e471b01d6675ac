package testcluster

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// jsonBody is a request body and its header.
func jsonBody(v any) (*strings.Reader, http.Header) {
	b, _ := json.Marshal(v)
	return strings.NewReader(string(b)), http.Header{"Content-Type": {"application/json"}}
}

// withKey adds an API key header.
func withKey(h http.Header, key string) http.Header {
	if h == nil {
		h = http.Header{}
	}
	h.Set("X-API-KEY", key)
	return h
}

// createKey makes an API key through node i with the root key and returns its id and secret.
func createKey(t *testing.T, c *Cluster, i int, perms ...string) (string, string) {
	t.Helper()
	body, h := jsonBody(map[string]any{"name": "k", "permissions": perms})
	resp, err := c.Client(i).Do(http.MethodPost, "/v1/apikeys", body, withKey(h, c.RootKey))
	if err != nil || resp.Status != http.StatusCreated {
		t.Fatalf("create api key: %v %d %s", err, resp.Status, resp.Body)
	}
	var out struct{ ID, Key string }
	if err := json.Unmarshal(resp.Body, &out); err != nil || out.Key == "" {
		t.Fatalf("create api key answer %s: %v", resp.Body, err)
	}
	return out.ID, out.Key
}

// enmeshedUpload uploads through /api/v2/Files/Own on node i with key and returns the file id.
func enmeshedUpload(t *testing.T, c *Cluster, i int, key string, data []byte) string {
	t.Helper()
	cl := *c.Client(i)
	body, ctype := multipartBody(t, map[string]string{"title": "t"}, "file", "e.txt", data)
	resp, err := cl.Do(http.MethodPost, "/api/v2/Files/Own", body, http.Header{"Content-Type": {ctype}, "X-Api-Key": {key}})
	if err != nil || resp.Status != http.StatusCreated {
		t.Fatalf("enmeshed upload through node%d: %v %d %s", i, err, resp.Status, resp.Body)
	}
	var out struct {
		Result struct{ ID string } `json:"result"`
	}
	if err := json.Unmarshal(resp.Body, &out); err != nil || !strings.HasPrefix(out.Result.ID, "FIL") {
		t.Fatalf("upload answer %s: %v", resp.Body, err)
	}
	return out.Result.ID
}

// fileToken asks node i for a token of fileID (POST /api/v2/Files/{id}/Token).
func fileToken(t *testing.T, c *Cluster, i int, key, fileID string, body map[string]any) (int, string) {
	t.Helper()
	rd, h := jsonBody(body)
	resp, err := c.Client(i).Do(http.MethodPost, "/api/v2/Files/"+fileID+"/Token", rd, withKey(h, key))
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Result struct {
			TruncatedReference string `json:"truncatedReference"`
		} `json:"result"`
	}
	_ = json.Unmarshal(resp.Body, &out)
	return resp.Status, out.Result.TruncatedReference
}

// TestRevokedKeyRefusedAtOnceEverywhere: once a key's revoke is acknowledged by node 0, node 2
// refuses it, every time.
func TestRevokedKeyRefusedAtOnceEverywhere(t *testing.T) {
	c := New(t, Options{})
	validateAgainstSpec(t, c)
	data := randomData(51, 500)
	for iter := range 15 {
		id, key := createKey(t, c, 0)
		cl := *c.Client(2)
		cl.APIKey = key
		meta, resp, err := cl.Upload("k.bin", data)
		if err != nil || resp.Status != http.StatusOK || meta.CreatorID != id {
			t.Fatalf("iteration %d: upload with a fresh key on node2: %v %d %s", iter, err, resp.Status, resp.Body)
		}
		resp, err = c.Client(0).Do(http.MethodDelete, "/v1/apikeys/"+id, nil, withKey(nil, c.RootKey))
		if err != nil || resp.Status != http.StatusOK {
			t.Fatalf("revoke: %v %d %s", err, resp.Status, resp.Body)
		}
		_, resp, err = cl.Upload("k.bin", data)
		if err != nil {
			t.Fatal(err)
		}
		wantError(t, fmt.Sprintf("iteration %d: revoked key on node2", iter), resp, http.StatusUnauthorized, 104)
		resp, _ = c.Client(1).Do(http.MethodGet, "/api/v2/Files", nil, withKey(nil, key))
		if resp.Status != http.StatusUnauthorized || !strings.Contains(string(resp.Body), `"error"`) {
			t.Fatalf("iteration %d: revoked key on /api/v2: %d %s", iter, resp.Status, resp.Body)
		}
	}
}

// TestEphemeralTokenAcrossNodes: minted on node 0 without a Raft write, honoured on node 2, and
// refused after expiry, after the file's deletion, and after a signing key rotation.
func TestEphemeralTokenAcrossNodes(t *testing.T) {
	c := New(t, Options{})
	validateAgainstSpec(t, c)
	_, key := createKey(t, c, 0)
	data := randomData(52, 20_000)

	t.Run("works on another node, without a raft write", func(t *testing.T) {
		id := enmeshedUpload(t, c, 0, key, data)
		before := c.Node(0).Status().CommitIndex
		status, tok := fileToken(t, c, 0, key, id, map[string]any{"ephemeral": true})
		if status != http.StatusCreated || !strings.HasPrefix(tok, "e1.") {
			t.Fatalf("ephemeral token: %d %q", status, tok)
		}
		if after := c.Node(0).Status().CommitIndex; after != before {
			t.Fatalf("minting an ephemeral token committed raft entries (%d -> %d)", before, after)
		}
		mustDownload(t, c, 2, tok, data)
		_, resp, _ := c.Client(2).Details(tok)
		if resp.Status != http.StatusOK || strings.Contains(string(resp.Body), `"tokens"`) {
			t.Fatalf("details with an ephemeral token: %d %s", resp.Status, resp.Body)
		}
		resp, _ = c.Client(1).Delete(tok)
		wantError(t, "delete with an ephemeral (read) token", resp, http.StatusUnauthorized, 2606)
	})
	t.Run("refused after expiry", func(t *testing.T) {
		id := enmeshedUpload(t, c, 0, key, data)
		exp := time.Now().Add(1500 * time.Millisecond)
		status, tok := fileToken(t, c, 0, key, id, map[string]any{"expiresAt": exp.UTC().Format(time.RFC3339Nano)})
		if status != http.StatusCreated {
			t.Fatalf("token: %d", status)
		}
		mustDownload(t, c, 2, tok, data)
		WaitFor(t, 10*time.Second, "the token to expire", func() bool { return time.Now().After(exp) })
		resp, _ := c.Client(2).Download(tok)
		wantError(t, "expired ephemeral token", resp, http.StatusBadRequest, 2605)
	})
	t.Run("refused after the file is deleted", func(t *testing.T) {
		id := enmeshedUpload(t, c, 0, key, data)
		_, tok := fileToken(t, c, 0, key, id, map[string]any{})
		mustDownload(t, c, 2, tok, data)
		resp, err := c.Client(1).Do(http.MethodDelete, "/api/v2/Files/"+id, nil, withKey(nil, key))
		if err != nil || resp.Status != http.StatusNoContent {
			t.Fatalf("delete: %v %d %s", err, resp.Status, resp.Body)
		}
		resp, _ = c.Client(2).Download(tok)
		wantError(t, "ephemeral token of a deleted file", resp, http.StatusBadRequest, 2605)
	})
	t.Run("refused after key rotation", func(t *testing.T) {
		id := enmeshedUpload(t, c, 0, key, data)
		_, tok := fileToken(t, c, 0, key, id, map[string]any{"ephemeral": true})
		_, persisted := fileToken(t, c, 0, key, id, map[string]any{"ephemeral": false})
		mustDownload(t, c, 2, tok, data)
		resp, err := c.Client(1).Do(http.MethodPost, "/v1/signing-key/rotate", nil, withKey(nil, c.RootKey))
		if err != nil || resp.Status != http.StatusOK {
			t.Fatalf("rotate: %v %d %s", err, resp.Status, resp.Body)
		}
		resp, _ = c.Client(2).Download(tok)
		wantError(t, "ephemeral token after rotation", resp, http.StatusBadRequest, 2605)
		mustDownload(t, c, 2, persisted, data) // persisted tokens are not affected
		_, fresh := fileToken(t, c, 0, key, id, map[string]any{"ephemeral": true})
		mustDownload(t, c, 2, fresh, data)
	})
}

// TestVisibilityByID: a second principal cannot see or touch the first one's file by id (404)
// unless it holds VIEW_FILES.
func TestVisibilityByID(t *testing.T) {
	c := New(t, Options{})
	validateAgainstSpec(t, c)
	_, alice := createKey(t, c, 0)
	_, bob := createKey(t, c, 0)
	_, viewer := createKey(t, c, 0, "VIEW_FILES")
	id := enmeshedUpload(t, c, 0, alice, randomData(53, 100))
	for _, rt := range []struct{ method, path string }{
		{http.MethodGet, "/api/v2/Files/" + id},
		{http.MethodGet, "/api/v2/Files/" + id + "/Download"},
		{http.MethodDelete, "/api/v2/Files/" + id},
		{http.MethodPost, "/api/v2/Files/" + id + "/Token"},
	} {
		resp, err := c.Client(1).Do(rt.method, rt.path, nil, withKey(nil, bob))
		if err != nil || resp.Status != http.StatusNotFound || !strings.Contains(string(resp.Body), "error.runtime.recordNotFound") {
			t.Fatalf("bob %s %s: %v %d %s", rt.method, rt.path, err, resp.Status, resp.Body)
		}
	}
	resp, _ := c.Client(2).Do(http.MethodGet, "/api/v2/Files", nil, withKey(nil, bob))
	if resp.Status != http.StatusOK || strings.Contains(string(resp.Body), id) {
		t.Fatalf("bob's list shows alice's file: %d %s", resp.Status, resp.Body)
	}
	resp, _ = c.Client(2).Do(http.MethodGet, "/api/v2/Files/"+id, nil, withKey(nil, viewer))
	if resp.Status != http.StatusOK || !strings.Contains(string(resp.Body), `"isOwn":false`) {
		t.Fatalf("viewer with VIEW_FILES: %d %s", resp.Status, resp.Body)
	}
	resp, _ = c.Client(2).Do(http.MethodDelete, "/api/v2/Files/"+id, nil, withKey(nil, viewer))
	if resp.Status != http.StatusForbidden || !strings.Contains(string(resp.Body), `"error"`) {
		t.Fatalf("VIEW_FILES may see but not delete another's file: %d %s", resp.Status, resp.Body)
	}
	resp, _ = c.Client(2).Do(http.MethodGet, "/api/v2/Files/"+id, nil, withKey(nil, alice))
	if resp.Status != http.StatusOK || !strings.Contains(string(resp.Body), `"isOwn":true`) {
		t.Fatalf("owner: %d %s", resp.Status, resp.Body)
	}
}

// TestTokenExpiryRefusedAtOnceAndReaped: an expired token is refused at once on every node, and
// the leader removes it (and expired files) from the replicated state.
func TestTokenExpiryRefusedAtOnceAndReaped(t *testing.T) {
	c := New(t, Options{})
	validateAgainstSpec(t, c)
	full, _ := mustUpload(t, c, 0, "x.bin", randomData(54, 100))
	exp := time.Now().Add(time.Second)
	body, h := jsonBody(map[string]any{"accessLevel": "read", "expiresAt": exp.UTC().Format(time.RFC3339Nano)})
	resp, err := c.Client(0).Do(http.MethodPost, "/files/v1/"+full+"/tokens", body, h)
	if err != nil || resp.Status != http.StatusOK {
		t.Fatalf("create expiring token: %v %d %s", err, resp.Status, resp.Body)
	}
	var g TokenGrant
	_ = json.Unmarshal(resp.Body, &g)
	mustDownload(t, c, 1, g.Token, randomData(54, 100))
	WaitFor(t, 10*time.Second, "the token to expire", func() bool { return time.Now().After(exp) })
	for i := range 3 {
		resp, _ := c.Client(i).Download(g.Token)
		wantError(t, fmt.Sprintf("expired token on node%d", i), resp, http.StatusBadRequest, 2605)
	}
	WaitFor(t, 10*time.Second, "the expired token removed from every node's state", func() bool {
		for i := range 3 {
			if _, ok := c.Node(i).FSM().TokenBySecret(g.Token); ok {
				return false
			}
		}
		return true
	})
	mustDownload(t, c, 2, full, randomData(54, 100))
}

// TestSettingsControlDisposition: PUT settings through one node changes the download's
// Content-Disposition on another; permissions are enforced.
func TestSettingsControlDisposition(t *testing.T) {
	c := New(t, Options{})
	validateAgainstSpec(t, c)
	_, weak := createKey(t, c, 0, "VIEW_FILE_SERVICE_SETTINGS")
	cl := *c.Client(0)
	cl.APIKey = c.RootKey
	data := []byte("\x89PNG\r\n\x1a\n fake png")
	meta, resp, err := cl.Upload("p.png", data)
	if err != nil || resp.Status != http.StatusOK {
		t.Fatalf("upload: %v %d", err, resp.Status)
	}
	tok := meta.Tokens[0].Token
	r, _ := c.Client(1).Download(tok)
	if !strings.HasPrefix(r.Header.Get("Content-Disposition"), "attachment") {
		t.Fatalf("default disposition %q", r.Header.Get("Content-Disposition"))
	}
	body, h := jsonBody(map[string]any{"disableForceDownloadForMimeTypes": []string{meta.MimeType}})
	resp, _ = c.Client(2).Do(http.MethodPut, "/files/v1/settings", body, withKey(h, weak))
	wantError(t, "PUT settings without UPDATE_FILE_SERVICE_SETTINGS", resp, http.StatusUnauthorized, 10)
	body, h = jsonBody(map[string]any{"disableForceDownloadForMimeTypes": []string{meta.MimeType}})
	resp, _ = c.Client(2).Do(http.MethodPut, "/files/v1/settings", body, withKey(h, c.RootKey))
	if resp.Status != http.StatusOK {
		t.Fatalf("PUT settings: %d %s", resp.Status, resp.Body)
	}
	resp, _ = c.Client(1).Do(http.MethodGet, "/files/v1/settings", nil, withKey(nil, weak))
	if resp.Status != http.StatusOK || !strings.Contains(string(resp.Body), meta.MimeType) {
		t.Fatalf("GET settings: %d %s", resp.Status, resp.Body)
	}
	WaitFor(t, 5*time.Second, "inline disposition on node1", func() bool {
		r, _ := c.Client(1).Download(tok)
		return strings.HasPrefix(r.Header.Get("Content-Disposition"), "inline")
	})
}
