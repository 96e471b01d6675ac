package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/cairn-dev/cairn/pki"
)

// Security is how the cluster port authenticates and protects a connection: the one value the
// mux, the Raft layer and the RPC client take, so that a new mechanism is a new field, not a new
// parameter threaded through every constructor.
//
// Secret is always required. Without TLS it is the HMAC challenge-response that authenticates
// peers (the channel is not encrypted). With TLS, every connection is mutual TLS 1.3 first, each
// side verifying the other's certificate against the cluster CA and its role; the HMAC handshake
// then runs inside the TLS channel over the channel's exported keying material, so it proves the
// secret for this channel only. A stolen certificate without the secret is refused, and so is the
// secret without a certificate.
type Security struct {
	// Secret is the cluster handshake key, at least 16 bytes.
	Secret []byte
	// TLS turns on mutual TLS; nil keeps plain TCP (authenticated, not encrypted).
	TLS *TLSConfig
}

// TLSConfig is the cluster port's mutual TLS.
type TLSConfig struct {
	// CAs are the cluster CA certificates every peer's certificate must chain to.
	CAs *x509.CertPool
	// Certificate returns this node's certificate. It is called at every handshake, so a reloaded
	// certificate takes effect for new connections without dropping the open ones.
	Certificate func() *tls.Certificate
	// Role is the DNS name a peer's certificate must carry (default pki.ServerRole).
	Role string

	once           sync.Once
	server, client *tls.Config
}

// ekmLabel names cairn's use of the TLS exporter (RFC 5705/8446 §7.5); the HMAC handshake is
// computed over the 32 bytes it exports, which only the two ends of this TLS session know.
const ekmLabel = "EXPORTER-cairn-cluster-handshake"

func (c *TLSConfig) role() string {
	if c.Role == "" {
		return pki.ServerRole
	}
	return c.Role
}

func (c *TLSConfig) build() {
	c.once.Do(func() {
		role := c.role()
		cert := func() (*tls.Certificate, error) {
			if cur := c.Certificate(); cur != nil {
				return cur, nil
			}
			return nil, errors.New("cluster: no TLS certificate")
		}
		c.server = &tls.Config{
			MinVersion:     tls.VersionTLS13,
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cert() },
			ClientAuth:     tls.RequireAndVerifyClientCert,
			ClientCAs:      c.CAs,
			// The chain is verified by crypto/tls (CA, validity, client-auth usage); the role is ours.
			VerifyConnection: func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 {
					return errors.New("cluster: peer sent no certificate")
				}
				return pki.CheckRole(cs.PeerCertificates[0], role)
			},
		}
		c.client = &tls.Config{
			MinVersion: tls.VersionTLS13,
			RootCAs:    c.CAs,
			// Verifying the server's certificate for this name is the role check on the dial side.
			ServerName:           role,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert() },
		}
	})
}

func (c *TLSConfig) serverConfig() *tls.Config { c.build(); return c.server }
func (c *TLSConfig) clientConfig() *tls.Config { c.build(); return c.client }

// validate reports a Security that cannot work, before any connection is tried.
func (s Security) validate() error {
	if err := hsCheckSecret(s.Secret); err != nil {
		return err
	}
	if s.TLS != nil && (s.TLS.CAs == nil || s.TLS.Certificate == nil) {
		return errors.New("cluster: TLS needs the cluster CA and a certificate")
	}
	return nil
}

// channelBinding returns the keying material the HMAC handshake is bound to: nil on plain TCP.
func channelBinding(conn net.Conn) ([]byte, error) {
	tc, ok := conn.(*tls.Conn)
	if !ok {
		return nil, nil
	}
	cs := tc.ConnectionState()
	ekm, err := cs.ExportKeyingMaterial(ekmLabel, nil, 32)
	if err != nil {
		return nil, fmt.Errorf("export keying material: %w", err)
	}
	return ekm, nil
}

// Reasons a connection to the cluster port is refused, as counted by Mux.Rejected.
const (
	RejectPlaintext = "plaintext"  // TLS is on and the peer did not speak TLS
	RejectUnknownCA = "unknown_ca" // the certificate does not chain to the cluster CA
	RejectExpired   = "expired"    // the certificate is expired or not valid yet
	RejectWrongRole = "wrong_role" // signed by the CA but not naming the server role
	RejectTLS       = "tls"        // any other TLS failure: no certificate, protocol, timeout
	RejectHandshake = "handshake"  // the HMAC handshake failed: wrong secret, garbage, timeout
	RejectOverload  = "overload"   // too many handshakes pending
)

// RejectReasons lists every reason, in a stable order.
var RejectReasons = []string{RejectPlaintext, RejectUnknownCA, RejectExpired, RejectWrongRole, RejectTLS, RejectHandshake, RejectOverload}

// classifyTLSError names why a TLS handshake failed.
func classifyTLSError(err error) string {
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) {
		return RejectPlaintext
	}
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ua) {
		return RejectUnknownCA
	}
	var ci x509.CertificateInvalidError
	if errors.As(err, &ci) && ci.Reason == x509.Expired {
		return RejectExpired
	}
	var he x509.HostnameError
	if errors.Is(err, pki.ErrWrongRole) || errors.As(err, &he) {
		return RejectWrongRole
	}
	return RejectTLS
}
