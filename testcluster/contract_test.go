package testcluster

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestFilesV1ErrorTable drives every row of the /files/v1 error table through a follower of a
// real cluster (the rows that need a broken cluster are covered by the isolation test).
func TestFilesV1ErrorTable(t *testing.T) {
	c := New(t, Options{MaxFileSize: 50_000})
	validateAgainstSpec(t, c)
	_, plain := createKey(t, c, 0)
	full, _ := mustUpload(t, c, 0, "a.txt", []byte("hello"))
	read, resp, _ := c.Client(0).CreateToken(full, "read")
	if resp.Status != http.StatusOK {
		t.Fatalf("read token: %d", resp.Status)
	}
	mp := "multipart/form-data; boundary=B"
	root := http.Header{"Authorization": {"Bearer " + c.RootKey}}
	hdr := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i+1 < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	rows := []struct {
		name         string
		method, path string
		body         string
		header       http.Header
		status, code int
	}{
		{"2605 unknown token", "GET", "/files/v1/" + strings.Repeat("x", 43) + "/file", "", nil, 400, 2605},
		{"2606 read token deletes", "DELETE", "/files/v1/" + read.Token, "", nil, 401, 2606},
		{"2607 last full token", "DELETE", "/files/v1/" + full + "/tokens/" + full, "", nil, 403, 2607},
		{"2610 too large", "POST", "/files/v1/", "--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\n" +
			strings.Repeat("z", 60_000) + "\r\n--B--\r\n", hdr("Content-Type", mp, "Authorization", "Bearer "+c.RootKey), 400, 2610},
		{"10 no permission (list)", "GET", "/files/v1/", "", hdr("X-API-KEY", plain), 401, 10},
		{"10 no permission (settings)", "GET", "/files/v1/settings", "", hdr("X-API-KEY", plain), 401, 10},
		{"104 no key", "POST", "/files/v1/", "", hdr("Content-Type", mp), 401, 104},
		{"104 unknown key on list", "GET", "/files/v1/", "", hdr("X-API-KEY", "nope-nope-nope-nope"), 401, 104},
		{"13 empty body", "POST", "/files/v1/", "", hdr("Content-Type", mp, "Authorization", "Bearer "+c.RootKey), 400, 13},
		{"14 no file part", "POST", "/files/v1/", "--B\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nx\r\n--B--\r\n",
			hdr("Content-Type", mp, "Authorization", "Bearer "+c.RootKey), 400, 14},
		{"15 bad access level", "POST", "/files/v1/" + full + "/tokens", `{"accessLevel":"admin"}`, hdr("Content-Type", "application/json"), 400, 15},
		{"15 settings of the wrong type", "PUT", "/files/v1/settings", `{"disableForceDownloadForMimeTypes":"image/png"}`, root, 400, 15},
		{"22 malformed JSON", "POST", "/files/v1/" + full + "/tokens", `{"accessLevel":`, hdr("Content-Type", "application/json"), 400, 22},
		{"22 not multipart", "POST", "/files/v1/", "hello", hdr("Content-Type", "text/plain", "Authorization", "Bearer "+c.RootKey), 400, 22},
		{"19 bad RQL", "GET", "/files/v1/?eq(name,a", "", root, 400, 19},
		{"19 unknown RQL operator", "GET", "/files/v1/?frob(name,a)", "", root, 400, 19},
		{"19 huge nesting", "GET", "/files/v1/?" + strings.Repeat("and(", 5000) + "eq(name,a)" + strings.Repeat(")", 5000), "", root, 400, 19},
		{"16 unknown route", "GET", "/files/v2/nothing", "", nil, 404, 16},
	}
	for _, row := range rows {
		var body io.Reader
		if row.body != "" {
			body = strings.NewReader(row.body)
		}
		resp, err := c.Client(1).Do(row.method, row.path, body, row.header)
		if err != nil {
			t.Fatalf("%s: %v", row.name, err)
		}
		wantError(t, row.name, resp, row.status, row.code)
	}
}

// TestAdminListingWithRQL: the SDK's paging and a double-encoded RQL filter on a follower.
func TestAdminListingWithRQL(t *testing.T) {
	c := New(t, Options{})
	validateAgainstSpec(t, c)
	for i := range 7 {
		tag := "odd"
		if i%2 == 0 {
			tag = "even"
		}
		mustUpload(t, c, 0, "my file "+string(rune('a'+i))+".txt", []byte{byte(i)}, tag)
	}
	list := func(query string) (total, offset, limit int, names []string) {
		t.Helper()
		resp, err := c.Client(2).Do(http.MethodGet, "/files/v1/?"+query, nil, withKey(nil, c.RootKey))
		if err != nil || resp.Status != http.StatusOK {
			t.Fatalf("list %q: %v %d %s", query, err, resp.Status, resp.Body)
		}
		var out struct {
			Page struct{ Total, Offset, Limit int } `json:"page"`
			Data []FileMetadata                     `json:"data"`
		}
		if err := json.Unmarshal(resp.Body, &out); err != nil {
			t.Fatal(err)
		}
		for _, d := range out.Data {
			if len(d.Tokens) != 1 {
				t.Fatalf("listing entry without its token: %+v", d)
			}
			names = append(names, d.Name)
		}
		return out.Page.Total, out.Page.Offset, out.Page.Limit, names
	}
	if total, _, limit, names := list(""); total != 7 || limit != 20 || len(names) != 7 {
		t.Fatalf("default listing: total %d limit %d names %v", total, limit, names)
	}
	// The SDK pages with limit(n) then limit(n,n) while total > offset+limit.
	var all []string
	for off := 0; ; off += 3 {
		total, offset, limit, names := list("limit(3," + strconv.Itoa(off) + ")&sort(+name)")
		all = append(all, names...)
		if total <= offset+limit {
			break
		}
	}
	if len(all) != 7 || all[0] != "my file a.txt" || all[6] != "my file g.txt" {
		t.Fatalf("paged listing %v", all)
	}
	// Double-encoded value with a space, as the SDK sends it.
	q := "eq(name," + url.QueryEscape(url.PathEscape("my file c.txt")) + ")"
	if total, _, _, names := list(q); total != 1 || names[0] != "my file c.txt" {
		t.Fatalf("double-encoded filter: %d %v", total, names)
	}
	if total, _, _, _ := list("eq(tags,even)"); total != 4 {
		t.Fatalf("eq on tags: %d", total)
	}
	if total, _, limit, _ := list("limit(500)"); total != 7 || limit != 50 {
		t.Fatalf("limit clamp: total %d limit %d", total, limit)
	}
}

// TestEnmeshedErrorTable drives the /api/v2 failure rows through a follower.
func TestEnmeshedErrorTable(t *testing.T) {
	c := New(t, Options{})
	validateAgainstSpec(t, c)
	_, key := createKey(t, c, 0)
	id := enmeshedUpload(t, c, 0, key, []byte("x"))
	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	rows := []struct {
		name         string
		method, path string
		body         string
		key          string
		status       int
		code, msg    string
	}{
		{"no key", "GET", "/api/v2/Files", "", "", 401, "error.connector.unauthorized", ""},
		{"wrong key", "GET", "/api/v2/Files", "", "wrong-wrong-wrong", 401, "error.connector.unauthorized", ""},
		{"unknown file", "POST", "/api/v2/Files/FIL" + strings.Repeat("a", 17) + "/Token", "{}", key, 404, "error.runtime.recordNotFound",
			"File not found. Make sure the ID exists and the record is not expired."},
		{"past expiresAt", "POST", "/api/v2/Files/" + id + "/Token", `{"expiresAt":"` + past + `"}`, key, 400,
			"error.runtime.validation.invalidPropertyValue", "'expiresAt' must be in the future"},
		{"unknown id and past expiresAt: validation first", "POST", "/api/v2/Files/FIL" + strings.Repeat("b", 17) + "/Token",
			`{"expiresAt":"` + past + `"}`, key, 400, "error.runtime.validation.invalidPropertyValue", "'expiresAt' must be in the future"},
		{"expiresAt not ISO", "POST", "/api/v2/Files/" + id + "/Token", `{"expiresAt":"tomorrow"}`, key, 400,
			"error.runtime.validation.invalidPropertyValue", "expiresAt must match ISO8601 datetime format"},
		{"expiresAt empty", "POST", "/api/v2/Files/" + id + "/Token", `{"expiresAt":""}`, key, 400,
			"error.runtime.validation.invalidPropertyValue", "expiresAt must match ISO8601 datetime format"},
		{"ephemeral not boolean", "POST", "/api/v2/Files/" + id + "/Token", `{"ephemeral":"yes"}`, key, 400,
			"error.runtime.validation.invalidPropertyValue", "ephemeral must be boolean"},
		{"malformed id", "POST", "/api/v2/Files/FILshort/Token", "{}", key, 400,
			"error.runtime.validation.invalidPropertyValue", "fileId must match pattern FIL[A-Za-z0-9]{17}"},
		{"malformed JSON", "POST", "/api/v2/Files/" + id + "/Token", `{"ephemeral":`, key, 400,
			"error.connector.validation.invalidJsonInPayload", "The given payload is not a valid json object."},
		{"unknown filter", "GET", "/api/v2/Files?color=red", "", key, 400, "", "query must NOT have additional properties: unknown key 'color' (known: createdAt, createdBy, createdByDevice, description, expiresAt, filename, filesize, mimetype, tags, title)"},
		{"wrong method", "PUT", "/api/v2/Files/" + id, "", key, 405, "error.connector.http.methodNotAllowed", ""},
		{"unknown route", "GET", "/api/v2/Nothing", "", key, 404, "error.connector.http.routeDoesNotExist", ""},
		{"ephemeral token is not at Tokens/{id}", "GET", "/api/v2/Tokens/TOK" + strings.Repeat("c", 17), "", key, 404, "error.runtime.recordNotFound", ""},
	}
	for _, row := range rows {
		var body io.Reader
		h := http.Header{}
		if row.body != "" {
			body = strings.NewReader(row.body)
			h.Set("Content-Type", "application/json")
		}
		if row.key != "" {
			h.Set("X-API-KEY", row.key)
		}
		resp, err := c.Client(2).Do(row.method, row.path, body, h)
		if err != nil {
			t.Fatalf("%s: %v", row.name, err)
		}
		var env struct {
			Error struct{ Code, Message, ID, Time, Docs string } `json:"error"`
		}
		if err := json.Unmarshal(resp.Body, &env); err != nil || resp.Status != row.status ||
			(row.code != "" && env.Error.Code != row.code) || (row.msg != "" && env.Error.Message != row.msg) ||
			!strings.HasPrefix(env.Error.ID, "ERR") || len(env.Error.ID) != 20 || !strings.HasSuffix(env.Error.Time, "Z") {
			t.Fatalf("%s: got %d %s, want %d %s %q", row.name, resp.Status, resp.Body, row.status, row.code, row.msg)
		}
	}
	// An empty body of any content type counts as {}: an ephemeral token (the route's default).
	resp, _ := c.Client(1).Do(http.MethodPost, "/api/v2/Files/"+id+"/Token", nil, http.Header{"X-API-KEY": {key}, "Content-Type": {"text/plain"}})
	if resp.Status != http.StatusCreated || !strings.Contains(string(resp.Body), `"isEphemeral":true`) {
		t.Fatalf("empty body: %d %s", resp.Status, resp.Body)
	}
	// The QR variant.
	resp, _ = c.Client(1).Do(http.MethodPost, "/api/v2/Files/"+id+"/Token", strings.NewReader(`{"ephemeral":false}`),
		http.Header{"X-API-KEY": {key}, "Content-Type": {"application/json"}, "Accept": {"image/png"}})
	if resp.Status != http.StatusCreated || resp.Header.Get("Content-Type") != "image/png" ||
		!strings.HasPrefix(string(resp.Body), "\x89PNG") || resp.Header.Get("Content-Disposition") != "attachment;filename="+id+".png" {
		t.Fatalf("QR token: %d %v", resp.Status, resp.Header)
	}
}
