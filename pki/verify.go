package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
)

// ErrWrongRole means a certificate chains to the CA but does not name the role asked for (e.g. a
// client certificate offered on the cluster port).
var ErrWrongRole = errors.New("certificate does not name the required role")

// CheckRole reports whether cert names role as a DNS SAN.
func CheckRole(cert *x509.Certificate, role string) error {
	if err := cert.VerifyHostname(role); err != nil {
		return fmt.Errorf("%w %q (names %v)", ErrWrongRole, role, cert.DNSNames)
	}
	return nil
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
