package node

import (
	"slices"
	"testing"

	"github.com/cairn-dev/cairn/httpapi"
)

// TestReadyReasonsInOpenAPI: /readyz's reason enum in the OpenAPI document is exactly ReadyReasons,
// so a new readiness condition cannot ship undocumented (cairn_ready's reason label uses the same
// set).
func TestReadyReasonsInOpenAPI(t *testing.T) {
	doc, err := httpapi.OpenAPIDocument()
	if err != nil {
		t.Fatal(err)
	}
	schema := doc.Paths.Value("/readyz").Get.Responses.Status(503).Value.Content.Get("application/json").Schema.Value
	var inSpec []string
	for _, v := range schema.Properties["reason"].Value.Enum {
		inSpec = append(inSpec, v.(string))
	}
	if !slices.Equal(inSpec, ReadyReasons) {
		t.Errorf("/readyz reasons in the OpenAPI document %v, ReadyReasons %v", inSpec, ReadyReasons)
	}
	if got := readyReason(notReady(ReasonNoLeader, "x")); got != ReasonNoLeader {
		t.Errorf("readyReason of a NotReadyError: %q", got)
	}
}
