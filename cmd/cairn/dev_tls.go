package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/cairn-dev/cairn/node"
	"github.com/cairn-dev/cairn/pki"
)

// devTLS is the throw-away PKI of `cairn dev --tls` and `cairn bench --tls`: a CA, one server
// certificate shared by the in-process nodes, and a client certificate, all in the temp dir.
type devTLS struct {
	dir                   string
	caFile                string
	certFile, keyFile     string
	clientCert, clientKey string
}

// makeDevTLS writes a fresh CA and certificates under dir/tls.
func makeDevTLS(dir string) (*devTLS, error) {
	d := &devTLS{dir: filepath.Join(dir, "tls")}
	if err := os.MkdirAll(d.dir, 0o700); err != nil {
		return nil, err
	}
	ca, caKey, err := pki.NewCA("cairn dev CA", pki.DefaultCertValidity)
	if err != nil {
		return nil, err
	}
	d.caFile = filepath.Join(d.dir, defaultCAFile)
	if err := pki.WriteFiles(d.caFile, ca.CertPEM, filepath.Join(d.dir, defaultCAKeyFile), caKey); err != nil {
		return nil, fmt.Errorf("dev CA: %w", err)
	}
	write := func(o pki.CertOptions, name string) (string, string, error) {
		certPEM, keyPEM, err := ca.Issue(o)
		if err != nil {
			return "", "", err
		}
		c, k := filepath.Join(d.dir, name+".pem"), filepath.Join(d.dir, name+"-key.pem")
		return c, k, pki.WriteFiles(c, certPEM, k, keyPEM)
	}
	if d.certFile, d.keyFile, err = write(pki.CertOptions{Server: true}, "server-cairn-0"); err != nil {
		return nil, fmt.Errorf("dev server certificate: %w", err)
	}
	if d.clientCert, d.clientKey, err = write(pki.CertOptions{}, "client-cairn-0"); err != nil {
		return nil, fmt.Errorf("dev client certificate: %w", err)
	}
	return d, nil
}

// nodeConfig is the TLS every dev node runs with: HTTPS and mutual TLS on the cluster port.
func (d *devTLS) nodeConfig() node.TLSConfig {
	return node.TLSConfig{CAFile: d.caFile, CertFile: d.certFile, KeyFile: d.keyFile}
}

// scheme is the URL scheme of the dev cluster's HTTP API.
func (dc devClusterConfig) scheme() string {
	if dc.tls != nil {
		return "https"
	}
	return "http"
}
