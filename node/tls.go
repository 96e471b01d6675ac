package node

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairn-dev/cairn/cluster"
	"github.com/cairn-dev/cairn/pki"
)

// TLSConfig is the node's TLS, Consul's three flags: the cluster CA, and one certificate and key
// used on both ports.
//   - CertFile and KeyFile alone: HTTPS on the public port (TLS 1.2+); the cluster port stays
//     plain TCP with the HMAC handshake.
//   - With CAFile too: the cluster port is mutual TLS 1.3 (the certificate must chain to the CA
//     and name pki.ServerRole), and HTTPClientAuth may demand client certificates on HTTPS.
//
// The certificate and key are reloaded when the files change (polled every ReloadInterval) and
// on ReloadTLS (SIGHUP); the CA is read once at start.
type TLSConfig struct {
	CAFile         string
	CertFile       string
	KeyFile        string
	HTTPClientAuth bool
	// ReloadInterval is how often the certificate files are checked for changes (default 5 s).
	ReloadInterval time.Duration
}

// Enabled reports whether HTTPS is on.
func (c TLSConfig) Enabled() bool { return c.CertFile != "" || c.KeyFile != "" }

// ClusterEnabled reports whether the cluster port runs mutual TLS.
func (c TLSConfig) ClusterEnabled() bool { return c.CAFile != "" }

const defaultTLSReloadInterval = 5 * time.Second

// gossipKeyringFile, in the data dir, holds the gossip keyring once `cairn keyring` has changed it;
// it then wins over the key derived from the cluster secret.
const gossipKeyringFile = "gossip-keyring.json"

// validate checks the flags fit together; the files themselves are read by loadTLS.
func (c TLSConfig) validate() []error {
	var errs []error
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs = append(errs, errors.New("--tls-cert-file and --tls-key-file go together"))
	}
	if c.CAFile != "" && c.CertFile == "" {
		errs = append(errs, errors.New("--tls-ca-file needs --tls-cert-file and --tls-key-file (the node's certificate for the cluster port)"))
	}
	if c.HTTPClientAuth && c.CAFile == "" {
		errs = append(errs, errors.New("--tls-http-client-auth needs --tls-ca-file (the CA client certificates must be signed by)"))
	}
	if c.ReloadInterval < 0 {
		errs = append(errs, errors.New("the TLS reload interval must not be negative"))
	}
	return errs
}

// nodeTLS is the loaded TLS material of a running node.
type nodeTLS struct {
	cfg  TLSConfig
	pair *pki.KeyPair
	cas  *x509.CertPool // nil without --tls-ca-file

	reloads        prometheus.Counter
	reloadFailures prometheus.Counter
}

// loadTLS reads the CA and the key pair. Every error names the flag whose file is at fault, as the
// operator typed it.
func loadTLS(c TLSConfig) (*nodeTLS, error) {
	if !c.Enabled() {
		return nil, nil
	}
	t := &nodeTLS{cfg: c}
	if t.cfg.ReloadInterval == 0 {
		t.cfg.ReloadInterval = defaultTLSReloadInterval
	}
	var check func(*x509.Certificate) error
	if c.CAFile != "" {
		cas, err := pki.LoadCertPool(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca-file %s: %w", c.CAFile, err)
		}
		t.cas = cas
		// The same certificate serves HTTPS and both ends of the cluster port.
		check = pki.SignedBy(cas, pki.ServerRole, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
	}
	pair, err := pki.LoadKeyPair(c.CertFile, c.KeyFile, check)
	if err != nil {
		return nil, tlsFlagError(err)
	}
	t.pair = pair
	return t, nil
}

// tlsFlagError puts the flag's name on a key pair error.
func tlsFlagError(err error) error {
	if le, ok := errors.AsType[*pki.LoadError](err); ok {
		flag := "--tls-cert-file"
		if le.Which == pki.FileKey {
			flag = "--tls-key-file"
		}
		return fmt.Errorf("%s %w", flag, err)
	}
	return err
}

// httpConfig is the public port's TLS: 1.2 at least, Go's default suites, the current pair.
func (t *nodeTLS) httpConfig() *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: t.pair.GetCertificate}
	if t.cfg.HTTPClientAuth {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = t.cas
	}
	return cfg
}

// clusterSecurity is the cluster port's protection: the derived handshake secret, plus mutual
// TLS when the CA is given.
func (t *nodeTLS) clusterSecurity(secret []byte) cluster.Security {
	sec := cluster.Security{Secret: secret}
	if t != nil && t.cas != nil {
		sec.TLS = &cluster.TLSConfig{CAs: t.cas, Certificate: t.pair.Certificate, Role: pki.ServerRole}
	}
	return sec
}

// registerTLSMetrics exposes reloads and the certificate's expiry, and the cluster port's refusals
// by reason (also without TLS, where only handshake and overload occur).
func (n *Node) registerTLSMetrics() {
	n.reg.MustRegister(newScrapeFamily("cairn_cluster_port_refused_connections_total",
		"Connections to the cluster port refused, by reason: plaintext, unknown_ca, expired, wrong_role, tls, handshake, overload.",
		"reason", prometheus.CounterValue, func() map[string]float64 {
			refused := map[string]float64{}
			for _, r := range cluster.RejectReasons {
				refused[r] = float64(n.mux.Rejected(r))
			}
			return refused
		}))
	if n.tls == nil {
		return
	}
	t := n.tls
	t.reloads = prometheus.NewCounter(prometheus.CounterOpts{Name: "cairn_tls_cert_reloads_total",
		Help: "Times a changed TLS certificate and key were loaded and put in use."})
	t.reloadFailures = prometheus.NewCounter(prometheus.CounterOpts{Name: "cairn_tls_cert_reload_failures_total",
		Help: "Reloads of the TLS certificate and key that failed; the previous pair stays in use."})
	n.reg.MustRegister(t.reloads, t.reloadFailures,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cairn_tls_cert_expiry_timestamp_seconds",
			Help: "When the TLS certificate in use expires (Unix time)."},
			func() float64 { return float64(t.pair.NotAfter().Unix()) }))
}

// ReloadTLS reads the certificate and key files again now (cairn agent calls it on SIGHUP). On an
// error the node keeps serving with the pair it had; the error is logged and counted.
func (n *Node) ReloadTLS() error {
	if n.tls == nil {
		return nil
	}
	changed, err := n.tls.pair.Reload()
	n.reportTLSReload(changed, err)
	return err
}

func (n *Node) reportTLSReload(changed bool, err error) {
	switch {
	case err != nil:
		n.tls.reloadFailures.Inc()
		n.log.Error("TLS certificate reload failed; still serving the previous certificate", "err", tlsFlagError(err))
	case changed:
		n.tls.reloads.Inc()
		n.log.Info("TLS certificate reloaded", "not_after", n.tls.pair.NotAfter().UTC().Format(time.RFC3339))
	}
}

// watchTLS reloads the pair when its files change, until the node stops.
func (n *Node) watchTLS() {
	n.tls.pair.Watch(n.ctx, n.tls.cfg.ReloadInterval, n.reportTLSReload)
}
