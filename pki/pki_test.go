package pki

import (
	"context"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// testFiles issues a certificate from ca into dir/name.pem and dir/name-key.pem.
func testFiles(t *testing.T, ca *CA, dir, name string, o CertOptions) (certFile, keyFile string) {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue(o)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	if err := WriteFiles(certFile, certPEM, keyFile, keyPEM); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func testCA(t *testing.T) *CA {
	t.Helper()
	ca, _, err := NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func poolOf(ca *CA) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

func TestWriteFilesModesAndNoOverwrite(t *testing.T) {
	ca := testCA(t)
	dir := t.TempDir()
	certFile, keyFile := testFiles(t, ca, dir, "a", CertOptions{Server: true})
	for file, want := range map[string]os.FileMode{certFile: 0o644, keyFile: 0o600} {
		st, err := os.Stat(file)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s has mode %v, want %v", file, st.Mode().Perm(), want)
		}
	}
	certPEM, keyPEM, _ := ca.Issue(CertOptions{Server: true})
	if err := WriteFiles(certFile, certPEM, filepath.Join(dir, "other-key.pem"), keyPEM); err == nil {
		t.Fatal("WriteFiles overwrote an existing certificate")
	}
	if _, err := os.Stat(filepath.Join(dir, "other-key.pem")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a refused write left its key behind")
	}
}

func TestLoadKeyPairErrors(t *testing.T) {
	ca := testCA(t)
	foreign := testCA(t)
	dir := t.TempDir()
	goodCert, goodKey := testFiles(t, ca, dir, "good", CertOptions{Server: true})
	_, otherKey := testFiles(t, ca, dir, "other", CertOptions{Server: true})
	expCert, expKey := testFiles(t, ca, dir, "expired", CertOptions{Server: true,
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	forCert, forKey := testFiles(t, foreign, dir, "foreign", CertOptions{Server: true})
	cliCert, cliKey := testFiles(t, ca, dir, "client", CertOptions{})
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not a certificate"), 0o600)
	unreadable := filepath.Join(dir, "unreadable.pem")
	os.WriteFile(unreadable, []byte("x"), 0o000)

	check := SignedBy(poolOf(ca), ServerRole, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
	tests := []struct {
		name       string
		cert, key  string
		wantWhich  string
		wantTarget error
	}{
		{"missing certificate", filepath.Join(dir, "nope.pem"), goodKey, FileCert, os.ErrNotExist},
		{"missing key", goodCert, filepath.Join(dir, "nope-key.pem"), FileKey, os.ErrNotExist},
		{"garbage certificate", garbage, goodKey, FileCert, nil},
		{"key of another certificate", goodCert, otherKey, FileKey, nil},
		{"expired", expCert, expKey, FileCert, ErrExpired},
		{"another CA", forCert, forKey, FileCert, nil},
		{"client role", cliCert, cliKey, FileCert, ErrWrongRole},
	}
	if os.Geteuid() != 0 { // root reads a 0000 file anyway
		tests = append(tests, struct {
			name       string
			cert, key  string
			wantWhich  string
			wantTarget error
		}{"unreadable certificate", unreadable, goodKey, FileCert, os.ErrPermission})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadKeyPair(tt.cert, tt.key, check)
			le, ok := errors.AsType[*LoadError](err)
			if !ok {
				t.Fatalf("err = %v, want a *LoadError", err)
			}
			if le.Which != tt.wantWhich {
				t.Errorf("error is about the %s file, want %s: %v", le.Which, tt.wantWhich, err)
			}
			if tt.wantTarget != nil && !errors.Is(err, tt.wantTarget) {
				t.Errorf("err = %v, want %v", err, tt.wantTarget)
			}
		})
	}
	if _, err := LoadKeyPair(goodCert, goodKey, check); err != nil {
		t.Fatalf("good pair refused: %v", err)
	}
}

func TestKeyPairReloadKeepsOldOnFailure(t *testing.T) {
	ca := testCA(t)
	dir := t.TempDir()
	certFile, keyFile := testFiles(t, ca, dir, "node", CertOptions{Server: true})
	kp, err := LoadKeyPair(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := kp.Certificate().Leaf.SerialNumber

	// A broken replacement: the old pair stays.
	os.WriteFile(certFile, []byte("garbage"), 0o644)
	if changed, err := kp.Reload(); err == nil || changed {
		t.Fatalf("Reload of garbage: changed %v, err %v", changed, err)
	}
	if kp.Certificate().Leaf.SerialNumber.Cmp(first) != 0 {
		t.Fatal("a failed reload replaced the certificate")
	}

	// A good replacement, watched: it is picked up.
	certPEM, keyPEM, _ := ca.Issue(CertOptions{Server: true})
	var mu sync.Mutex
	var reports []error
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		kp.Watch(ctx, 10*time.Millisecond, func(changed bool, err error) {
			mu.Lock()
			reports = append(reports, err)
			mu.Unlock()
		})
	}()
	os.WriteFile(keyFile, keyPEM, 0o600)
	os.WriteFile(certFile, certPEM, 0o644)
	deadline := time.Now().Add(10 * time.Second)
	for kp.Certificate().Leaf.SerialNumber.Cmp(first) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("watch did not pick up the new pair")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if len(reports) != 1 || reports[0] != nil {
		t.Fatalf("reports = %v, want one successful reload (a half-replaced pair is not reported)", reports)
	}
}

func TestLoadCA(t *testing.T) {
	dir := t.TempDir()
	ca, keyPEM, err := NewCA("x", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cf, kf := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	if err := WriteFiles(cf, ca.CertPEM, kf, keyPEM); err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadCA(cf, kf)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := testFiles(t, loaded, dir, "n", CertOptions{Server: true, NodeID: "n1"})
	kp, err := LoadKeyPair(certFile, keyFile, SignedBy(poolOf(ca), "n1."+ServerRole))
	if err != nil {
		t.Fatalf("certificate from the loaded CA: %v", err)
	}
	if kp.NotAfter().Before(time.Now()) {
		t.Fatal("issued certificate already expired")
	}
	other, otherKey, _ := NewCA("y", time.Hour)
	_ = other
	kf2 := filepath.Join(dir, "other-key.pem")
	os.WriteFile(kf2, otherKey, 0o600)
	if _, err := LoadCA(cf, kf2); err == nil {
		t.Fatal("LoadCA accepted the key of another CA")
	}
}
