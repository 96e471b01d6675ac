package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
)

// clientTLSFlags are the TLS flags of every command that talks to a cluster (addClientFlags adds
// them): --ca-cert (env CAIRN_CACERT, or CAIRN_CA_CERT like every flag), --client-cert and
// --client-key. tlsConfig turns them into the client TLS configuration newHTTPClient uses.
type clientTLSFlags struct {
	caCert     string
	clientCert string
	clientKey  string
}

// addClientTLSFlags adds --ca-cert, --client-cert and --client-key to fs.
func addClientTLSFlags(fs *flag.FlagSet) *clientTLSFlags {
	f := &clientTLSFlags{}
	fs.StringVar(&f.caCert, "ca-cert", "", "CA certificate (PEM) to verify https:// nodes with (env CAIRN_CACERT; default: the system's roots)")
	fs.StringVar(&f.clientCert, "client-cert", "", "client certificate (PEM), for nodes run with --tls-http-client-auth")
	fs.StringVar(&f.clientKey, "client-key", "", "the key of --client-cert (PEM)")
	return f
}

// tlsConfig is the client TLS configuration the flags describe: TLS 1.2 at least, the CA (or the
// system's roots), and the client certificate when given. Errors name the flag.
func (f *clientTLSFlags) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	ca := f.caCert
	if ca == "" {
		ca = os.Getenv("CAIRN_CACERT")
	}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("--ca-cert: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-cert %s: no PEM certificate in the file", ca)
		}
		cfg.RootCAs = pool
	}
	switch {
	case f.clientCert != "" && f.clientKey != "":
		pair, err := tls.LoadX509KeyPair(f.clientCert, f.clientKey)
		if err != nil {
			return nil, fmt.Errorf("--client-cert/--client-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	case f.clientCert != "" || f.clientKey != "":
		return nil, errors.New("--client-cert and --client-key go together")
	}
	return cfg, nil
}
