package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// restPKI is a CA with the files of one server and one client
// certificate, made for a test.
type restPKI struct {
	dir                             string
	ca, serverCert, serverKey       string
	clientCA, clientCert, clientKey string
	pool                            *x509.CertPool
	client                          tls.Certificate
	caCA                            *testcluster.CA
}

// restHosts are the names the daemon's test certificate is for.
var restHosts = []string{"localhost", "dister.test", "127.0.0.1"}

func newRestPKI(t *testing.T) *restPKI {
	t.Helper()
	p := &restPKI{dir: t.TempDir()}
	ca, cca := testcluster.NewCA(t, p.dir, "ca"), testcluster.NewCA(t, p.dir, "client-ca")
	p.ca, p.clientCA, p.caCA = ca.File, cca.File, ca
	p.serverCert, p.serverKey = ca.IssueFor(t, p.dir, "server", restHosts, time.Time{})
	p.clientCert, p.clientKey = cca.Issue(t, p.dir, "client", time.Time{})
	p.pool = x509.NewCertPool()
	p.pool.AddCert(ca.Cert)
	var err error
	if p.client, err = tls.LoadX509KeyPair(p.clientCert, p.clientKey); err != nil {
		t.Fatal(err)
	}
	return p
}

func curl(t *testing.T, args ...string) (status, body string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := filepath.Join(t.TempDir(), "body")
	args = append([]string{"-sS", "-o", out, "-w", "%{http_code}"}, args...)
	cmd := exec.CommandContext(ctx, "curl", args...)
	code, _ := cmd.Output() // a failed handshake exits non-zero with 000
	b, _ := os.ReadFile(out)
	return string(code), string(b)
}

// TestRESTOverTLS: the daemon serves HTTPS with client certificates
// required and tokens with roles from a file; real curl and the CLI speak
// to it; the file is reread when it changes; a bad file fails the start.
func TestRESTOverTLS(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not installed")
	}
	p := newRestPKI(t)
	tokens := filepath.Join(p.dir, "tokens")
	if err := os.WriteFile(tokens, []byte("# test tokens\nread R\nwrite W\nadmin A\nwrite TW tenant\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := newDaemon(t, "tls", "--http-cert", p.serverCert, "--http-key", p.serverKey,
		"--http-client-ca", p.clientCA, "--token-file", tokens)
	d.tlsClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{RootCAs: p.pool, Certificates: []tls.Certificate{p.client}}}}
	d.start()
	d.waitReady()
	if out, _ := d.logs(); !strings.Contains(out, "https://") {
		t.Errorf("start line without https://: %q", out)
	}

	base := "https://" + d.httpAddr
	tlsArgs := []string{"--cacert", p.ca, "--cert", p.clientCert, "--key", p.clientKey}
	with := func(args ...string) []string { return append(append([]string{}, tlsArgs...), args...) }

	// curl: roles.
	if st, b := curl(t, with("-X", "PUT", "--data-binary", "v1", "-H", "Authorization: Bearer W", base+"/v1/kv/k")...); st != "200" {
		t.Fatalf("curl PUT with a write token: %s %s", st, b)
	}
	if st, b := curl(t, with("-H", "Authorization: Bearer R", base+"/v1/kv/k?raw")...); st != "200" || b != "v1" {
		t.Fatalf("curl GET with a read token: %s %q", st, b)
	}
	if st, b := curl(t, with("-X", "PUT", "--data-binary", "v2", "-H", "Authorization: Bearer R", base+"/v1/kv/k")...); st != "403" || !strings.Contains(b, `"forbidden"`) {
		t.Fatalf("curl PUT with a read token: %s %s, want 403 forbidden", st, b)
	}
	if st, b := curl(t, with("-X", "PUT", "--data-binary", "v2", "-H", "Authorization: Bearer TW", base+"/v1/kv/k")...); st != "403" || !strings.Contains(b, `"forbidden"`) {
		t.Fatalf("curl PUT to group default with a token of group tenant: %s %s, want 403 forbidden", st, b)
	}
	if st, b := curl(t, with(base+"/v1/kv/k")...); st != "401" || !strings.Contains(b, `"unauthorized"`) {
		t.Fatalf("curl without a token: %s %s, want 401", st, b)
	}
	if st, _ := curl(t, with(base+"/healthz")...); st != "200" {
		t.Fatalf("curl /healthz: %s, want 200 without a token", st)
	}
	// DNS rebinding and a cross-site text/plain POST, over TLS too.
	if st, b := curl(t, with("-H", "Host: evil.example", "-H", "Authorization: Bearer R", base+"/v1/kv/k")...); st != "403" || strings.Contains(b, "v1") {
		t.Fatalf("curl with Host: evil.example: %s %s, want 403", st, b)
	}
	if st, _ := curl(t, with("-H", "Host: dister.test", "-H", "Authorization: Bearer R", base+"/v1/kv/k")...); st != "200" {
		t.Fatalf("curl with Host: dister.test (a name of the certificate): %s, want 200", st)
	}
	if st, b := curl(t, with("-X", "POST", "-H", "Content-Type: text/plain", "-H", "Origin: http://evil.example",
		"-H", "Authorization: Bearer W", "--data-binary", `{"k":"pwned"}`, base+"/kv")...); st != "403" {
		t.Fatalf("cross-origin text/plain POST: %s %s, want 403", st, b)
	}
	// No client certificate, no CA, or plain HTTP: no answer with data.
	if st, _ := curl(t, "--cacert", p.ca, "-H", "Authorization: Bearer R", base+"/v1/kv/k"); st != "000" {
		t.Fatalf("curl without a client certificate: %s, want the handshake refused", st)
	}
	if st, _ := curl(t, "--cert", p.clientCert, "--key", p.clientKey, "-H", "Authorization: Bearer R", base+"/v1/kv/k"); st != "000" {
		t.Fatalf("curl without the CA: %s, want the certificate refused", st)
	}
	if st, b := curl(t, "-H", "Authorization: Bearer R", "http://"+d.httpAddr+"/v1/kv/k"); st == "200" || strings.Contains(b, "v1") {
		t.Fatalf("plain HTTP: %s %s", st, b)
	}

	// The CLI, with flags and with the environment.
	cli(t, d, "", nil, append(tlsArgs, "kv", "put", "k", "v3", "--token", "W")...).ok(t, "CLI put over TLS")
	env := []string{"DISTER_CACERT=" + p.ca, "DISTER_CERT=" + p.clientCert, "DISTER_KEY=" + p.clientKey, "DISTER_TOKEN=R"}
	want(t, "CLI get over TLS", cli(t, d, "", env, "kv", "get", "k").ok(t, "CLI get over TLS"), "v3")
	line := cli(t, d, "", env, "kv", "put", "k", "v4").fails(t, "CLI put with a read token", 1)
	if !strings.Contains(line, "forbidden") {
		t.Errorf("CLI put with a read token: %q, want forbidden", line)
	}
	cli(t, d, "", []string{"DISTER_TOKEN=R"}, append([]string{"--cacert", p.ca}, "kv", "get", "k")...).fails(t, "CLI without a client certificate", 1)

	// A renewed certificate is served without a restart: the files are
	// replaced (each by a rename), and new connections get the new one.
	newCert, newKey := p.caCA.IssueFor(t, t.TempDir(), "server2", restHosts, time.Time{})
	if err := os.Rename(newCert, p.serverCert); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(newKey, p.serverKey); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		conn, err := tls.Dial("tcp", d.httpAddr, &tls.Config{RootCAs: p.pool, Certificates: []tls.Certificate{p.client}})
		if err != nil {
			t.Fatalf("handshake after the renewal: %v", err)
		}
		cn := conn.ConnectionState().PeerCertificates[0].Subject.CommonName
		conn.Close()
		if cn == "server2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still served %q after the files were replaced", cn)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st, b := curl(t, with("-H", "Authorization: Bearer R", base+"/v1/kv/k?raw")...); st != "200" || b != "v3" {
		t.Fatalf("curl after the renewal: %s %q", st, b)
	}

	// Hot reload: a new token works without a restart; a broken file
	// leaves the tokens in force.
	if err := os.WriteFile(tokens, []byte("read R\nwrite W2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(20 * time.Second)
	for {
		st, _ := curl(t, with("-X", "PUT", "--data-binary", "v5", "-H", "Authorization: Bearer W2", base+"/v1/kv/k")...)
		if st == "200" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("new token of the rewritten file: %s", st)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if st, _ := curl(t, with("-X", "PUT", "--data-binary", "v6", "-H", "Authorization: Bearer W", base+"/v1/kv/k")...); st != "401" {
		t.Fatalf("token removed from the file: %s, want 401", st)
	}
	if err := os.WriteFile(tokens, []byte("read R\nsuperuser X\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(20 * time.Second)
	for _, stderr := d.logs(); !strings.Contains(stderr, "token file refused"); _, stderr = d.logs() {
		curl(t, with("-H", "Authorization: Bearer R", base+"/v1/kv/k")...) // a lookup rereads the file
		if time.Now().After(deadline) {
			t.Fatal("a broken token file was not reported")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if st, _ := curl(t, with("-X", "PUT", "--data-binary", "v7", "-H", "Authorization: Bearer W2", base+"/v1/kv/k")...); st != "200" {
		t.Fatalf("after a broken file: %s, want the old tokens in force", st)
	}
	_, stderr := d.logs()
	for _, secret := range []string{"W2", "superuser X"} {
		if strings.Contains(stderr, " "+secret) || strings.Contains(stderr, "="+secret) {
			t.Errorf("the log shows a token %q:\n%s", secret, stderr)
		}
	}

	// A bad token file at start is a usage error (exit 2), before the data
	// dir is made.
	bad := filepath.Join(p.dir, "bad-tokens")
	if err := os.WriteFile(bad, []byte("owner T0KEN\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := newDaemon(t, "badtokens", "--token-file", bad)
	b.start()
	if code := b.waitExit(30 * time.Second); code != 2 {
		t.Fatalf("bad token file: exit %d, want 2", code)
	}
	if _, stderr := b.logs(); !strings.Contains(stderr, "line 1") || strings.Contains(stderr, "T0KEN") {
		t.Errorf("bad token file message: %q", stderr)
	}
	if _, err := os.Stat(b.flag("data-dir")); !os.IsNotExist(err) {
		t.Errorf("the refused start created its data dir (%v)", err)
	}
}

// TestClientRoleDaemonPeerToken: a server with a token set checks the peer
// calls of a client-role daemon against it: with --peer-token of a write
// token it writes, with none it is refused (REST 403 forbidden on the
// client daemon), and an admin operation needs an admin token.
func TestClientRoleDaemonPeerToken(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("admin srv\nwrite cw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newDaemon(t, "server", "--token-file", tokens, "--peer-token", "srv")
	s.token = "srv"
	s.start()
	s.waitReady()

	client := func(name string, extra ...string) *daemon {
		c := newDaemon(t, name)
		c.args = append([]string{"--role", "client", "--server", s.flag("peer-addr"),
			"--http-addr", c.httpAddr, "--log-level", "warn"}, extra...)
		c.start()
		return c
	}
	w := client("client-cw", "--peer-token", "cw")
	w.waitReady()
	if code, body, err := w.do("PUT", "/v1/kv/k", []byte("v")); err != nil || code != 200 {
		t.Fatalf("PUT through a client daemon with a write token: %d %s %v", code, body, err)
	}
	if code, body, err := w.do("GET", "/v1/members", nil); err != nil || code != 403 || !strings.Contains(string(body), `"forbidden"`) {
		t.Fatalf("GET /v1/members through a client daemon with a write token: %d %s %v, want 403 forbidden", code, body, err)
	}
	n := client("client-none")
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body, err := n.do("PUT", "/v1/kv/k", []byte("x"))
		if err == nil && code == 403 && strings.Contains(string(body), `"forbidden"`) {
			break
		}
		if time.Now().After(deadline) || code == 200 {
			t.Fatalf("PUT through a client daemon without a token: %d %s %v, want 403 forbidden", code, body, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, body, _ := s.do("GET", "/v1/kv/k?raw", nil); code != 200 || string(body) != "v" {
		t.Fatalf("value after the refused write: %d %q", code, body)
	}
}

// A server presents --peer-token, else --token; one of several servers
// with a token set and nothing to present is refused at start.
func TestPeerSecurityConfig(t *testing.T) {
	tokens, err := dister.LoadTokens("", map[string]dister.Grant{"a": {Access: dister.AccessAdmin}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		cfg     serverConfig
		token   string
		checks  bool
		refused bool
	}{
		{cfg: serverConfig{Token: "a"}, token: "a", checks: true},
		{cfg: serverConfig{Token: "a", restSecurity: restSecurity{PeerToken: "p"}}, token: "p", checks: true},
		{cfg: serverConfig{restSecurity: restSecurity{TokenFile: "f"}}, checks: true},
		{cfg: serverConfig{Join: stringList{"x:1"}, restSecurity: restSecurity{TokenFile: "f"}}, refused: true},
		{cfg: serverConfig{InitialMembers: stringList{"1=a:1,a:2", "2=b:1,b:2"}, restSecurity: restSecurity{TokenFile: "f"}}, refused: true},
		{cfg: serverConfig{Join: stringList{"x:1"}, restSecurity: restSecurity{TokenFile: "f", PeerToken: "p"}}, token: "p", checks: true},
		{cfg: serverConfig{Role: "client", Token: "a"}, token: "a"},
	} {
		var o dister.Options
		err := c.cfg.peerSecurity(&o, tokens)
		if (err != nil) != c.refused || (!c.refused && (o.Token != c.token || (o.PeerTokens != nil) != c.checks)) {
			t.Errorf("%+v: err %v, token %q, checks %v", c.cfg, err, o.Token, o.PeerTokens != nil)
		}
	}
}
