package main

import (
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/dister/dister"
)

// parseServerFlags loads the config of "dister server ARGS" with env.
func parseServerFlags(t *testing.T, env map[string]string, args ...string) (serverConfig, error) {
	t.Helper()
	cmd := newServerCmd(io.Discard, io.Discard, func(k string) string { return env[k] })
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatalf("parse %v: %v", args, err)
	}
	return loadServerConfig(cmd.Flags(), func(k string) string { return env[k] })
}

func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(file, []byte(`
node-id: 3
data-dir: /from/file
raft-addr: 10.0.0.3:4166
initial-member:
  - 1=10.0.0.1:4166,10.0.0.1:4167
  - 3=10.0.0.3:4166,10.0.0.3:4167
join: 10.0.0.9:4167
token: file-token
`), 0o644); err != nil {
		t.Fatal(err)
	}

	cfg, err := parseServerFlags(t, nil)
	if err != nil || !reflect.DeepEqual(cfg, defaultServerConfig()) {
		t.Fatalf("defaults: %+v %v", cfg, err)
	}

	cfg, err = parseServerFlags(t, nil, "--config", file)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NodeID != 3 || cfg.DataDir != "/from/file" || cfg.RaftAddr != "10.0.0.3:4166" || cfg.PeerAddr != "127.0.0.1:4167" ||
		len(cfg.InitialMembers) != 2 || !reflect.DeepEqual([]string(cfg.Join), []string{"10.0.0.9:4167"}) || cfg.Token != "file-token" {
		t.Fatalf("file: %+v", cfg)
	}

	env := map[string]string{
		"DISTER_CONFIG":         file,
		"DISTER_NODE_ID":        "4",
		"DISTER_DATA_DIR":       "/from/env",
		"DISTER_INITIAL_MEMBER": "1=a:1,a:2; 4=b:1,b:2",
		"DISTER_JOIN":           "x:1,y:1",
	}
	cfg, err = parseServerFlags(t, env)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NodeID != 4 || cfg.DataDir != "/from/env" || cfg.Token != "file-token" ||
		!reflect.DeepEqual([]string(cfg.InitialMembers), []string{"1=a:1,a:2", "4=b:1,b:2"}) ||
		!reflect.DeepEqual([]string(cfg.Join), []string{"x:1", "y:1"}) {
		t.Fatalf("env over file: %+v", cfg)
	}

	cfg, err = parseServerFlags(t, env, "--node-id", "5", "--initial-member", "5=c:1,c:2", "--initial-member", "6=d:1,d:2",
		"--join", "z:1", "--token", "flag-token")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NodeID != 5 || cfg.DataDir != "/from/env" || cfg.Token != "flag-token" ||
		!reflect.DeepEqual([]string(cfg.InitialMembers), []string{"5=c:1,c:2", "6=d:1,d:2"}) ||
		!reflect.DeepEqual([]string(cfg.Join), []string{"z:1"}) {
		t.Fatalf("flags over env: %+v", cfg)
	}

	if _, err := parseServerFlags(t, map[string]string{"DISTER_NODE_ID": "one"}); err == nil || !strings.Contains(err.Error(), "DISTER_NODE_ID") {
		t.Errorf("bad DISTER_NODE_ID: %v", err)
	}
	if _, err := parseServerFlags(t, nil, "--config", filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("a missing config file was accepted")
	}
}

func TestOpenOptions(t *testing.T) {
	dir := t.TempDir()
	base := defaultServerConfig()
	base.DataDir = filepath.Join(dir, "fresh")

	o, err := base.openOptions()
	if err != nil || o.NodeID != 1 || o.InitialMembers != nil || o.Join {
		t.Fatalf("first start alone: %+v %v", o, err)
	}

	c := base
	c.InitialMembers = []string{"1=127.0.0.1:5000,127.0.0.1:5001", "2=127.0.0.1:4166,127.0.0.1:4167"}
	o, err = c.openOptions()
	want := map[uint64]dister.Peer{1: {RaftAddr: "127.0.0.1:5000", PeerAddr: "127.0.0.1:5001"}, 2: {RaftAddr: "127.0.0.1:4166", PeerAddr: "127.0.0.1:4167"}}
	if err != nil || o.NodeID != 2 || !reflect.DeepEqual(o.InitialMembers, want) {
		t.Fatalf("id from --initial-member: %+v %v", o, err)
	}
	c.RaftAddr = "127.0.0.1:9"
	if _, err := c.openOptions(); err == nil {
		t.Error("a server missing from --initial-member got an id")
	}

	c = base
	c.Join = []string{"127.0.0.1:4167"}
	if o, err := c.openOptions(); err != nil || o.NodeID != 0 || !o.Join || len(o.Servers) != 1 {
		t.Fatalf("join: %+v %v", o, err)
	}
	c.InitialMembers = []string{"1=127.0.0.1:4166,127.0.0.1:4167"}
	if _, err := c.openOptions(); err == nil {
		t.Error("--join with --initial-member was accepted")
	}

	// A restart: the id is the SDK's to read from the data dir.
	c = base
	if err := os.MkdirAll(c.DataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.DataDir, identityFile), []byte(`{"node_id":2}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if o, err := c.openOptions(); err != nil || o.NodeID != 0 {
		t.Fatalf("restart: %+v %v", o, err)
	}
	// A restart with the first start's flags still: the id comes from the
	// members when they name this server, from the data dir otherwise.
	c.InitialMembers = []string{"2=127.0.0.1:4166,127.0.0.1:4167", "3=127.0.0.1:5000,127.0.0.1:5001"}
	if o, err := c.openOptions(); err != nil || o.NodeID != 2 {
		t.Fatalf("restart with members: %+v %v", o, err)
	}
	c.RaftAddr = "127.0.0.1:9"
	if o, err := c.openOptions(); err != nil || o.NodeID != 0 || o.InitialMembers != nil {
		t.Fatalf("restart with members that miss this server: %+v %v", o, err)
	}

	for _, bad := range []string{"1=a:1", "0=a:1,a:2", "x=a:1,a:2", "1=a:1,a:2,a:3", "=a:1,a:2"} {
		if _, err := parseMembers([]string{bad}); err == nil {
			t.Errorf("member %q accepted", bad)
		}
	}
	if _, err := parseMembers([]string{"1=a:1,a:2", "1=b:1,b:2"}); err == nil {
		t.Error("a duplicate member id was accepted")
	}
}

func TestExposure(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:4168": true, "[::1]:4168": true, "localhost:4168": true, "127.1.2.3:1": true,
		"0.0.0.0:4168": false, ":4168": false, "10.1.2.3:4168": false, "example.com:4168": false, "[::]:4168": false,
	} {
		c := defaultServerConfig()
		c.HTTPAddr = addr
		if err := c.checkExposure(); (err == nil) != ok {
			t.Errorf("%s without token: %v", addr, err)
		}
		c.Token = "t"
		if err := c.checkExposure(); err != nil {
			t.Errorf("%s with token: %v", addr, err)
		}
	}
	c := defaultServerConfig()
	c.HTTPAddr = "nohostport"
	if err := c.checkExposure(); err == nil {
		t.Error("an --http-addr without a port was accepted")
	}
}

func TestLogLevel(t *testing.T) {
	for _, l := range []string{"debug", "info", "warn", "error", "WARN"} {
		c := serverConfig{LogLevel: l}
		if _, err := c.logLevel(); err != nil {
			t.Errorf("%s: %v", l, err)
		}
	}
	if _, err := (serverConfig{LogLevel: "loud"}).logLevel(); err == nil {
		t.Error("log level loud accepted")
	}
}

func TestClientRoleConfig(t *testing.T) {
	cfg, err := parseServerFlags(t, nil, "--role", "client", "--server", "127.0.0.1:1", "--server", "127.0.0.1:2,127.0.0.1:3")
	if err != nil {
		t.Fatal(err)
	}
	o, err := cfg.openOptions()
	if err != nil || o.Role != dister.RoleClient || !reflect.DeepEqual(o.Servers, []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}) ||
		o.DataDir != "" || o.RaftAddr != "" {
		t.Fatalf("options %+v, %v", o, err)
	}
	cfg, err = parseServerFlags(t, map[string]string{"DISTER_ROLE": "client", "DISTER_SERVER": "127.0.0.1:1 127.0.0.1:2"})
	if err != nil || !cfg.client() || len(cfg.Servers) != 2 {
		t.Fatalf("from the environment: %+v, %v", cfg, err)
	}
	for name, args := range map[string][]string{
		"no server":       {"--role", "client"},
		"data dir":        {"--role", "client", "--server", "127.0.0.1:1", "--data-dir", "/x"},
		"raft addr":       {"--role", "client", "--server", "127.0.0.1:1", "--raft-addr", "127.0.0.1:5"},
		"join":            {"--role", "client", "--server", "127.0.0.1:1", "--join", "127.0.0.1:5"},
		"server w/o role": {"--server", "127.0.0.1:1"},
		"bad role":        {"--role", "witness"},
	} {
		if _, err := parseServerFlags(t, nil, args...); err == nil {
			t.Errorf("%s: %v accepted", name, args)
		}
	}
}

// TestCheckSettings: the server-local health-check settings come from
// flags, DISTER_* variables and the config file, and reach Options.
func TestCheckSettings(t *testing.T) {
	cfg, err := parseServerFlags(t, nil, "--enable-script-checks", "--check-target", "10.0.0.0/8",
		"--check-target", "db.internal", "--check-output-body")
	if err != nil {
		t.Fatal(err)
	}
	o, err := cfg.openOptions()
	if err != nil {
		t.Fatal(err)
	}
	if !o.EnableScriptChecks || !o.CheckOutputBody || !reflect.DeepEqual(o.CheckTargets, []string{"10.0.0.0/8", "db.internal"}) {
		t.Fatalf("flags: %+v", o)
	}
	cfg, err = parseServerFlags(t, map[string]string{"DISTER_ENABLE_SCRIPT_CHECKS": "true",
		"DISTER_CHECK_TARGET": "10.1.0.0/16,192.168.0.0/16", "DISTER_CHECK_OUTPUT_BODY": "1"})
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.EnableScriptChecks || !cfg.CheckOutputBody || !reflect.DeepEqual([]string(cfg.CheckTargets), []string{"10.1.0.0/16", "192.168.0.0/16"}) {
		t.Fatalf("env: %+v", cfg)
	}
	if _, err := parseServerFlags(t, map[string]string{"DISTER_ENABLE_SCRIPT_CHECKS": "maybe"}); err == nil {
		t.Fatal("DISTER_ENABLE_SCRIPT_CHECKS=maybe accepted")
	}
	cfg, err = parseServerFlags(t, nil)
	if err != nil || cfg.EnableScriptChecks || cfg.CheckOutputBody || len(cfg.CheckTargets) != 0 {
		t.Fatalf("defaults: %+v %v", cfg, err)
	}
}
