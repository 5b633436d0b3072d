package main

import (
	"fmt"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCLILeases: grant, put with --lease, get, keepalive (once and
// --forever), revoke.
func TestCLILeases(t *testing.T) {
	d := newDaemon(t, "leases")
	d.start()
	d.waitReady()
	run := func(args ...string) cliResult { return cli(t, d, "", nil, args...) }

	out := run("lease", "grant", "1m").ok(t, "grant")
	m := regexp.MustCompile(`^lease (\d+) granted \(TTL 1m0s\)\n$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("grant: %q", out)
	}
	id := m[1]
	out = run("kv", "put", "l/a", "1", "--lease", id).ok(t, "put --lease")
	want(t, "put --lease", out, fmt.Sprintf("OK revision %d (lease %s)\n", revisionOf(t, d, "l/a"), id))
	run("kv", "put", "l/b", "2", "--lease", id).ok(t, "put --lease")
	want(t, "get", run("lease", "get", id).ok(t, "get"), fmt.Sprintf("lease %s (TTL 1m0s)\nl/a\nl/b\n", id))
	wantMatch(t, "get -o json", run("lease", "get", id, "-o", "json").ok(t, "get json"),
		`"id": `+id+`,\s+"ttl": "1m0s",\s+"keys": \[\s+"l/a",\s+"l/b"\s+\]`)
	want(t, "keepalive", run("lease", "keepalive", id).ok(t, "keepalive"), fmt.Sprintf("lease %s kept alive (TTL 1m0s)\n", id))
	want(t, "revoke", run("lease", "revoke", id).ok(t, "revoke"), fmt.Sprintf("lease %s revoked\n", id))
	want(t, "key gone", run("kv", "get", "l/a").fails(t, "get revoked key", 1), `dister: kv get "l/a": not found`)
	wantMatch(t, "get revoked", run("lease", "get", id).fails(t, "get revoked", 1), `^dister: lease get `+id+`: .*\(lease_not_found\)$`)
	wantMatch(t, "keepalive revoked", run("lease", "keepalive", id).fails(t, "keepalive revoked", 1), `\(lease_not_found\)$`)
	wantMatch(t, "put on revoked", run("kv", "put", "l/a", "1", "--lease", id).fails(t, "put on revoked", 1), `\(lease_not_found\)$`)

	// --forever keeps a 1s lease, and its key, alive until interrupted.
	out = run("kv", "put", "l/ttl", "v", "--ttl", "1s").ok(t, "put --ttl")
	m = regexp.MustCompile(`\(lease (\d+)\)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("put --ttl: %q", out)
	}
	ka := startCLI(t, d, "keepalive", "lease", "keepalive", m[1], "--forever")
	time.Sleep(1500 * time.Millisecond) // past the TTL
	want(t, "kept key", run("kv", "get", "l/ttl").ok(t, "get kept key"), "v")
	ka.signal(syscall.SIGINT)
	if code := ka.waitExit(10 * time.Second); code != 0 || ka.ownStderr() != "" {
		t.Fatalf("keepalive --forever after SIGINT: exit %d, stderr %q", code, ka.ownStderr())
	}
	if lines := ka.waitLines(1); len(lines) < 3 || lines[0] != "lease "+m[1]+" kept alive (TTL 1s)" {
		t.Fatalf("keepalive --forever printed %q", lines)
	}

	for _, args := range [][]string{
		{"lease", "grant"}, {"lease", "grant", "soon"}, {"lease", "grant", "-1s"}, {"lease", "get", "x"},
		{"lease", "revoke", "0"}, {"lease", "keepalive", "-3"}, {"kv", "put", "k", "v", "--ttl", "1s", "--lease", "1"},
		{"kv", "put", "k", "v", "--ttl", "0s"}, {"kv", "put", "k", "v", "--lease", "0"}, {"lease"},
	} {
		run(args...).fails(t, strings.Join(args, " "), 2)
	}
	wantMatch(t, "grant too short", run("lease", "grant", "100ms").fails(t, "grant 100ms", 1), `\(invalid\)$`)
}

// revisionOf is the mod revision of key.
func revisionOf(t *testing.T, d *daemon, key string) int64 {
	t.Helper()
	var e entry
	d.mustJSONCall("GET", "/v1/kv/"+key, nil, &e)
	return e.ModRevision
}
