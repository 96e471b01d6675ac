package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"
)

// clientTLSFlags are the TLS flags of every subcommand that talks to a cluster: --ca-cert (env
// CAIRN_CACERT, or CAIRN_CA_CERT like every flag), --client-cert and --client-key. Build HTTP
// clients through httpClient, so that https:// addresses, a private CA and client certificates
// work the same in every command.
type clientTLSFlags struct {
	caCert     string
	clientCert string
	clientKey  string

	once   sync.Once
	client *http.Client
	config *tls.Config
	err    error
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
// system roots), and the client certificate when given. Errors name the flag.
func (f *clientTLSFlags) tlsConfig() (*tls.Config, error) {
	f.build()
	return f.config, f.err
}

// httpClient returns the one HTTP client of this command (http:// and https://). timeout bounds
// each request; zero means none (streams bound themselves with a context).
func (f *clientTLSFlags) httpClient(timeout time.Duration) (*http.Client, error) {
	f.build()
	if f.err != nil {
		return nil, f.err
	}
	c := *f.client
	c.Timeout = timeout
	return &c, nil
}

func (f *clientTLSFlags) build() {
	f.once.Do(func() {
		f.config, f.err = f.load()
		if f.err != nil {
			return
		}
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = f.config
		f.client = &http.Client{Transport: t}
	})
}

func (f *clientTLSFlags) load() (*tls.Config, error) {
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
