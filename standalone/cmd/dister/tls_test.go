package main

import (
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDaemonTLS: "dister certs" writes what a server and a client-role
// daemon need for mutual TLS, they work together with it, and a server
// with a non-loopback Raft address and no TLS refuses to start (exit 2).
func TestDaemonTLS(t *testing.T) {
	dir := t.TempDir()
	out := cli(t, nil, "", nil, "certs", "--dir", dir, "127.0.0.1", "--client", "app").ok(t, "certs")
	for _, f := range []string{"ca.pem", "ca-key.pem", "127.0.0.1.pem", "127.0.0.1-key.pem", "client-ca.pem", "client-ca-key.pem", "app.pem", "app-key.pem"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatalf("certs did not write %s: %v (stdout %q)", f, err, out)
		}
		if strings.HasSuffix(f, "-key.pem") && fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	ca, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	// A second run reuses the CAs.
	cli(t, nil, "", nil, "certs", "--dir", dir, "localhost", "--client", "app2").ok(t, "certs again")
	if again, _ := os.ReadFile(filepath.Join(dir, "ca.pem")); string(again) != string(ca) {
		t.Error("a second certs run replaced the CA")
	}
	cli(t, nil, "", nil, "certs", "--dir", dir).fails(t, "certs without a host", 2)

	_, port, _ := net.SplitHostPort(freeAddr(t))
	open := newDaemon(t, "plaintext", "--raft-addr", "0.0.0.0:"+port)
	open.start()
	if code := open.waitExit(30 * time.Second); code != 2 {
		t.Fatalf("a non-loopback --raft-addr without TLS exited with %d, want 2", code)
	}
	if _, stderr := open.logs(); !strings.Contains(stderr, "0.0.0.0:"+port) || !strings.Contains(stderr, "--tls-ca") || !strings.Contains(stderr, "--insecure-transport") {
		t.Errorf("refusal message: %q", stderr)
	}
	if _, err := os.Stat(open.flag("data-dir")); !os.IsNotExist(err) {
		t.Errorf("the refused start created its data dir (%v)", err)
	}

	f := func(name string) string { return filepath.Join(dir, name) }
	srv := newDaemon(t, "tls-server", "--tls-ca", f("ca.pem"), "--tls-cert", f("127.0.0.1.pem"),
		"--tls-key", f("127.0.0.1-key.pem"), "--client-ca", f("client-ca.pem"))
	srv.start()
	srv.waitReady()

	client := newDaemon(t, "tls-client")
	client.args = []string{"--role", "client", "--server", srv.flag("peer-addr"), "--http-addr", client.httpAddr,
		"--log-level", "warn", "--tls-ca", f("ca.pem"), "--tls-cert", f("app.pem"), "--tls-key", f("app-key.pem")}
	client.start()
	client.waitReady()
	if code, body, err := client.do("PUT", "/v1/kv/greeting", []byte("hello")); err != nil || code != http.StatusOK {
		t.Fatalf("PUT through the client daemon over mTLS: %d %s %v", code, body, err)
	}
	want(t, "get on the server", cli(t, srv, "", nil, "kv", "get", "greeting").ok(t, "kv get"), "hello")

	// A client daemon without a certificate gets nowhere.
	anon := newDaemon(t, "anon-client")
	anon.args = []string{"--role", "client", "--server", srv.flag("peer-addr"), "--http-addr", anon.httpAddr,
		"--log-level", "warn", "--tls-ca", f("ca.pem")}
	anon.start()
	// The server refuses its connections, and says so once.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, stderr := srv.logs(); strings.Contains(stderr, "refused a peer API connection") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the server never logged the refused client daemon")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, body, err := anon.do("PUT", "/v1/kv/greeting?timeout=2s", []byte("anon")); err == nil && code == http.StatusOK {
		t.Fatalf("a client daemon without a certificate wrote: %d %s", code, body)
	}
	want(t, "value after the refused write", cli(t, srv, "", nil, "kv", "get", "greeting").ok(t, "kv get"), "hello")
	anon.stop()
	if _, stderr := srv.logs(); strings.Count(stderr, "refused a peer API connection") != 1 {
		t.Errorf("the server logged the refused client more than once:\n%s", stderr)
	}
	client.stop()
	srv.stop()
}
