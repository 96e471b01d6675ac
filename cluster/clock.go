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

// ClockSkewError says that a quorum of the Raft voters measure this node's clock further off than
// the allowed offset.
type ClockSkewError struct {
	MaxOffset time.Duration
	// Disagree counts the voters whose clocks are further than MaxOffset from this node's; Voters
	// is how many voters the configuration has, and Quorum a majority of them.
	Disagree, Voters, Quorum int
	// Median is the median of the disagreeing voters' offsets: about how far this node's clock
	// is behind (positive) or ahead (negative) of the cluster's.
	Median time.Duration
}

func (e *ClockSkewError) Error() string {
	direction := "behind"
	if e.Median < 0 {
		direction = "ahead of"
	}
	return fmt.Sprintf("this node's clock is about %s %s the cluster's: %d of %d raft voters (a quorum is %d) measure it more than %s off (fix the node's time sync)",
		e.Median.Abs().Round(time.Millisecond), direction, e.Disagree, e.Voters, e.Quorum, e.MaxOffset)
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
	// memberlist probes one member per ProbeInterval, round robin: a value older than three
	// rounds belongs to a peer that answers only indirectly or over TCP (no clock in those acks).
	probe := m.cfg.Timings.ProbeInterval
	if probe <= 0 {
		probe = memberlist.DefaultLANConfig().ProbeInterval
	}
	maxAge := max(clockOffsetMinAge, 3*time.Duration(len(m.members))*probe)
	now := m.now()
	var out []ClockOffset
	for id, o := range m.clocks {
		if mem, ok := m.members[id]; ok && mem.State == StateAlive && mem.Verified && id != m.cfg.NodeID && now.Sub(o.MeasuredAt) <= maxAge {
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

// clockOffsetMinAge is the least age at which a peer's offset is no longer used.
const clockOffsetMinAge = 30 * time.Second

// forgetClock drops a departed peer's offset, so that it is judged afresh when it returns.
func (m *Membership) forgetClock(id string) {
	delete(m.clocks, id) // m.mu is held
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

// checkClockSkew is a *ClockSkewError (wrapping clusterapi.ErrClockSkew) when a quorum of the Raft
// voters (MembershipConfig.ClockVoters; every measured peer when that is nil) measure this node's
// clock more than maxOffset off, beyond each measurement's uncertainty; nil otherwise. Only a
// positive quorum counts: a voter that is down, of an older release (its acks carry no clock) or
// not measured yet neither agrees nor disagrees, so a healthy node is never stopped by one peer
// whose clock is wrong, and in a two-voter cluster neither node can be found wrong.
func (m *Membership) checkClockSkew(maxOffset time.Duration) error {
	return clockSkewOf(m.ClockOffsets(), m.clockVoters(), m.cfg.NodeID, maxOffset)
}

// clockVoters are the Raft voters whose clocks count (MembershipConfig.ClockVoters), nil when
// every measured peer counts.
func (m *Membership) clockVoters() []string {
	if m.cfg.ClockVoters == nil {
		return nil
	}
	return m.cfg.ClockVoters()
}

// clockElectorate says which peers' clocks count and how many voters there are: the given voters,
// or with none given, this node and every one of the measured peers.
func clockElectorate(voters []string, measured int) (isVoter func(string) bool, n int) {
	if voters == nil {
		return func(string) bool { return true }, measured + 1
	}
	return func(id string) bool { return slices.Contains(voters, id) }, len(voters)
}

// clockSkewOf is checkClockSkew's verdict on the given peers' offsets among voters (nil: this node
// and every peer measured).
func clockSkewOf(offsets []ClockOffset, voters []string, self string, maxOffset time.Duration) error {
	isVoter, n := clockElectorate(voters, len(offsets))
	var off []time.Duration
	for _, o := range offsets {
		if o.Peer != self && isVoter(o.Peer) && o.Offset.Abs()-o.Uncertainty > maxOffset {
			off = append(off, o.Offset)
		}
	}
	quorum := n/2 + 1
	if len(off) < quorum {
		return nil
	}
	slices.Sort(off)
	return &ClockSkewError{MaxOffset: maxOffset, Disagree: len(off), Voters: n, Quorum: quorum, Median: off[len(off)/2]}
}

// ClockConfirmed reports whether a quorum of the Raft voters, this node included when it votes, is
// known to agree with this node's clock within maxOffset: measured, not merely not disagreeing.
// A node that has just started, or whose gossip is down, has not confirmed its clock yet; the
// leader holds back the work whose outcome its clock decides (expiry) until it has.
func (m *Membership) ClockConfirmed(maxOffset time.Duration) bool {
	if maxOffset <= 0 {
		return true
	}
	offsets, voters := m.ClockOffsets(), m.clockVoters()
	isVoter, n := clockElectorate(voters, len(offsets))
	agree := 0
	if voters == nil || slices.Contains(voters, m.cfg.NodeID) {
		agree = 1 // this node's own vote
	}
	for _, o := range offsets {
		if o.Peer != m.cfg.NodeID && isVoter(o.Peer) && o.Offset.Abs()+o.Uncertainty <= maxOffset {
			agree++
		}
	}
	return agree >= n/2+1
}

// String is the peer, its offset and the uncertainty: "n2 +1.204s ±0.3ms".
func (o ClockOffset) String() string {
	sign := "+"
	if o.Offset < 0 {
		sign = "-"
	}
	return fmt.Sprintf("%s %s%s ±%s", o.Peer, sign, o.Offset.Abs().Round(time.Microsecond), o.Uncertainty.Round(time.Microsecond))
}
