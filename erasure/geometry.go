package erasure

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// maxTotalShards bounds k+m. Shards of a segment must sit on distinct nodes, and above 64 the
// per-read fan-out stops being sensible long before the GF(2^8) limit of 256 is reached.
const maxTotalShards = 64

// ErrInvalidGeometry reports a malformed or out-of-range k+m geometry.
var ErrInvalidGeometry = errors.New("invalid erasure geometry")

// Geometry is the erasure-coding shape k+m: Data chunks carry the block's bytes verbatim
// (systematic RS) and any Data of the Data+Parity chunks rebuild the block.
type Geometry struct {
	Data   int `json:"data"`
	Parity int `json:"parity"`
}

// ParseGeometry parses the "K+M" form used by flags and cluster settings, e.g. "2+1" or "4+2".
func ParseGeometry(s string) (Geometry, error) {
	ks, ms, ok := strings.Cut(s, "+")
	if !ok {
		return Geometry{}, fmt.Errorf("%w: %q: want K+M, e.g. 4+2", ErrInvalidGeometry, s)
	}
	k, err := parseCount(ks)
	if err != nil {
		return Geometry{}, fmt.Errorf("%w: %q: data count: %v", ErrInvalidGeometry, s, err)
	}
	m, err := parseCount(ms)
	if err != nil {
		return Geometry{}, fmt.Errorf("%w: %q: parity count: %v", ErrInvalidGeometry, s, err)
	}
	g := Geometry{Data: k, Parity: m}
	if err := g.Validate(); err != nil {
		return Geometry{}, err
	}
	return g, nil
}

// parseCount accepts only canonical decimals so that "+2", " 2", "02" or "0x2" are rejected
// rather than silently normalised: what was configured is exactly what String prints.
func parseCount(s string) (int, error) {
	if s == "" || len(s) > 3 || len(s) > 1 && s[0] == '0' {
		return 0, fmt.Errorf("%q is not a small canonical decimal number", s)
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return 0, fmt.Errorf("%q is not a decimal number", s)
		}
	}
	return strconv.Atoi(s)
}

// String returns the "K+M" form that ParseGeometry accepts.
func (g Geometry) String() string { return fmt.Sprintf("%d+%d", g.Data, g.Parity) }

// Total is the number of shards (and distinct nodes) per segment.
func (g Geometry) Total() int { return g.Data + g.Parity }

// DefaultWriteQuorum is MinIO's rule: k shards must be durable, or k+1 when k == m, because with
// k == m two disjoint sets of k shards could each claim a quorum.
func (g Geometry) DefaultWriteQuorum() int {
	if g.Data == g.Parity {
		return g.Data + 1
	}
	return g.Data
}

// Validate reports whether g is usable: at least one data and one parity shard, and at most
// 64 shards in total.
func (g Geometry) Validate() error {
	switch {
	case g.Data < 1:
		return fmt.Errorf("%w: %s: need at least 1 data shard", ErrInvalidGeometry, g)
	case g.Parity < 1:
		return fmt.Errorf("%w: %s: need at least 1 parity shard", ErrInvalidGeometry, g)
	case g.Total() > maxTotalShards:
		return fmt.Errorf("%w: %s: at most %d shards in total", ErrInvalidGeometry, g, maxTotalShards)
	}
	return nil
}
