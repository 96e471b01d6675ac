package testcluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/node"

	"github.com/cairn-dev/cairn/internal/testutil"
)

// TestClockSkewedNodeRefusesRequests: the leader's clock steps an hour ahead. Its proposals would
// push the state's clock (request de-duplication, expiry) an hour forward, and it would judge
// tokens by the wrong time. It must hand the lead over, say not ready (clock_skew) and answer 503
// for reads and writes, while the other two serve; once its clock is right again, it serves too.
func TestClockSkewedNodeRefusesRequests(t *testing.T) {
	var ahead [3]atomic.Int64
	c := New(t, Options{Nodes: 3, Configure: func(i int, cfg *node.Config) {
		cfg.Clock = func() time.Time { return time.Now().Add(time.Duration(ahead[i].Load())) }
	}})
	c.WaitReady(30 * time.Second)
	validateAgainstSpec(t, c) // the 503s and /v1/status's clockOffsetSeconds are in the documents
	data := randomData(7, 10<<10)
	up := *c.Client(0)
	up.APIKey = c.RootKey
	meta, resp, err := up.Upload("before.bin", data)
	if err != nil || resp.Status != http.StatusOK {
		t.Fatalf("upload: %v %d %s", err, resp.Status, resp.Body)
	}
	token := meta.Tokens[0].Token
	skewed := c.WaitLeader(10 * time.Second)
	var others []int
	for i := range 3 {
		if i != skewed {
			others = append(others, i)
		}
	}
	skewedID := c.Config(skewed).NodeID

	ahead[skewed].Store(int64(time.Hour))
	testutil.WaitForNil(t, 20*time.Second, skewedID+" not ready with clock_skew", func() error {
		var nr *node.NotReadyError
		if err := c.Node(skewed).Ready(); !errors.As(err, &nr) || nr.Reason != node.ReasonClockSkew {
			return fmt.Errorf("ready: %v", err)
		}
		return nil
	})
	testutil.WaitForNil(t, 20*time.Second, skewedID+" to hand the lead over", func() error {
		if c.Node(skewed).IsLeader() {
			return errors.New("still leads")
		}
		return nil
	})
	c.WaitLeader(10 * time.Second)
	// Reads and writes through it: 503 in the API's own format.
	if resp, err := c.Client(skewed).Download(token); err != nil || resp.Status != http.StatusServiceUnavailable || resp.Err().Name != "SERVICE_UNAVAILABLE_EXCEPTION" {
		t.Errorf("download through the skewed node: %v %d %s", err, resp.Status, resp.Body)
	}
	if _, resp, err := c.Client(skewed).CreateToken(token, "read"); err != nil || resp.Status != http.StatusServiceUnavailable {
		t.Errorf("token create through the skewed node: %v %d %s", err, resp.Status, resp.Body)
	}
	skewedUp := *c.Client(skewed)
	skewedUp.APIKey = c.RootKey
	if _, resp, err := skewedUp.Upload("during.bin", data); err != nil || resp.Status != http.StatusServiceUnavailable {
		t.Errorf("upload through the skewed node: %v %d %s", err, resp.Status, resp.Body)
	}
	// The others measure it an hour ahead, and go on.
	for _, i := range others {
		if err := c.Node(i).Ready(); err != nil {
			t.Errorf("node %d, whose clock is right: %v", i, err)
		}
		testutil.WaitForNil(t, 20*time.Second, fmt.Sprintf("node %d to measure %s an hour ahead", i, skewedID), func() error {
			if offset := metricValue(t, c, i, `cairn_clock_offset_seconds{peer="`+skewedID+`"}`); offset < 3590 || offset > 3610 {
				return fmt.Errorf("cairn_clock_offset_seconds %.3f", offset)
			}
			return nil
		})
		resp, err := c.Client(i).Do(http.MethodGet, "/v1/status", nil, nil)
		var st struct {
			Members []struct {
				ID                 string   `json:"id"`
				ClockOffsetSeconds *float64 `json:"clockOffsetSeconds"`
			} `json:"members"`
		}
		if err != nil || resp.Status != http.StatusOK || json.Unmarshal(resp.Body, &st) != nil {
			t.Fatalf("status of node %d: %v %d %s", i, err, resp.Status, resp.Body)
		}
		for _, m := range st.Members {
			if m.ID == skewedID && (m.ClockOffsetSeconds == nil || *m.ClockOffsetSeconds < 3590) {
				t.Errorf("node %d's /v1/status shows %s with clockOffsetSeconds %v; want about 3600", i, skewedID, m.ClockOffsetSeconds)
			}
			if m.ID == c.Config(i).NodeID && m.ClockOffsetSeconds != nil {
				t.Errorf("node %d's /v1/status shows an offset to itself: %v", i, *m.ClockOffsetSeconds)
			}
		}
		mustDownload(t, c, i, token, data)
		if _, resp, err := c.Client(i).CreateToken(token, "read"); err != nil || resp.Status != http.StatusOK {
			t.Errorf("token create through node %d: %v %d %s", i, err, resp.Status, resp.Body)
		}
	}

	ahead[skewed].Store(0)
	testutil.WaitForNil(t, 20*time.Second, skewedID+" ready once its clock is right", func() error { return c.Node(skewed).Ready() })
	mustDownload(t, c, skewed, token, data)
}
