package node

import (
	"slices"
	"testing"
	"time"

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

// TestApplyWatch: a node that keeps up while the commit index moves on never waits, however busy;
// one that stops applying waits from the first check that saw the index it did not reach.
func TestApplyWatch(t *testing.T) {
	var w applyWatch
	start := time.Unix(1_000_000, 0)
	at := func(s float64) time.Time { return start.Add(time.Duration(s * float64(time.Second))) }

	// Busy and healthy: each check sees applied past the last target, a new commit ahead.
	for i := range 100 {
		applied, commit := uint64(10*i+5), uint64(10*i+12)
		if target, waited := w.observe(applied, commit, at(float64(i))); waited != 0 || target != commit {
			t.Fatalf("check %d (applied %d, commit %d): target %d waited %s; want a fresh target and no wait", i, applied, commit, target, waited)
		}
	}
	if target, waited := w.observe(2000, 2000, at(200)); target != 0 || waited != 0 {
		t.Fatalf("caught up: target %d waited %s", target, waited)
	}

	// Stalled at 3000 while the commit index moves on: the wait counts from the first target.
	w.observe(3000, 3004, at(300))
	w.observe(3000, 3020, at(302))
	if target, waited := w.observe(3000, 3040, at(306)); target != 3004 || waited != 6*time.Second {
		t.Fatalf("stalled: target %d waited %s; want 3004 and 6s", target, waited)
	}
	// Applying again past the first target, but not the commit index of then: a new, fresh wait.
	if target, waited := w.observe(3010, 3040, at(307)); target != 3040 || waited != 0 {
		t.Fatalf("moving again: target %d waited %s; want 3040 and 0", target, waited)
	}
}
