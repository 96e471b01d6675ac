package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"time"
)

// The roles a certificate names, as DNS SANs, like Consul's server.<dc>.consul. The cluster port
// accepts only certificates naming ServerRole; a certificate naming only ClientRole is good for
// the public API's client authentication and nothing else.
const (
	ServerRole = "server.cairn"
	ClientRole = "client.cairn"
)

// Default validity periods, as in `consul tls`: the CA for 5 years, certificates for 1 year.
const (
	DefaultCAValidity   = 5 * 365 * 24 * time.Hour
	DefaultCertValidity = 365 * 24 * time.Hour
)

// CA is a certificate authority that can issue certificates.
type CA struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
}

// NewCA creates a self-signed CA valid from a minute ago for validity.
func NewCA(commonName string, validity time.Duration) (*CA, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	skid, err := subjectKeyID(key.Public())
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"cairn"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          skid,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return &CA{Cert: cert, Key: key, CertPEM: encodeCert(der)}, keyPEM, nil
}

// LoadCA reads a CA certificate and its key (PEM) for issuing.
func LoadCA(certFile, keyFile string) (*CA, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("read CA key: %w", err)
	}
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s holds no PEM certificate", certFile)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate %s: %w", certFile, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("%s is not a CA certificate", certFile)
	}
	kblock, _ := pem.Decode(keyPEM)
	if kblock == nil {
		return nil, fmt.Errorf("%s holds no PEM key", keyFile)
	}
	k, err := x509.ParsePKCS8PrivateKey(kblock.Bytes)
	if err != nil {
		if k2, err2 := x509.ParseECPrivateKey(kblock.Bytes); err2 == nil {
			k, err = k2, nil
		} else {
			return nil, fmt.Errorf("parse CA key %s: %w", keyFile, err)
		}
	}
	signer, ok := k.(crypto.Signer)
	if !ok || !publicKeysEqual(signer.Public(), cert.PublicKey) {
		return nil, fmt.Errorf("CA key %s does not belong to CA certificate %s", keyFile, certFile)
	}
	return &CA{Cert: cert, Key: signer, CertPEM: certPEM}, nil
}

// CertOptions describes a certificate to issue.
type CertOptions struct {
	// Server makes a server certificate: it names ServerRole (and <NodeID>.ServerRole), localhost
	// and 127.0.0.1, and is good for both TLS server and client authentication, since a node dials
	// its peers with it. Otherwise it is a client certificate naming ClientRole.
	Server bool
	NodeID string
	DNS    []string
	IPs    []net.IP
	// NotBefore and NotAfter default to a minute ago and DefaultCertValidity from now; tests set
	// them to make expired certificates.
	NotBefore, NotAfter time.Time
}

// Issue creates a key and a certificate signed by ca. It returns both as PEM.
func (ca *CA) Issue(o CertOptions) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	if o.NotBefore.IsZero() {
		o.NotBefore = now.Add(-time.Minute)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = now.Add(DefaultCertValidity)
	}
	tmpl := &x509.Certificate{
		SerialNumber:   serial,
		NotBefore:      o.NotBefore,
		NotAfter:       o.NotAfter,
		KeyUsage:       x509.KeyUsageDigitalSignature,
		AuthorityKeyId: ca.Cert.SubjectKeyId,
		DNSNames:       o.DNS,
		IPAddresses:    o.IPs,
	}
	if o.Server {
		tmpl.Subject.CommonName = ServerRole
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		names := []string{ServerRole}
		if o.NodeID != "" {
			names = append(names, o.NodeID+"."+ServerRole)
			tmpl.Subject.CommonName = o.NodeID + "." + ServerRole
		}
		tmpl.DNSNames = appendMissing(append(names, "localhost"), o.DNS...)
		tmpl.IPAddresses = appendMissingIP([]net.IP{net.IPv4(127, 0, 0, 1)}, o.IPs...)
	} else {
		tmpl.Subject.CommonName = ClientRole
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		tmpl.DNSNames = appendMissing([]string{ClientRole}, o.DNS...)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate: %w", err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return encodeCert(der), keyPEM, nil
}

// WriteFiles writes a certificate (0644) and its key (0600). It never overwrites: an existing
// file is an error, so that a typo cannot replace a CA key.
func WriteFiles(certPath string, certPEM []byte, keyPath string, keyPEM []byte) error {
	if err := writeNew(keyPath, keyPEM, 0o600); err != nil {
		return err
	}
	if err := writeNew(certPath, certPEM, 0o644); err != nil {
		os.Remove(keyPath)
		return err
	}
	return nil
}

func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return f.Close()
}

func newSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return serial, nil
}

func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("marshal public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return sum[:20], nil
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	ea, ok := a.(equaler)
	return ok && ea.Equal(b)
}

func appendMissing(list []string, more ...string) []string {
	for _, s := range more {
		found := false
		for _, have := range list {
			found = found || have == s
		}
		if !found && s != "" {
			list = append(list, s)
		}
	}
	return list
}

func appendMissingIP(list []net.IP, more ...net.IP) []net.IP {
	for _, ip := range more {
		found := false
		for _, have := range list {
			found = found || have.Equal(ip)
		}
		if !found && ip != nil {
			list = append(list, ip)
		}
	}
	return list
}

// ErrNoCertificates means a CA file held no PEM certificate.
var ErrNoCertificates = errors.New("no PEM certificate found")

// LoadCertPool reads a PEM file of one or more CA certificates.
func LoadCertPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: %w", file, ErrNoCertificates)
	}
	return pool, nil
}
