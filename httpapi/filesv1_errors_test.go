package httpapi

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/cairn-dev/cairn/core"
)

// TestTooLargeMessageStatesTheLimit: from core's error and from the body limit (the file limit plus
// the multipart overhead) alike.
func TestTooLargeMessageStatesTheLimit(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&core.FileTooLargeError{Limit: 8 << 20}, "the file exceeds the maximum file size of 8 MiB (8388608 bytes)"},
		{fmt.Errorf("upload: %w", &core.FileTooLargeError{Limit: 1500}), "the file exceeds the maximum file size of 1500 B (1500 bytes)"},
		{&http.MaxBytesError{Limit: 3<<10 + uploadOverhead}, "the file exceeds the maximum file size of 3 KiB (3072 bytes)"},
		{&http.MaxBytesError{Limit: 100}, "the file exceeds the maximum file size"}, // not an upload's limit
		{core.ErrFileTooLarge, "the file exceeds the maximum file size"},
	} {
		if got := tooLargeMessage(tc.err); got != tc.want {
			t.Errorf("tooLargeMessage(%v) = %q, want %q", tc.err, got, tc.want)
		}
		if e := filesV1ErrorFor(tc.err); e.Code != 2610 || e.Message != tc.want {
			t.Errorf("filesV1ErrorFor(%v) = %+v", tc.err, e)
		}
	}
	if e := enmeshedErrorFor(&core.FileTooLargeError{Limit: 1 << 30}, "File"); e.message != "file content exceeds the maximum file size of 1 GiB (1073741824 bytes)" {
		t.Errorf("v2: %q", e.message)
	}
}
