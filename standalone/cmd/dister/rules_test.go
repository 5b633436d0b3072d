package main

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestNonLoopbackNeedsToken: the REST API is not opened to the network
// without a token; with one, every request needs it.
func TestNonLoopbackNeedsToken(t *testing.T) {
	_, port, _ := net.SplitHostPort(freeAddr(t))
	public := "0.0.0.0:" + port

	refused := newDaemon(t, "open", "--http-addr", public)
	refused.start()
	if code := refused.waitExit(30 * time.Second); code == 0 {
		t.Fatal("a non-loopback --http-addr without --token started")
	}
	out, stderr := refused.logs()
	if !strings.Contains(stderr, "without a token") || !strings.Contains(stderr, public) {
		t.Fatalf("refusal message: stdout %q stderr %q", out, stderr)
	}
	if _, err := os.Stat(refused.flag("data-dir")); !os.IsNotExist(err) {
		t.Errorf("the refused start created its data dir (%v)", err)
	}
	// The same goes for an address given by the environment.
	refused.env = []string{"DISTER_HTTP_ADDR=" + public}
	refused.startArgs("server", "--data-dir", refused.flag("data-dir"))
	if code := refused.waitExit(30 * time.Second); code == 0 {
		t.Fatal("DISTER_HTTP_ADDR=0.0.0.0:... without a token started")
	}

	d := newDaemon(t, "token", "--http-addr", public, "--token", "s3cret")
	d.httpAddr = "127.0.0.1:" + port
	d.token = "s3cret"
	d.start()
	d.waitReady()

	d.token = ""
	for _, path := range []string{"/v1/status", "/v1/kv/x", "/kv", "/node"} {
		code, body, err := d.do("GET", path, nil)
		if err != nil || code != http.StatusUnauthorized {
			t.Fatalf("GET %s without the token: %d %s %v", path, code, body, err)
		}
		var e struct {
			Error apiError `json:"error"`
		}
		if path == "/v1/status" && (json.Unmarshal(body, &e) != nil || e.Error.Code != "unauthorized") {
			t.Errorf("401 body: %s", body)
		}
	}
	d.token = "wrong"
	if code, _, _ := d.do("PUT", "/v1/kv/x", []byte("v")); code != http.StatusUnauthorized {
		t.Fatalf("PUT with a wrong token: %d", code)
	}
	d.token = "s3cret"

	line := cli(t, d, "", nil, "kv", "put", "k", "v").fails(t, "CLI without the token", 1)
	want(t, "401 line", line, `dister: kv put "k": unauthorized: the daemon wants a valid --token (or DISTER_TOKEN)`)
	cli(t, d, "", nil, "kv", "put", "k", "v", "--token", "s3cret").ok(t, "CLI with --token")
	want(t, "get with env token", cli(t, d, "", []string{"DISTER_TOKEN=s3cret"}, "kv", "get", "k").ok(t, "CLI with DISTER_TOKEN"), "v")
	want(t, "legacy with token", cli(t, d, "", nil, "getkv", "k", "--token", "s3cret").ok(t, "getkv with --token"), "v\n")
	cli(t, d, "", nil, "kvs").fails(t, "kvs without the token", 1)
	d.stop()
}

// TestConfigFileAndEnv: settings come from the YAML file, DISTER_*
// variables and flags, the stronger overriding the weaker.
func TestConfigFileAndEnv(t *testing.T) {
	d := newDaemon(t, "config")
	fileHTTP := freeAddr(t)
	cfgPath := filepath.Join(d.dir, "dister.yaml")
	yaml := "# the same names as the flags\n" +
		"node-id: 7\n" +
		"data-dir: " + filepath.Join(d.dir, "data7") + "\n" +
		"raft-addr: " + d.flag("raft-addr") + "\n" +
		"peer-addr: " + d.flag("peer-addr") + "\n" +
		"http-addr: " + fileHTTP + "\n" +
		"log-level: warn\n"
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}

	// The file alone, except --http-addr, which the flag overrides.
	d.startArgs("server", "--config", cfgPath, "--http-addr", d.httpAddr)
	d.waitReady()
	if st := d.status(); st.NodeID != 7 {
		t.Fatalf("node id %d, want 7 from the file", st.NodeID)
	}
	if c, err := net.DialTimeout("tcp", fileHTTP, time.Second); err == nil {
		c.Close()
		t.Fatalf("something listens on the file's http-addr %s, which the flag overrode", fileHTTP)
	}
	d.stop()

	// File < env < flag: the file by DISTER_CONFIG, the data dir and node
	// id by env, and the node id again by flag.
	d.env = []string{"DISTER_CONFIG=" + cfgPath, "DISTER_NODE_ID=8", "DISTER_DATA_DIR=" + filepath.Join(d.dir, "data9")}
	d.httpAddr = fileHTTP
	d.startArgs("server", "--node-id", "9")
	d.waitReady()
	if st := d.status(); st.NodeID != 9 {
		t.Fatalf("node id %d, want 9 from the flag", st.NodeID)
	}
	d.stop()
	if _, err := os.Stat(filepath.Join(d.dir, "data9")); err != nil {
		t.Fatalf("data dir from DISTER_DATA_DIR: %v", err)
	}

	// A misspelt key is an error, not ignored.
	bad := filepath.Join(d.dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("node-idd: 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.env = nil
	line := cli(t, nil, "", nil, "server", "--config", bad).fails(t, "unknown config key", 2)
	if !strings.Contains(line, "node-idd") {
		t.Errorf("unknown key message: %s", line)
	}
	line = cli(t, nil, "", nil, "server", "--initial-member", "1=127.0.0.1:1").fails(t, "bad --initial-member", 2)
	if !strings.Contains(line, "ID=RAFTADDR,PEERADDR") {
		t.Errorf("bad member message: %s", line)
	}
}

// TestNoArguments: "dister" alone is "dister server" with every default,
// says where it listens, and keeps its data in ./dister-data. The ports
// come from the environment so that the test does not need 4166-4168.
func TestNoArguments(t *testing.T) {
	d := newDaemon(t, "bare")
	d.env = []string{"DISTER_RAFT_ADDR=" + d.flag("raft-addr"), "DISTER_PEER_ADDR=" + d.flag("peer-addr"), "DISTER_HTTP_ADDR=" + d.httpAddr}
	d.startArgs()
	d.waitReady()
	stdout, _ := d.logs()
	dataDir := filepath.Join(d.dir, "dister-data")
	wantLine := "node 1 serving HTTP on http://" + d.httpAddr + " (Raft " + d.flag("raft-addr") + ", peer " + d.flag("peer-addr") + "), data in " + dataDir + "\n"
	if strings.Count(stdout, "\n") != 1 || !strings.HasSuffix(stdout, wantLine) {
		t.Fatalf("banner %q, want a line ending in %q", stdout, wantLine)
	}
	cli(t, d, "", nil, "kv", "put", "k", "v").ok(t, "put")
	// One registry serves the node's series and the process's.
	code, body, err := d.do("GET", "/metrics", nil)
	if err != nil || code != http.StatusOK {
		t.Fatalf("/metrics: %d %v", code, err)
	}
	for _, series := range []string{"dister_group_revision", "dister_proposal_duration_seconds", "go_goroutines", "process_open_fds"} {
		if !strings.Contains(string(body), series) {
			t.Errorf("/metrics lacks %s", series)
		}
	}
	d.stop()
	// A restart from the data dir needs nothing either.
	d.startArgs()
	d.waitReady()
	want(t, "after restart", cli(t, d, "", nil, "kv", "get", "k").ok(t, "get"), "v")
	d.stop()
}
