package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/pki"

	"github.com/cairn-dev/cairn/internal/testutil"
)

// tlsTestCA makes a CA and returns it with its pool.
func tlsTestCA(t testing.TB) *pki.CA {
	t.Helper()
	ca, _, err := pki.NewCA("cairn test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func newPool(ca *pki.CA) *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return pool
}

// tlsTestCert issues a certificate from ca and returns it ready for tls.
func tlsTestCert(t testing.TB, ca *pki.CA, o pki.CertOptions) *tls.Certificate {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue(o)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &pair
}

// tlsTestSecurity is mutual TLS under ca with cert, plus the test secret.
func tlsTestSecurity(ca *pki.CA, cert *tls.Certificate, secret []byte) Security {
	pool := newPool(ca)
	return Security{Secret: secret, TLS: &TLSConfig{CAs: pool, Certificate: func() *tls.Certificate { return cert }}}
}

func TestClusterTLSAcceptsAndEncrypts(t *testing.T) {
	ca := tlsTestCA(t)
	sec := tlsTestSecurity(ca, tlsTestCert(t, ca, pki.CertOptions{Server: true, NodeID: "n1"}), muxTestSecret)
	m := muxTestServeSecurity(t, sec, 0)
	addr := m.Listener(ConnRPC).Addr().String()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	peer := tlsTestSecurity(ca, tlsTestCert(t, ca, pki.CertOptions{Server: true, NodeID: "n2"}), muxTestSecret)
	conn, err := DialCluster(ctx, OSNetwork{}, addr, ConnRPC, peer)
	if err != nil {
		t.Fatalf("DialCluster: %v", err)
	}
	defer conn.Close()
	tc, ok := conn.(*tls.Conn)
	if !ok || tc.ConnectionState().Version != tls.VersionTLS13 {
		t.Fatalf("client connection is %T, want TLS 1.3", conn)
	}
	srv := muxTestAccept(t, m.Listener(ConnRPC))
	if st, ok := srv.(*tls.Conn); !ok || st.ConnectionState().PeerCertificates[0].Subject.CommonName != "n2."+pki.ServerRole {
		t.Fatalf("server side is %T, want TLS with the peer's certificate", srv)
	}
	if _, err := conn.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	srv.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := srv.Read(buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read %q, %v", buf, err)
	}
	for _, r := range RejectReasons {
		if n := m.Rejected(r); n != 0 {
			t.Errorf("Rejected(%s) = %d, want 0", r, n)
		}
	}
}

// TestClusterTLSRefusals is an attacker's tour of the cluster port: each way in that lacks either
// a valid server certificate under the cluster CA or the secret is refused and counted under its
// own reason.
func TestClusterTLSRefusals(t *testing.T) {
	ca := tlsTestCA(t)
	foreign := tlsTestCA(t)
	good := tlsTestCert(t, ca, pki.CertOptions{Server: true})
	sec := tlsTestSecurity(ca, good, muxTestSecret)
	expired := tlsTestCert(t, ca, pki.CertOptions{Server: true,
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	clientRole := tlsTestCert(t, ca, pki.CertOptions{Server: false})
	// A client certificate may carry any extra name (cairn tls cert create --client --dns): a
	// wildcard over the role's domain must not make it a server (helper-45).
	wildcardClient := tlsTestCert(t, ca, pki.CertOptions{Server: false, DNS: []string{"*.cairn"}})
	foreignCert := tlsTestCert(t, foreign, pki.CertOptions{Server: true})

	// attacker dials with its own TLS settings: it skips verifying our server (it wants in, not
	// safety) and presents cert.
	attacker := func(cert *tls.Certificate) Security {
		s := Security{Secret: muxTestSecret, TLS: &TLSConfig{CAs: newPool(foreign), Certificate: func() *tls.Certificate { return cert }}}
		s.TLS.build()
		s.TLS.client.InsecureSkipVerify = true
		return s
	}
	tests := []struct {
		name   string
		dial   Security
		reason string
	}{
		{"plain TCP with the secret", Security{Secret: muxTestSecret}, RejectPlaintext},
		{"certificate of another CA", attacker(foreignCert), RejectUnknownCA},
		{"expired certificate", attacker(expired), RejectExpired},
		{"client certificate (wrong role)", attacker(clientRole), RejectWrongRole},
		{"client certificate naming *.cairn", attacker(wildcardClient), RejectWrongRole},
		{"no certificate", attacker(nil), RejectTLS},
		{"valid certificate, wrong secret", tlsTestSecurity(ca, good, muxTestSecret2), RejectHandshake},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := muxTestServeSecurity(t, sec, 2*time.Second)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			conn, err := DialCluster(ctx, OSNetwork{}, m.Listener(ConnRaft).Addr().String(), ConnRaft, tt.dial)
			if err == nil {
				conn.Close()
				t.Fatal("DialCluster succeeded")
			}
			testutil.WaitFor(t, 10*time.Second, "refusal counted as "+tt.reason, func() bool { return m.Rejected(tt.reason) == 1 })
			if n := m.RejectedConns(); n != 1 {
				t.Fatalf("RejectedConns = %d, want 1", n)
			}
		})
	}
}

// TestClusterTLSClientVerifiesServer: a node dialling a server whose certificate is from another
// CA, or names the client role, refuses it; it never runs the HMAC handshake with an impostor.
func TestClusterTLSClientVerifiesServer(t *testing.T) {
	ca := tlsTestCA(t)
	foreign := tlsTestCA(t)
	us := tlsTestSecurity(ca, tlsTestCert(t, ca, pki.CertOptions{Server: true}), muxTestSecret)
	for name, impostor := range map[string]*tls.Certificate{
		"foreign CA":  tlsTestCert(t, foreign, pki.CertOptions{Server: true}),
		"client role": tlsTestCert(t, ca, pki.CertOptions{Server: false}),
	} {
		t.Run(name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			got := make(chan []byte, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{*impostor}, ClientAuth: tls.RequestClientCert})
				tc.SetDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 64)
				n, _ := tc.Read(buf)
				got <- buf[:n]
			}()
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			conn, err := DialCluster(ctx, OSNetwork{}, ln.Addr().String(), ConnRPC, us)
			if err == nil {
				conn.Close()
				t.Fatal("DialCluster trusted an impostor")
			}
			if b := <-got; len(b) != 0 {
				t.Fatalf("the impostor received %d handshake bytes", len(b))
			}
		})
	}
}

// TestClusterTLSHandshakeDeadline: a peer that opens TLS and then says nothing is cut off at the
// handshake deadline, and its goroutine ends.
func TestClusterTLSHandshakeDeadline(t *testing.T) {
	ca := tlsTestCA(t)
	m := muxTestServeSecurity(t, tlsTestSecurity(ca, tlsTestCert(t, ca, pki.CertOptions{Server: true}), muxTestSecret), 200*time.Millisecond)
	c, err := net.Dial("tcp", m.Listener(ConnRPC).Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	testutil.WaitFor(t, 10*time.Second, "silent peer refused", func() bool { return m.Rejected(RejectTLS) == 1 })
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || hsIsTimeout(err) {
		t.Fatalf("read after the deadline: %v, want the server to have closed", err)
	}
	m.mu.Lock()
	pending := len(m.pending)
	m.mu.Unlock()
	if pending != 0 {
		t.Fatalf("%d handshakes still pending", pending)
	}
}

func TestChannelBindingDiffersPerSession(t *testing.T) {
	// Two TLS sessions between the same two certificates export different keying material, so
	// an HMAC proof from one session is worthless in another.
	ca := tlsTestCA(t)
	sec := tlsTestSecurity(ca, tlsTestCert(t, ca, pki.CertOptions{Server: true}), muxTestSecret)
	m := muxTestServeSecurity(t, sec, 0)
	var ekms [][]byte
	for range 2 {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		conn, err := DialCluster(ctx, OSNetwork{}, m.Listener(ConnRPC).Addr().String(), ConnRPC, sec)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		muxTestAccept(t, m.Listener(ConnRPC))
		b, err := channelBinding(conn)
		if err != nil || len(b) != 32 {
			t.Fatalf("binding %x, %v", b, err)
		}
		ekms = append(ekms, b)
		conn.Close()
	}
	if string(ekms[0]) == string(ekms[1]) {
		t.Fatal("two sessions exported the same keying material")
	}
	// Plain TCP has no binding, so its proof is the one nodes without TLS have always sent.
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if bind, err := channelBinding(a); bind != nil || err != nil {
		t.Fatalf("plain connection has binding %x, %v", bind, err)
	}
}
