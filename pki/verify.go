package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
)

// ErrWrongRole means a certificate chains to the CA but does not name the role asked for (e.g. a
// client certificate offered on the cluster port).
var ErrWrongRole = errors.New("certificate does not name the required role")

// CheckRole reports whether cert names role as a DNS SAN, exactly (ASCII case aside). A role is
// not a host name: a wildcard such as "*.cairn", which any certificate request may carry, does
// not name it (x509's VerifyHostname would take it, and a client certificate naming "*.cairn"
// passed as a server).
func CheckRole(cert *x509.Certificate, role string) error {
	for _, name := range cert.DNSNames {
		if strings.EqualFold(name, role) {
			return nil
		}
	}
	return fmt.Errorf("%w %q (names %v)", ErrWrongRole, role, cert.DNSNames)
}

// SignedBy returns a KeyPair check that the certificate chains to roots, for the given extended
// key usages, and names role (when role is not empty).
func SignedBy(roots *x509.CertPool, role string, usages ...x509.ExtKeyUsage) func(*x509.Certificate) error {
	return func(cert *x509.Certificate) error {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: usages}); err != nil {
			return fmt.Errorf("not valid under the CA: %w", err)
		}
		if role != "" {
			return CheckRole(cert, role)
		}
		return nil
	}
}
