package clusterapi

// MemberKeys is one member's gossip keyring. Keys are shown by fingerprint only: the keys
// themselves never leave a node in an answer.
type MemberKeys struct {
	Node    string   `json:"node"`
	Primary string   `json:"primary,omitempty"`
	Keys    []string `json:"keys,omitempty"`
	// Error says why this member could not be asked (not alive, RPC failure).
	Error string `json:"error,omitempty"`
}

// Keyring operations that change a ring.
const (
	KeyringInstall = "install"
	KeyringUse     = "use"
	KeyringRemove  = "remove"
)
