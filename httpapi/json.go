package httpapi

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// writeJSON writes v as the whole response body. Values written here are our own types, so a marshal
// failure is a programming error; it still answers 500 rather than a half-written body.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"code":1,"name":"SERVER_EXCEPTION","message":"an unexpected error occurred"}`)
	}
	b = append(b, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b) // the client went away; nothing left to tell it
}
