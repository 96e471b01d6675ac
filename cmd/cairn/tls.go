package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cairn-dev/cairn/node"
	"github.com/cairn-dev/cairn/pki"
)

// File names `cairn tls` writes and reads by default, in the current directory (as `consul tls`).
const (
	defaultCAFile    = "cairn-agent-ca.pem"
	defaultCAKeyFile = "cairn-agent-ca-key.pem"
)

const tlsUsage = `usage:
  cairn tls ca create [--dir DIR] [--days N]
  cairn tls cert create --server|--client [--node-id ID] [--dns NAME,...] [--ip ADDR,...]
                        [--ca FILE] [--ca-key FILE] [--dir DIR] [--days N]`

// runTLS implements `cairn tls ca create` and `cairn tls cert create`.
func runTLS(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		fmt.Fprintln(stdout, tlsUsage)
		return nil
	}
	if len(args) < 2 || args[1] != "create" || (args[0] != "ca" && args[0] != "cert") {
		return errors.New(tlsUsage)
	}
	if args[0] == "ca" {
		return runTLSCACreate(args[2:], stdout, stderr)
	}
	return runTLSCertCreate(args[2:], stdout, stderr)
}

func runTLSCACreate(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cairn tls ca create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", ".", "directory to write the CA certificate and key into")
	days := fs.Int("days", int(pki.DefaultCAValidity/(24*time.Hour)), "days the CA is valid")
	name := fs.String("common-name", "cairn cluster CA", "the CA's common name")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 || *days <= 0 {
		return errors.New(tlsUsage)
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return fmt.Errorf("--dir: %w", err)
	}
	ca, keyPEM, err := pki.NewCA(*name, time.Duration(*days)*24*time.Hour)
	if err != nil {
		return err
	}
	certPath, keyPath := filepath.Join(*dir, defaultCAFile), filepath.Join(*dir, defaultCAKeyFile)
	if err := pki.WriteFiles(certPath, ca.CertPEM, keyPath, keyPEM); err != nil {
		return fmt.Errorf("write CA: %w", err)
	}
	fmt.Fprintf(stdout, "==> Saved %s\n==> Saved %s (keep it secret and off the nodes)\n", certPath, keyPath)
	return nil
}

func runTLSCertCreate(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cairn tls cert create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	server := fs.Bool("server", false, "a node certificate: HTTPS and the cluster port (names "+pki.ServerRole+", localhost, 127.0.0.1)")
	client := fs.Bool("client", false, "a client certificate for --tls-http-client-auth (names "+pki.ClientRole+")")
	nodeID := fs.String("node-id", "", "with --server: also name <id>."+pki.ServerRole+" and name the files after the node")
	var dns, ips listFlag
	fs.Var(&dns, "dns", "extra DNS names, comma-separated or repeated (the names clients use for HTTPS)")
	fs.Var(&ips, "ip", "extra IP addresses, comma-separated or repeated")
	caFile := fs.String("ca", "", "CA certificate (default: "+defaultCAFile+" in --dir)")
	caKeyFile := fs.String("ca-key", "", "CA key (default: "+defaultCAKeyFile+" in --dir)")
	dir := fs.String("dir", ".", "directory to write the certificate and key into")
	days := fs.Int("days", int(pki.DefaultCertValidity/(24*time.Hour)), "days the certificate is valid")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 || *server == *client || *days <= 0 {
		return errors.New("exactly one of --server and --client is required\n" + tlsUsage)
	}
	if *nodeID != "" && !*server {
		return errors.New("--node-id goes with --server")
	}
	var ipList []net.IP
	for _, s := range ips {
		ip := net.ParseIP(s)
		if ip == nil {
			return fmt.Errorf("--ip %q is not an IP address", s)
		}
		ipList = append(ipList, ip)
	}
	if *caFile == "" {
		*caFile = filepath.Join(*dir, defaultCAFile)
	}
	if *caKeyFile == "" {
		*caKeyFile = filepath.Join(*dir, defaultCAKeyFile)
	}
	ca, err := pki.LoadCA(*caFile, *caKeyFile)
	if err != nil {
		return fmt.Errorf("--ca/--ca-key: %w (create one with 'cairn tls ca create')", err)
	}
	now := time.Now()
	certPEM, keyPEM, err := ca.Issue(pki.CertOptions{Server: *server, NodeID: *nodeID, DNS: dns, IPs: ipList,
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Duration(*days) * 24 * time.Hour)})
	if err != nil {
		return err
	}
	base := "client-cairn"
	if *server {
		base = "server-cairn"
	}
	var name string
	if *nodeID != "" {
		name = "server-" + *nodeID
	} else {
		// The first free index, as `consul tls cert create` does.
		for i := 0; ; i++ {
			name = base + "-" + strconv.Itoa(i)
			if _, err := os.Stat(filepath.Join(*dir, name+".pem")); errors.Is(err, os.ErrNotExist) {
				break
			}
		}
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return fmt.Errorf("--dir: %w", err)
	}
	certPath, keyPath := filepath.Join(*dir, name+".pem"), filepath.Join(*dir, name+"-key.pem")
	if err := pki.WriteFiles(certPath, certPEM, keyPath, keyPEM); err != nil {
		return fmt.Errorf("write certificate: %w", err)
	}
	fmt.Fprintf(stdout, "==> Saved %s\n==> Saved %s\n", certPath, keyPath)
	return nil
}

// listFlag is a comma-separated, repeatable string flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// addAgentTLSFlags adds the agent's TLS flags (Consul's names), mapped onto c.
func addAgentTLSFlags(fs *flag.FlagSet, c *node.TLSConfig) {
	fs.StringVar(&c.CAFile, "tls-ca-file", "", "cluster CA certificate (PEM): turns on mutual TLS 1.3 on the cluster port")
	fs.StringVar(&c.CertFile, "tls-cert-file", "", "this node's certificate (PEM): turns on HTTPS; also used on the cluster port")
	fs.StringVar(&c.KeyFile, "tls-key-file", "", "the key of --tls-cert-file (PEM)")
	fs.BoolVar(&c.HTTPClientAuth, "tls-http-client-auth", false, "require HTTPS clients to present a certificate signed by --tls-ca-file")
}

// warnUnencrypted says what an operator without TLS should know.
func warnUnencrypted(logger *slog.Logger, c node.TLSConfig) {
	if !c.ClusterEnabled() {
		logger.Warn("the cluster port is not encrypted: nodes authenticate each other, but Raft and shard traffic cross the network in the clear; set --tls-ca-file, --tls-cert-file and --tls-key-file (see docs/operations.md, Securing a cluster)")
	}
	if !c.Enabled() {
		logger.Warn("the HTTP API is plain HTTP: tokens and files cross the network in the clear unless a TLS proxy sits in front")
	}
}

// reloadTLSOnSIGHUP reloads n's certificate and key on every SIGHUP until the returned stop is
// called. A failed reload keeps the old certificate (node logs and counts it).
func reloadTLSOnSIGHUP(n *node.Node) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		for {
			select {
			case <-done:
				return
			case <-hup:
				_ = n.ReloadTLS()
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
		<-exited
	}
}
