package pki

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Which file of a key pair a LoadError is about.
const (
	FileCert = "cert"
	FileKey  = "key"
)

// LoadError says which file of a key pair is at fault, so that the caller can name its flag.
type LoadError struct {
	Which string // FileCert or FileKey
	Path  string
	Err   error
}

func (e *LoadError) Error() string { return e.Path + ": " + e.Err.Error() }
func (e *LoadError) Unwrap() error { return e.Err }

// Errors of a certificate that parses but must not be served.
var (
	ErrExpired     = errors.New("certificate has expired")
	ErrNotYetValid = errors.New("certificate is not valid yet")
)

// KeyPair is a certificate and its key, loaded from two PEM files and replaced in place when the
// files change (Reload, Watch). Handshakes read the current pair through GetCertificate and
// GetClientCertificate, so a replacement affects only handshakes that start after it and no
// connection is dropped. A pair that fails to load or to pass Check never replaces a good one.
type KeyPair struct {
	certFile, keyFile string
	check             func(*x509.Certificate) error

	cur atomic.Pointer[loadedPair]
	mu  sync.Mutex // serialises reloads
}

type loadedPair struct {
	cert *tls.Certificate
	sum  [sha256.Size]byte // of both files' contents, to notice a change
}

// LoadKeyPair loads certFile and keyFile. check, when not nil, is run on the leaf certificate at
// every load (e.g. "is signed by the cluster CA and names the server role"); its error is about
// the certificate file.
func LoadKeyPair(certFile, keyFile string, check func(*x509.Certificate) error) (*KeyPair, error) {
	k := &KeyPair{certFile: certFile, keyFile: keyFile, check: check}
	p, err := k.load()
	if err != nil {
		return nil, err
	}
	k.cur.Store(p)
	return k, nil
}

func (k *KeyPair) load() (*loadedPair, error) {
	certPEM, err := os.ReadFile(k.certFile)
	if err != nil {
		return nil, &LoadError{FileCert, k.certFile, err}
	}
	keyPEM, err := os.ReadFile(k.keyFile)
	if err != nil {
		return nil, &LoadError{FileKey, k.keyFile, err}
	}
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, &LoadError{FileCert, k.certFile, errors.New("no PEM certificate in the file")}
	}
	if _, err := x509.ParseCertificate(block.Bytes); err != nil {
		return nil, &LoadError{FileCert, k.certFile, err}
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, &LoadError{FileKey, k.keyFile, fmt.Errorf("not the key of %s: %w", k.certFile, err)}
	}
	leaf := pair.Leaf
	now := time.Now()
	switch {
	case now.After(leaf.NotAfter):
		return nil, &LoadError{FileCert, k.certFile, fmt.Errorf("%w (not after %s)", ErrExpired, leaf.NotAfter.UTC().Format(time.RFC3339))}
	case now.Before(leaf.NotBefore):
		return nil, &LoadError{FileCert, k.certFile, fmt.Errorf("%w (not before %s)", ErrNotYetValid, leaf.NotBefore.UTC().Format(time.RFC3339))}
	}
	if k.check != nil {
		if err := k.check(leaf); err != nil {
			return nil, &LoadError{FileCert, k.certFile, err}
		}
	}
	return &loadedPair{cert: &pair, sum: sha256.Sum256(append(append(certPEM, 0), keyPEM...))}, nil
}

// Certificate is the pair in use now.
func (k *KeyPair) Certificate() *tls.Certificate { return k.cur.Load().cert }

// GetCertificate is a tls.Config.GetCertificate serving the current pair.
func (k *KeyPair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return k.Certificate(), nil
}

// GetClientCertificate is a tls.Config.GetClientCertificate presenting the current pair.
func (k *KeyPair) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return k.Certificate(), nil
}

// Reload reads the files again. It reports whether the pair in use changed; on an error the old
// pair stays in use.
func (k *KeyPair) Reload() (changed bool, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	p, err := k.load()
	if err != nil {
		return false, err
	}
	old := k.cur.Load()
	if bytes.Equal(old.sum[:], p.sum[:]) {
		return false, nil
	}
	k.cur.Store(p)
	return true, nil
}

// Watch polls the files every interval until ctx ends, and reloads when their contents change.
// Polling the contents (not inotify) also sees atomic renames and Kubernetes' symlink swaps.
// report is called after every reload that changed the pair or failed. A pair that fails is
// retried on the next poll before it is reported, since an operator replacing two files is
// briefly between them; once reported, it is retried only after its files change again.
func (k *KeyPair) Watch(ctx context.Context, interval time.Duration, report func(changed bool, err error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var lastBad, pending [sha256.Size]byte
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sum, ok := k.filesSum()
		if ok && sum == k.cur.Load().sum || sum == lastBad {
			continue
		}
		changed, err := k.Reload()
		if err != nil && sum != pending {
			pending = sum // maybe mid-replacement: look again next tick
			continue
		}
		if err != nil {
			lastBad = sum
		}
		report(changed, err)
	}
}

// filesSum hashes both files' contents; ok is false when one cannot be read.
func (k *KeyPair) filesSum() (sum [sha256.Size]byte, ok bool) {
	certPEM, err1 := os.ReadFile(k.certFile)
	keyPEM, err2 := os.ReadFile(k.keyFile)
	return sha256.Sum256(append(append(certPEM, 0), keyPEM...)), err1 == nil && err2 == nil
}

// NotAfter is when the certificate in use expires.
func (k *KeyPair) NotAfter() time.Time { return k.Certificate().Leaf.NotAfter }
