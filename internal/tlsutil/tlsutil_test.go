package tlsutil_test

import (
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/dister/dister/internal/testcluster"
	"github.com/dister/dister/internal/tlsutil"
)

func serial(t *testing.T, s *tlsutil.Source) string {
	t.Helper()
	cfg, err := s.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(cfg.Certificates[0].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return c.SerialNumber.String()
}

// TestReload: changed files are loaded at the next check; a certificate
// that does not match its key (files caught half replaced) keeps the
// previous pair in use until the pair is whole again. Chains are told
// apart: the server CA's from the client CA's.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	ca := testcluster.NewCA(t, dir, "ca")
	cca := testcluster.NewCA(t, dir, "client-ca")
	cert, key := ca.Issue(t, dir, "s1", time.Time{})
	src, err := tlsutil.New(tlsutil.Files{CA: ca.File, Cert: cert, Key: key, ClientCA: cca.File}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	first := serial(t, src)

	other, _ := ca.Issue(t, dir, "s2", time.Time{})
	data, err := os.ReadFile(other)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cert, data, 0o600); err != nil { // s2's certificate, s1's key
		t.Fatal(err)
	}
	tlsutil.Recheck(src)
	if got := serial(t, src); got != first {
		t.Fatalf("a certificate without its key was taken: serial %s, want the previous %s", got, first)
	}
	ca.Issue(t, dir, "s1", time.Time{}) // a whole new pair
	tlsutil.Recheck(src)
	if got := serial(t, src); got == first {
		t.Fatal("the replaced pair was not loaded")
	}

	client, ckey := cca.Issue(t, dir, "app", time.Time{})
	for _, c := range []struct {
		cert, key string
		server    bool
	}{{cert, key, true}, {client, ckey, false}} {
		leaf, chains := verify(t, c.cert, ca, cca)
		if got := src.FromServer(chains); got != c.server {
			t.Errorf("%s: FromServer %v, want %v", leaf, got, c.server)
		}
	}
}

// verify builds the verified chains of certFile against both CAs, as the
// TLS server does.
func verify(t *testing.T, certFile string, cas ...*testcluster.CA) (string, [][]*x509.Certificate) {
	t.Helper()
	kp, err := tlsLoad(certFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	for _, ca := range cas {
		pool.AddCert(ca.Cert)
	}
	chains, err := kp.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		t.Fatal(err)
	}
	return kp.Subject.CommonName, chains
}

func tlsLoad(certFile string) (*x509.Certificate, error) {
	data, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(data)
	return x509.ParseCertificate(blk.Bytes)
}
