package node

import "github.com/cairn-dev/cairn/cluster"

// announcedVersion is the build version as gossip carries it: cut to cluster.MaxVersionLen bytes,
// so that a long -ldflags version can never push the node metadata over memberlist's 512 bytes.
func announcedVersion(v string) string {
	if len(v) > cluster.MaxVersionLen {
		return v[:cluster.MaxVersionLen]
	}
	return v
}
