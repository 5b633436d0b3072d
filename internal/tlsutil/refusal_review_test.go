package tlsutil_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/dister/dister/internal/testcluster"
	"github.com/dister/dister/internal/tlsutil"
)

// hangingUpService is an HTTP service (a secret store, an OCSP responder)
// that reads each request and closes the connection without answering;
// fetch returns the error net/http really gives for it:
// `Get "http://…": EOF`, which wraps io.EOF.
func hangingUpService(t *testing.T) (fetch func() error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			http.ReadRequest(bufio.NewReader(c))
			c.Close()
		}
	}()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	return func() error {
		resp, err := client.Get("http://" + ln.Addr().String() + "/")
		if err == nil {
			resp.Body.Close()
			return errors.New("the service answered")
		}
		return fmt.Errorf("fetching: %w", err)
	}
}

// TestLocalFailureWrappingEOFIsNoHangUp: with an embedder's *tls.Config
// (TLS.Config, "embedders that manage certificates themselves"), the
// server's own callbacks can fail with an error that wraps io.EOF or
// ECONNRESET: a GetCertificate fetching from a secret store, a
// VerifyConnection asking a revocation service. crypto/tls returns the
// callback's error as it is, so hungUp's errors.Is reaches the EOF inside
// it and the handshake is taken for the client hanging up: logged at debug
// only. These are this server's failures (no client can connect; a client
// refused), not a hang-up: each must be warned about once.
func TestLocalFailureWrappingEOFIsNoHangUp(t *testing.T) {
	dir := t.TempDir()
	ca := testcluster.NewCA(t, dir, "ca")
	cert, key := ca.Issue(t, dir, "127.0.0.1", time.Time{})
	kp, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	fetch := hangingUpService(t)
	if err := fetch(); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the service's error %v wraps neither io.EOF nor ECONNRESET; the premise does not hold here", err)
	}

	for _, c := range []struct {
		name string
		cfg  *tls.Config
	}{
		{"GetCertificate fails", &tls.Config{ClientCAs: pool, GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return nil, fmt.Errorf("loading the server certificate from the secret store: %w", fetch())
		}}},
		{"VerifyConnection refuses", &tls.Config{ClientCAs: pool, Certificates: []tls.Certificate{kp}, VerifyConnection: func(tls.ConnectionState) error {
			return fmt.Errorf("client certificate revocation unknown: %w", fetch())
		}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			logs := &records{}
			src, err := tlsutil.New(tlsutil.Files{}, c.cfg, slog.New(logs))
			if err != nil {
				t.Fatal(err)
			}
			addr, handshake := serveHandshakes(t, src.ServerCredentials(), 10*time.Second)

			// A well-configured client that waits for the server's verdict
			// (it does not hang up).
			cc, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", Certificates: []tls.Certificate{kp}})
			if err == nil {
				cc.SetReadDeadline(time.Now().Add(5 * time.Second))
				cc.Read(make([]byte, 1))
				cc.Close()
			}
			serr := <-handshake
			if serr == nil {
				t.Fatal("the handshake succeeded")
			}
			if w := logs.warnings(); len(w) != 1 {
				t.Errorf("the server failed the handshake itself (%v), yet logged warnings %q, want one; all records %q", serr, w, logs.msgs)
			}
		})
	}
}
