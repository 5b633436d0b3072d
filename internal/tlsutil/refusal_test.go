package tlsutil_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/dister/dister/internal/testcluster"
	"github.com/dister/dister/internal/tlsutil"
)

// records counts the log records at each level.
type records struct {
	mu   sync.Mutex
	msgs []string
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.msgs = append(r.msgs, rec.Level.String()+" "+rec.Message)
	r.mu.Unlock()
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

func (r *records) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.msgs)
}

func (r *records) count(prefix string) int {
	n := 0
	for _, m := range r.all() {
		if strings.HasPrefix(m, prefix) {
			n++
		}
	}
	return n
}

func (r *records) warnings() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, m := range r.msgs {
		if strings.HasPrefix(m, "WARN") {
			out = append(out, m)
		}
	}
	return out
}

// TestRefusalLoggedOnce: a client without a certificate is refused and the
// refusal logged once; the same client hanging up mid-handshake (its
// process stopped, its dial timed out, a port probe) is no refusal and
// logs no second warning, nor do repeats of the refusal after it.
func TestRefusalLoggedOnce(t *testing.T) {
	dir := t.TempDir()
	ca := testcluster.NewCA(t, dir, "ca")
	cca := testcluster.NewCA(t, dir, "client-ca")
	cert, key := ca.Issue(t, dir, "127.0.0.1", time.Time{})
	logs := &records{}
	src, err := tlsutil.New(tlsutil.Files{CA: ca.File, Cert: cert, Key: key, ClientCA: cca.File}, nil, slog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	addr, handshakes := serveHandshakes(t, src.ServerCredentials(), time.Second)

	anonymous := func() {
		t.Helper()
		pool := x509.NewCertPool()
		pool.AddCert(ca.Cert)
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
		if err == nil {
			// TLS 1.3: the server's verdict on the missing certificate
			// arrives after the client's side of the handshake.
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			c.Read(make([]byte, 1))
			c.Close()
		}
		if err := <-handshakes; err == nil {
			t.Fatal("a client without a certificate was accepted")
		}
	}
	// hangUp connects and closes (reset: with an RST, as a killed
	// process's socket may) without a word; silent says nothing until
	// the server's handshake deadline.
	hangUp := func(reset, silent bool) {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if reset {
			c.(*net.TCPConn).SetLinger(0)
		}
		if silent {
			err := <-handshakes
			c.Close()
			if err == nil {
				t.Fatal("a silent connection's handshake was accepted")
			}
			return
		}
		c.Close()
		if err := <-handshakes; err == nil {
			t.Fatal("a connection closed before its handshake was accepted")
		}
	}

	anonymous()
	if w := logs.warnings(); len(w) != 1 {
		t.Fatalf("after one refusal, warnings %q, want one", w)
	}
	hangUp(false, false)
	anonymous()
	hangUp(true, false)
	anonymous()
	if w := logs.warnings(); len(w) != 1 {
		t.Fatalf("after a refusal, hang-ups and the same refusal again, warnings %q, want one", w)
	}
	if debug := logs.count("DEBUG a peer API client hung up"); debug != 2 {
		t.Errorf("%d hang-ups logged at debug, want 2 (records %q)", debug, logs.all())
	}
	// Handshakes that time out are one reason, whatever port they came
	// from.
	hangUp(false, true)
	hangUp(false, true)
	if w := logs.warnings(); len(w) != 2 || !strings.Contains(w[1], "refused") {
		t.Fatalf("after two handshakes timed out, warnings %q, want one more", w)
	}
}

// serveHandshakes runs creds' server handshake on every connection to a
// loopback listener, each with timeout as its deadline (as gRPC's
// ConnectionTimeout), and sends each handshake's error; the listener
// closes at the end of the test.
func serveHandshakes(t *testing.T, creds credentials.TransportCredentials, timeout time.Duration) (string, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	results := make(chan error, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(timeout))
			conn, _, err := creds.ServerHandshake(c)
			if err == nil {
				conn.Close()
			} else {
				c.Close()
			}
			results <- err
		}
	}()
	return ln.Addr().String(), results
}
