package cluster

import (
	"fmt"

	"github.com/hashicorp/raft"

	"github.com/cairn-dev/cairn/fsm"
)

// ProtocolRange is the range of fsm protocol versions a node speaks, as it announces in gossip.
type ProtocolRange struct {
	Min, Max int
}

// LocalProtocols is the range this build speaks.
func LocalProtocols() ProtocolRange {
	return ProtocolRange{Min: fsm.MinProtocolVersion, Max: fsm.ProtocolVersion}
}

// Protocols returns the range a member announced. Builds from before protocol versions were
// announced speak exactly protocol 1, so missing fields read as [1, 1].
func (m NodeMeta) Protocols() ProtocolRange {
	r := ProtocolRange{Min: m.ProtocolMin, Max: m.ProtocolMax}
	if r.Min <= 0 {
		r.Min = 1
	}
	if r.Max < r.Min {
		r.Max = r.Min
	}
	return r
}

// ServerLister is the part of RaftNode the gate needs: the current Raft configuration.
type ServerLister interface {
	Servers() []raft.Server
}

// MemberLister is the part of Membership the gate needs: every member known, failed ones included.
type MemberLister interface {
	Members() []Member
}

// ProtocolGate decides whether a command type may be proposed now, the way Consul gates a feature
// on the versions of its servers: a command introduced in protocol P goes into the log only once
// every server in the Raft configuration announces that it speaks P. Non-voters count as well as
// voters: they apply the same log, and a replica that refuses an entry its peers applied has
// diverged for good. A server whose metadata the node has never seen counts as protocol 1, the
// oldest there is, so the gate fails closed.
type ProtocolGate struct {
	self    string
	servers ServerLister
	members MemberLister
}

// NewProtocolGate returns the gate of node self over its Raft configuration and gossip view.
func NewProtocolGate(self string, servers ServerLister, members MemberLister) *ProtocolGate {
	return &ProtocolGate{self: self, servers: servers, members: members}
}

// ClusterProtocol returns the newest protocol every Raft server speaks: the minimum over the
// servers of the highest version each announces. Without a readable configuration it returns the
// oldest protocol this build speaks.
func (g *ProtocolGate) ClusterProtocol() int {
	servers := g.servers.Servers()
	if len(servers) == 0 {
		return fsm.MinProtocolVersion
	}
	announced := make(map[string]ProtocolRange)
	for _, m := range g.members.Members() {
		announced[m.Meta.ID] = m.Meta.Protocols()
	}
	announced[g.self] = LocalProtocols()
	lowest := fsm.ProtocolVersion
	for _, s := range servers {
		r, ok := announced[string(s.ID)]
		if !ok {
			r = ProtocolRange{Min: 1, Max: 1}
		}
		lowest = min(lowest, r.Max)
	}
	return max(lowest, 1)
}

// Allows returns nil when typ may be proposed now, and an error wrapping fsm.ErrNotEnabled while
// some Raft server does not speak the protocol that introduced it. Types every build this one can
// work with speaks (since <= fsm.MinProtocolVersion) are allowed without looking at the cluster,
// so the gate costs nothing on today's commands.
func (g *ProtocolGate) Allows(typ fsm.CommandType) error {
	since, ok := fsm.CommandProtocol(typ)
	if !ok {
		return fmt.Errorf("%w: unknown command type %q", fsm.ErrInvalidCommand, typ)
	}
	return g.require(string(typ), since)
}

// require is Allows for anything introduced in protocol since: a command type, or a new field of
// an old command (whose proposer must check it the same way before setting the field).
func (g *ProtocolGate) require(what string, since int) error {
	if since <= fsm.MinProtocolVersion {
		return nil
	}
	if have := g.ClusterProtocol(); have < since {
		return fmt.Errorf("%w: %s needs protocol %d, the raft servers all speak only up to %d", fsm.ErrNotEnabled, what, since, have)
	}
	return nil
}

// Supports reports whether every Raft server speaks protocol version, for a proposer about to set
// a field introduced in it.
func (g *ProtocolGate) Supports(version int) bool { return g.require("", version) == nil }
