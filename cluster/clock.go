package cluster

import (
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/cairn-dev/cairn/cluster/clusterapi"
)

// Clock offsets between members, measured on memberlist's probes.
//
// Every probe memberlist sends (one member per ProbeInterval, round robin) is answered with an
// ack; the ack carries the answering node's wall clock (clockPayload), and the prober computes the
// offset: the peer's clock at the time it answered, which is about half the round trip before the
// ack came back, minus its own clock then. The error is at most half the round trip, kept as the
// measurement's uncertainty. Gossip is encrypted and authenticated with the gossip key, so only a
// member can send the payload, and only verified members' offsets count.

// clockPayloadVersion is the first byte of the ack payload; 8 bytes of UnixNano (big-endian)
// follow. A payload of another version or length is ignored, so a later format can be added
// beside this one.
const clockPayloadVersion = 1

// ClockOffset is one peer's clock compared to this node's.
type ClockOffset struct {
	Peer string
	// Offset is the peer's clock minus this node's: positive when the peer is ahead.
	Offset time.Duration
	// Uncertainty is half the probe's round trip, the bound on Offset's error.
	Uncertainty time.Duration
	MeasuredAt  time.Time
}

// ClockSkewError says that this node's clock disagrees with a majority of the members it measured.
type ClockSkewError struct {
	MaxOffset time.Duration
	// Agree counts the nodes (this one included) whose clocks are within MaxOffset of this
	// node's; Of counts this node and every peer with a measurement.
	Agree, Of int
	// Median is the median of the measured peers' offsets: about how far this node's clock is
	// behind (positive) or ahead (negative) of the cluster's.
	Median time.Duration
}

func (e *ClockSkewError) Error() string {
	direction := "behind"
	if e.Median < 0 {
		direction = "ahead of"
	}
	return fmt.Sprintf("this node's clock is about %s %s the cluster's: only %d of %d nodes agree within %s (fix the node's time sync)",
		e.Median.Abs().Round(time.Millisecond), direction, e.Agree, e.Of, e.MaxOffset)
}

func (e *ClockSkewError) Unwrap() error { return clusterapi.ErrClockSkew }

// pingDelegate puts this node's clock on memberlist's acks and reads the peers' from theirs.
type pingDelegate struct{ m *Membership }

var _ memberlist.PingDelegate = pingDelegate{}

func (d pingDelegate) AckPayload() []byte {
	b := make([]byte, 9)
	b[0] = clockPayloadVersion
	binary.BigEndian.PutUint64(b[1:], uint64(d.m.now().UnixNano()))
	return b
}

func (d pingDelegate) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, payload []byte) {
	if len(payload) != 9 || payload[0] != clockPayloadVersion || other == nil {
		return // an older node (no payload) or a newer format
	}
	now := d.m.now()
	theirs := time.Unix(0, int64(binary.BigEndian.Uint64(payload[1:])))
	half := rtt / 2
	d.m.recordClock(ClockOffset{Peer: other.Name, Offset: theirs.Sub(now.Add(-half)), Uncertainty: half, MeasuredAt: now})
}

// recordClock keeps a peer's newest offset.
func (m *Membership) recordClock(o ClockOffset) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.clocks == nil {
		m.clocks = make(map[string]ClockOffset)
	}
	m.clocks[o.Peer] = o
}

// ClockOffsets are the newest offsets of the members that are alive and verified, by peer id.
func (m *Membership) ClockOffsets() []ClockOffset {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []ClockOffset
	for id, o := range m.clocks {
		if mem, ok := m.members[id]; ok && mem.State == StateAlive && mem.Verified && id != m.cfg.NodeID {
			out = append(out, o)
		}
	}
	slices.SortFunc(out, func(a, b ClockOffset) int {
		if a.Peer < b.Peer {
			return -1
		}
		if a.Peer > b.Peer {
			return 1
		}
		return 0
	})
	return out
}

// clockVerdictTTL is how long a ClockSkew verdict is reused: it is asked on every proposal and read
// index, and the offsets change only once per probe.
const clockVerdictTTL = 250 * time.Millisecond

// clockVerdict is a cached ClockSkew answer.
type clockVerdict struct {
	at        time.Time
	maxOffset time.Duration
	err       error
}

// ClockSkew is checkClockSkew, reused for clockVerdictTTL, and it logs when the verdict changes.
func (m *Membership) ClockSkew(maxOffset time.Duration) error {
	if maxOffset <= 0 {
		return nil
	}
	now := time.Now()
	if v := m.clockVerdict.Load(); v != nil && v.maxOffset == maxOffset && now.Sub(v.at) < clockVerdictTTL {
		return v.err
	}
	err := m.checkClockSkew(maxOffset)
	prev := m.clockVerdict.Swap(&clockVerdict{at: now, maxOffset: maxOffset, err: err})
	switch wasSkewed := prev != nil && prev.err != nil; {
	case err != nil && !wasSkewed:
		m.log.Error("clock skew: this node refuses proposals and reads until its clock agrees with the cluster's", "err", err, "offsets", fmt.Sprint(m.ClockOffsets()))
	case err == nil && wasSkewed:
		m.log.Info("clock skew over: this node's clock agrees with the cluster's again")
	}
	return err
}

// checkClockSkew is a *ClockSkewError (wrapping clusterapi.ErrClockSkew) when this node's clock is more
// than maxOffset from the clocks of a majority of the nodes it measured, itself counted as
// agreeing; nil otherwise, and nil while it has measured no peer (gossip down or a single node:
// nothing to compare with). A peer disagrees only when its offset is beyond maxOffset by more than
// the measurement's uncertainty. With three nodes, the one whose clock is off is refused and the
// other two go on; with two whose clocks disagree, both are refused, as neither can tell which one
// is right. maxOffset 0 turns the check off.
func (m *Membership) checkClockSkew(maxOffset time.Duration) error {
	return clockSkewOf(m.ClockOffsets(), maxOffset)
}

// clockSkewOf is checkClockSkew's verdict on the given peers' offsets.
func clockSkewOf(offsets []ClockOffset, maxOffset time.Duration) error {
	if len(offsets) == 0 {
		return nil
	}
	agree := 1
	values := make([]time.Duration, 0, len(offsets))
	for _, o := range offsets {
		if o.Offset.Abs()-o.Uncertainty <= maxOffset {
			agree++
		}
		values = append(values, o.Offset)
	}
	of := len(offsets) + 1
	if 2*agree > of {
		return nil
	}
	slices.Sort(values)
	return &ClockSkewError{MaxOffset: maxOffset, Agree: agree, Of: of, Median: values[len(values)/2]}
}

// String is the peer, its offset and the uncertainty: "n2 +1.204s ±0.3ms".
func (o ClockOffset) String() string {
	sign := "+"
	if o.Offset < 0 {
		sign = "-"
	}
	return fmt.Sprintf("%s %s%s ±%s", o.Peer, sign, o.Offset.Abs().Round(time.Microsecond), o.Uncertainty.Round(time.Microsecond))
}
