package httpapi

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/core"
	"github.com/cairn-dev/cairn/fsm"
)

func TestEnmeshedUpload(t *testing.T) {
	e := newEnmeshedEnv(t)
	body, ct := multipartBody(t,
		part{name: "title", body: "Greeting"},
		part{name: "file", filename: "hellö.txt", contentType: "Text/Markdown; charset=UTF-8", body: "hello!"},
		part{name: "description", body: "a file"},
		part{name: "expiresAt", body: "2099-01-02T03:04:05+01:00"},
		part{name: "tags", body: "a"},
		part{name: "tags", body: "b"},
		part{name: "ignored", body: "x"},
	)
	r := e.do(t, http.MethodPost, "/api/v2/Files/Own", chunked{body}, map[string]string{"Content-Type": ct})
	m := resultObject(t, r, http.StatusCreated, fileDTOKeys...)
	want := map[string]any{
		"isOwn": true, "filename": "hellö.txt", "filesize": float64(6), "createdBy": "alice",
		"createdByDevice": "n1", "expiresAt": "2099-01-02T02:04:05.000Z", "mimetype": "text/markdown",
		"title": "Greeting", "description": "a file", "tags": []any{"a", "b"},
	}
	for k, v := range want {
		if fmt.Sprint(m[k]) != fmt.Sprint(v) {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
	if id, _ := m["id"].(string); !validID(id, "FIL") {
		t.Errorf("id = %v", m["id"])
	}
	if ts, _ := m["createdAt"].(string); !enmeshedTimePattern.MatchString(ts) {
		t.Errorf("createdAt = %v", m["createdAt"])
	}

	t.Run("only a file", func(t *testing.T) {
		body, ct := multipartBody(t, part{name: "file", filename: "plain", body: "x"})
		m := resultObject(t, e.do(t, http.MethodPost, "/api/v2/Files/Own", body, map[string]string{"Content-Type": ct}),
			http.StatusCreated, fileDTOBareKeys...)
		if m["title"] != "" || m["mimetype"] != "text/plain" || m["expiresAt"] != neverExpires {
			t.Fatalf("defaults: %v", m)
		}
	})
}

func TestEnmeshedUploadRefused(t *testing.T) {
	file := part{name: "file", filename: "f.txt", body: "data"}
	for _, tc := range []struct {
		name     string
		parts    []part
		raw      string // a raw body instead of parts
		ct       string
		message  string
		begun    bool // whether the upload reached core (and so must be aborted)
		tooLarge bool
	}{
		{name: "no file", parts: []part{{name: "title", body: "t"}}, message: msgContentRequired},
		{name: "file without filename", parts: []part{{name: "file", body: "x"}}, message: msgContentRequired},
		{name: "not multipart", raw: "hello", ct: "text/plain", message: msgContentRequired},
		{name: "no body", raw: "", message: msgContentRequired},
		{name: "two files", parts: []part{file, file}, message: msgOneFilePart, begun: true},
		{name: "past expiresAt", parts: []part{{name: "expiresAt", body: "2000-01-01"}, file}, message: msgExpiresAtFuture},
		{name: "past expiresAt after the file", parts: []part{file, {name: "expiresAt", body: "2001"}}, message: msgExpiresAtFuture, begun: true},
		{name: "empty expiresAt", parts: []part{{name: "expiresAt", body: ""}, file}, message: msgExpiresAtFormat},
		{name: "garbage expiresAt", parts: []part{{name: "expiresAt", body: "soon"}, file}, message: msgExpiresAtFormat},
		{name: "repeated title", parts: []part{{name: "title", body: "a"}, {name: "title", body: "b"}, file}, message: "title must be string"},
		{name: "long title", parts: []part{{name: "title", body: strings.Repeat("t", maxFieldBytes+1)}, file}},
		{name: "binary description", parts: []part{{name: "description", body: "\xff\xfe"}, file}},
		{name: "too large", parts: []part{{name: "file", filename: "big", body: strings.Repeat("z", 1<<10+1)}},
			message: "file content exceeds the maximum file size of 1 KiB (1024 bytes)", begun: true, tooLarge: true},
		{name: "truncated", raw: "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\nabc",
			ct: "multipart/form-data; boundary=b", begun: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnmeshedEnv(t)
			var body io.Reader = strings.NewReader(tc.raw)
			ct := tc.ct
			if tc.parts != nil {
				buf, mct := multipartBody(t, tc.parts...)
				body, ct = chunked{buf}, mct
			}
			r := e.do(t, http.MethodPost, "/api/v2/Files/Own", body, map[string]string{"Content-Type": ct})
			wantEnmeshedError(t, r, http.StatusBadRequest, codeInvalidPropertyValue, tc.message)
			if e.core.Files() != 0 {
				t.Fatal("a refused upload created a file")
			}
			up := e.svc.lastUpload()
			if (up != nil) != tc.begun {
				t.Fatalf("upload begun = %v, want %v", up != nil, tc.begun)
			}
			if up != nil {
				if committed, aborted, _, _ := up.state(); committed || !aborted {
					t.Fatalf("committed %v, aborted %v: a refused upload must be aborted", committed, aborted)
				}
			}
			e.waitNoStrayShards(t)
		})
	}
}

func TestEnmeshedUploadServiceFailure(t *testing.T) {
	e := newEnmeshedEnv(t)
	e.fail(false, fsm.CmdCreateFile, errors.New("no leader"))
	body, ct := multipartBody(t, part{name: "file", filename: "f", body: "x"})
	wantEnmeshedError(t, e.do(t, http.MethodPost, "/api/v2/Files/Own", body, map[string]string{"Content-Type": ct}),
		http.StatusServiceUnavailable, codeUnavailable, "")
	if _, aborted, _, _ := e.svc.lastUpload().state(); !aborted {
		t.Fatal("a failed commit was not aborted")
	}
	if e.core.Files() != 0 {
		t.Fatal("a refused commit created a file")
	}
	if e.core.Stray() == 0 { // the outcome is unknown: the GC, not the upload, removes them
		t.Fatal("the shards of a commit of unknown outcome were deleted")
	}
}

// visibilityFixture stores a file of alice's, one of bob's and one of alice's that has expired
// (the clock moved past it; the reaper has not run).
func visibilityFixture(t *testing.T, e *enmeshedEnv) (alices, bobs, expired core.FileInfo) {
	t.Helper()
	alices, _ = e.upload(t, "alice", core.FileAttrs{Name: "a.txt", MimeType: "text/plain", Title: "A", Tags: []string{"x"}, Description: "d"}, "alice's")
	bobs, _ = e.upload(t, "bob", core.FileAttrs{Name: "b.txt", MimeType: "text/plain"}, "bob's")
	expired, _ = e.upload(t, "alice", core.FileAttrs{Name: "old.txt", ExpiresAt: e.core.Clock.Now().Add(time.Minute)}, "old")
	e.core.Clock.Advance(2 * time.Minute)
	return alices, bobs, expired
}

func TestEnmeshedGetFile(t *testing.T) {
	e := newEnmeshedEnv(t)
	alices, bobs, expired := visibilityFixture(t, e)
	notFound := "File not found. Make sure the ID exists and the record is not expired."
	for _, tc := range []struct {
		name, key, id string
		status        int
		isOwn         bool
	}{
		{"own", keyAlice, alices.ID, 200, true},
		{"other's with VIEW_FILES", keyAdmin, bobs.ID, 200, false},
		{"other's", keyAlice, bobs.ID, 404, false},
		{"expired", keyAlice, expired.ID, 404, false},
		{"unknown", keyAlice, unknownFileID, 404, false},
		{"malformed", keyAlice, "FIL123", 400, false},
		{"wrong prefix", keyAlice, "TOKaaaaaaaaaaaaaaaaa", 400, false},
		{"non-alphanumeric", keyAlice, "FILaaaaaaaaaaaaaaaa-", 400, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(t, http.MethodGet, "/api/v2/Files/"+tc.id, nil, map[string]string{"X-API-KEY": tc.key})
			switch tc.status {
			case 400:
				wantEnmeshedError(t, r, 400, codeInvalidPropertyValue, msgFileIDPattern)
			case 404:
				wantEnmeshedError(t, r, 404, codeRecordNotFound, notFound)
			default:
				keys := fileDTOBareKeys
				if tc.id == alices.ID {
					keys = fileDTOKeys
				}
				m := resultObject(t, r, tc.status, keys...)
				if m["id"] != tc.id || m["isOwn"] != tc.isOwn {
					t.Fatalf("got %v", m)
				}
			}
		})
	}
	r := e.do(t, http.MethodGet, "/api/v2/Files/"+alices.ID, nil, nil)
	m := resultObject(t, r, 200, fileDTOKeys...)
	if m["createdAt"] != "2026-02-09T11:03:27.179Z" || m["createdByDevice"] != "n1" || m["description"] != "d" ||
		m["title"] != "A" || m["filesize"] != float64(7) || m["createdBy"] != "alice" {
		t.Fatalf("FileDTO = %v", m)
	}
}

func TestEnmeshedDeleteFile(t *testing.T) {
	e := newEnmeshedEnv(t)
	alices, bobs, _ := visibilityFixture(t, e)
	r := e.do(t, http.MethodDelete, "/api/v2/Files/"+alices.ID, nil, nil)
	if r.status != http.StatusNoContent || len(r.body) != 0 {
		t.Fatalf("delete = %d %q, want 204 with no body", r.status, r.body)
	}
	wantEnmeshedError(t, e.do(t, http.MethodGet, "/api/v2/Files/"+alices.ID, nil, nil), 404, codeRecordNotFound, "")
	wantEnmeshedError(t, e.do(t, http.MethodDelete, "/api/v2/Files/"+alices.ID, nil, nil), 404, codeRecordNotFound, "")
	wantEnmeshedError(t, e.do(t, http.MethodDelete, "/api/v2/Files/"+bobs.ID, nil, nil), 404, codeRecordNotFound, "")
	wantEnmeshedError(t, e.do(t, http.MethodDelete, "/api/v2/Files/nope", nil, nil), 400, codeInvalidPropertyValue, msgFileIDPattern)
	if n := e.core.Files(); n != 2 {
		t.Fatalf("%d files left, want bob's and the expired one", n)
	}
}

func TestEnmeshedDownload(t *testing.T) {
	e := newEnmeshedEnv(t)
	f, _ := e.upload(t, "alice", core.FileAttrs{Name: "hello wörld;x\".txt", MimeType: "text/markdown"}, "# hello")
	r := e.do(t, http.MethodGet, "/api/v2/Files/"+f.ID+"/Download", nil, nil)
	if r.status != http.StatusOK || string(r.body) != "# hello" {
		t.Fatalf("download = %d %q", r.status, r.body)
	}
	for k, want := range map[string]string{
		"Content-Type":        "text/markdown",
		"Content-Disposition": "attachment;filename=hello%20w%C3%B6rld%3Bx%22.txt",
		"Content-Length":      "7",
	} {
		if got := r.header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	r = e.do(t, http.MethodGet, "/api/v2/Files/"+f.ID+"/Download", nil, map[string]string{"Range": "bytes=2-"})
	if r.status != http.StatusPartialContent || string(r.body) != "hello" {
		t.Fatalf("range = %d %q", r.status, r.body)
	}
	// Any Accept is fine: the answer is the file's own type.
	if r := e.do(t, http.MethodGet, "/api/v2/Files/"+f.ID+"/Download", nil, map[string]string{"Accept": "image/png"}); r.status != 200 {
		t.Fatalf("download with a narrow Accept = %d", r.status)
	}
	wantEnmeshedError(t, e.do(t, http.MethodGet, "/api/v2/Files/"+unknownFileID+"/Download", nil, nil), 404, codeRecordNotFound, "")
	wantEnmeshedError(t, e.do(t, http.MethodGet, "/api/v2/Files/"+f.ID+"/Download", nil, map[string]string{"X-API-KEY": keyBob}),
		404, codeRecordNotFound, "")
	wantEnmeshedError(t, e.do(t, http.MethodGet, "/api/v2/Files/x/Download", nil, nil), 400, codeInvalidPropertyValue, msgFileIDPattern)
}

func TestEnmeshedListFilters(t *testing.T) {
	e := newEnmeshedEnv(t)
	day := func(d int) time.Time { return time.Date(2026, 1, d, 12, 0, 0, 500_000, time.UTC) }
	fileIDs := map[int]string{}
	add := func(n int, creator string, attrs core.FileAttrs, data string) {
		e.core.Clock.Set(day(n))
		f, _ := e.upload(t, creator, attrs, data)
		fileIDs[n] = f.ID
	}
	add(1, "alice", core.FileAttrs{Name: "report.pdf", MimeType: "application/pdf", Title: "Q1 report", Tags: []string{"finance", "q1"}}, strings.Repeat("r", 100))
	add(2, "alice", core.FileAttrs{Name: "photo.png", MimeType: "image/png", Tags: []string{"holiday"},
		ExpiresAt: time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)}, strings.Repeat("p", 10))
	add(3, "alice", core.FileAttrs{Name: "notes.txt", MimeType: "text/plain", Title: "notes"}, "n")
	add(4, "bob", core.FileAttrs{Name: "bob.txt", MimeType: "text/plain", Tags: []string{"q1"}}, "bob")

	for _, tc := range []struct {
		name, path, key string
		want            []int // file numbers, in createdAt order
	}{
		{"all of alice's", "/api/v2/Files", keyAlice, []int{1, 2, 3}},
		{"VIEW_FILES sees all", "/api/v2/Files", keyAdmin, []int{1, 2, 3, 4}},
		{"own only", "/api/v2/Files/Own", keyAdmin, nil},
		{"own", "/api/v2/Files/Own", keyBob, []int{4}},
		{"equals", "/api/v2/Files?mimetype=text/plain", keyAlice, []int{3}},
		{"not", "/api/v2/Files?mimetype=!text/plain", keyAlice, []int{1, 2}},
		{"starts with", "/api/v2/Files?filename=%5Ephoto", keyAlice, []int{2}},
		{"ends with", "/api/v2/Files?filename=$.txt", keyAlice, []int{3}},
		{"regex", "/api/v2/Files?filename=~^(rep|no).*%5C.(pdf|txt)$", keyAlice, []int{1, 3}},
		{"regex is unanchored", "/api/v2/Files?title=~ote", keyAlice, []int{3}},
		{"repeated key is any of", "/api/v2/Files?mimetype=image/png&mimetype=application/pdf", keyAlice, []int{1, 2}},
		{"different keys are all of", "/api/v2/Files?mimetype=!image/png&title=%5EQ", keyAlice, []int{1}},
		{"filesize greater", "/api/v2/Files?filesize=%3E10", keyAlice, []int{1}},
		{"filesize less", "/api/v2/Files?filesize=%3C10", keyAlice, []int{3}},
		{"filesize equals", "/api/v2/Files?filesize=10", keyAlice, []int{2}},
		{"filesize range by repeats", "/api/v2/Files?filesize=%3C5&filesize=%3E50", keyAlice, []int{1, 3}},
		{"createdAt after", "/api/v2/Files?createdAt=%3E2026-01-02", keyAlice, []int{2, 3}},
		{"createdAt before", "/api/v2/Files?createdAt=%3C2026-01-02", keyAlice, []int{1}},
		{"createdAt equals to the millisecond", "/api/v2/Files?createdAt=2026-01-03T12:00:00.000Z", keyAlice, []int{3}},
		{"createdAt with offset", "/api/v2/Files?createdAt=2026-01-03T13:00:00%2B01:00", keyAlice, []int{3}},
		{"createdAt as text", "/api/v2/Files?createdAt=%5E2026-01-0", keyAlice, []int{1, 2, 3}},
		{"expiresAt never", "/api/v2/Files?expiresAt=%3E9000", keyAlice, []int{1, 3}},
		{"expiresAt rendered", "/api/v2/Files?expiresAt=$00.000Z&expiresAt=%5E9999", keyAlice, []int{1, 2, 3}},
		{"createdBy", "/api/v2/Files?createdBy=bob", keyAdmin, []int{4}},
		{"title empty", "/api/v2/Files?title=", keyAlice, []int{2}},
		{"tags contain", "/api/v2/Files?tags=q1", keyAdmin, []int{1, 4}},
		{"tags contain none", "/api/v2/Files?tags=!q1", keyAdmin, []int{2, 3}},
		{"tags any starts with", "/api/v2/Files?tags=%5Ehol&tags=finance", keyAdmin, []int{1, 2}},
		{"tags regex", "/api/v2/Files?tags=~^q%5Cd$", keyAdmin, []int{1, 4}},
		{"text less", "/api/v2/Files?filename=%3Cp", keyAlice, []int{3}},
		{"no match", "/api/v2/Files?filename=none", keyAlice, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []map[string]any
			result(t, e.do(t, http.MethodGet, tc.path, nil, map[string]string{"X-API-KEY": tc.key}), http.StatusOK, &got)
			var ids []string
			for _, f := range got {
				ids = append(ids, f["id"].(string))
			}
			var want []string
			for _, n := range tc.want {
				want = append(want, fileIDs[n])
			}
			if !slices.Equal(ids, want) {
				t.Fatalf("ids = %v, want %v", ids, want)
			}
		})
	}
}

func TestEnmeshedListFilterRefused(t *testing.T) {
	e := newEnmeshedEnv(t)
	for _, tc := range []struct{ query, message string }{
		{"owner=alice", unknownFilterMessage("owner")},
		{"filename=a&size=1", unknownFilterMessage("size")},
		{"%3Cscript%3E=1", unknownFilterMessage("<script>")}, // not echoed: not a plain name
		{"filesize=big", "filesize must be integer"},
		{"filesize=%3Ebig", "filesize must be integer"},
		{"createdAt=yesterday", "createdAt must match ISO8601 datetime format"},
		{"expiresAt=!soon", "expiresAt must match ISO8601 datetime format"},
		{"filename=~(", "filename must be a valid regular expression"},
		{"title=~" + strings.Repeat("a", maxFilterRegexLen+1), fmt.Sprintf("title must NOT have more than %d characters", maxFilterRegexLen)},
		{"title=%zz", "query must be URL-encoded"},
		{strings.Repeat("tags=a&", maxFilterConditions+1), fmt.Sprintf("query must NOT have more than %d conditions", maxFilterConditions)},
		{"owner=x&filesize=big", unknownFilterMessage("owner")}, // the first failure only
		{"filesize=big&owner=x", "filesize must be integer"},
	} {
		t.Run(tc.query[:min(len(tc.query), 30)], func(t *testing.T) {
			wantEnmeshedError(t, e.do(t, http.MethodGet, "/api/v2/Files?"+tc.query, nil, nil), 400, codeInvalidPropertyValue, tc.message)
			wantEnmeshedError(t, e.do(t, http.MethodGet, "/api/v2/Files/Own?"+tc.query, nil, nil), 400, codeInvalidPropertyValue, tc.message)
		})
	}
}

func TestEnmeshedListEmptyIsArray(t *testing.T) {
	e := newEnmeshedEnv(t)
	r := e.do(t, http.MethodGet, "/api/v2/Files", nil, nil)
	if r.status != http.StatusOK || strings.TrimSpace(string(r.body)) != `{"result":[]}` {
		t.Fatalf("empty list = %d %s", r.status, r.body)
	}
}

// TestEnmeshedListRegexOverTheProgramBudgetIsRefused: a ~regex costs its compiled program's size
// times the text, and a counted repetition multiplies the program (".{1000}" x 35, 246 bytes,
// took 14 s of CPU against one 64 KiB filename), so every regex of a query shares a budget of
// maxFilterRegexInsts compiled instructions and a query over it is refused before any file is
// read; regexes of ordinary size, a 256-byte literal included, still run.
func TestEnmeshedListRegexOverTheProgramBudgetIsRefused(t *testing.T) {
	e := newEnmeshedEnv(t)
	e.upload(t, "alice", core.FileAttrs{Name: strings.Repeat("a", 300), MimeType: "text/plain"}, "x")
	overBudget := func(key string) string {
		return fmt.Sprintf("%s must be a simpler regular expression: a query's regular expressions compile to at most %d instructions together (a count such as {100} repeats what it counts)", key, maxFilterRegexInsts)
	}
	for _, tc := range []struct{ query, refusedKey string }{
		{"filename=~" + url.QueryEscape(strings.Repeat(`.{1000}`, 35)+"z"), "filename"},
		{"filename=~" + url.QueryEscape(`.{400}`), "filename"},
		{"tags=~" + url.QueryEscape(`(ab|cd){200}`), "tags"},
		{"filename=~" + url.QueryEscape(`.{200}`) + "&title=~" + url.QueryEscape(`.{200}`), "title"}, // a shared budget
		{"filename=~" + url.QueryEscape(`^a{3,100}`), ""},
		{"filename=~" + url.QueryEscape(`(?i)\.(png|jpe?g|gif)$|^a+$`), ""},
		{"filename=~" + strings.Repeat("a", maxFilterRegexLen), ""},
	} {
		t.Run(tc.query[:min(len(tc.query), 40)], func(t *testing.T) {
			for _, route := range []string{"/api/v2/Files?", "/api/v2/Files/Own?"} {
				res := e.do(t, http.MethodGet, route+tc.query, nil, nil)
				if tc.refusedKey != "" {
					wantEnmeshedError(t, res, 400, codeInvalidPropertyValue, overBudget(tc.refusedKey))
					continue
				}
				if res.status != http.StatusOK {
					t.Fatalf("%s%s: %d %s", route, tc.query, res.status, res.body)
				}
			}
		})
	}
}
