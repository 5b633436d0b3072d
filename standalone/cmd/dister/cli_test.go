package main

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// TestCLI runs every client command and every v1.5 terminal command against
// one running daemon, checking stdout, stderr and exit codes.
func TestCLI(t *testing.T) {
	d := newDaemon(t, "cli")
	d.start()
	d.waitReady()
	run := func(args ...string) cliResult { return cli(t, d, "", nil, args...) }
	t.Run("legacy", func(t *testing.T) {
		want(t, "kvs empty", run("kvs").ok(t, "kvs"), "it's empty\n")
		want(t, "addkv", run("addkv", "greeting", "hello world").ok(t, "addkv"), "ok\n")
		long := strings.Repeat("é", 150)
		want(t, "addkv long", run("addkv", "long", long).ok(t, "addkv long"), "ok\n")
		want(t, "getkv", run("getkv", "greeting").ok(t, "getkv"), "hello world\n")
		want(t, "kvs", run("kvs").ok(t, "kvs"),
			"K        : V\ngreeting : hello world\nlong     : "+strings.Repeat("é", 100)+"\n")
		want(t, "delkv", run("delkv", "greeting,,long").ok(t, "delkv"), "ok\n")
		want(t, "kvs after delkv", run("kvs").ok(t, "kvs"), "it's empty\n")
		want(t, "getkv missing", run("getkv", "greeting").fails(t, "getkv missing", 1), `dister: getkv "greeting": data not found`)

		header := fmt.Sprintf("%12s %25s %25s %15s %12s %12s %10s\n", "Id", "Name", "Group", "Ip", "Type", "Role", "Status")
		out := run("nodes").ok(t, "nodes")
		if !strings.HasPrefix(out, header) || strings.Count(out, "\n") != 2 {
			t.Fatalf("nodes:\n%s", out)
		}
		wantMatch(t, "nodes row", out, `(?m)^ +1 .* server +leader +alive$`)

		// A server that never starts: it is listed, dead, and removed again.
		ghost := freeAddr(t)
		want(t, "addnode", run("addnode", ghost).ok(t, "addnode"), "ok\n")
		out = run("nodes").ok(t, "nodes")
		if strings.Count(out, "\n") != 3 || !strings.Contains(out, ghost) {
			t.Fatalf("nodes after addnode:\n%s", out)
		}
		wantMatch(t, "ghost row", out, `(?m)^ +2 .* server +follower +dead$`)
		want(t, "delnode", run("delnode", ghost).ok(t, "delnode"), "ok\n")
		if out := run("nodes").ok(t, "nodes"); strings.Contains(out, ghost) {
			t.Fatalf("nodes after delnode:\n%s", out)
		}
		run("addkv", "onlykey").fails(t, "addkv without value", 2)
	})

	t.Run("kv", func(t *testing.T) {
		wantMatch(t, "put", run("kv", "put", "app/name", "dister").ok(t, "put"), `^OK revision \d+\n$`)
		want(t, "get", run("kv", "get", "app/name").ok(t, "get"), "dister")
		var e entry
		if err := json.Unmarshal([]byte(run("kv", "get", "app/name", "-o", "json").ok(t, "get json")), &e); err != nil ||
			e.Key != "app/name" || e.Value == nil || *e.Value != "dister" || e.Version != 1 || e.ModRevision == 0 {
			t.Fatalf("get -o json: %+v %v", e, err)
		}
		cli(t, d, "line one\nline two\n", nil, "kv", "put", "app/multi", "-").ok(t, "put from stdin")
		want(t, "get stdin value", run("kv", "get", "app/multi").ok(t, "get"), "line one\nline two\n")
		// Keys travel escaped: slashes, spaces and a percent sign.
		odd := "app/dir//odd key%2F"
		run("kv", "put", odd, "x").ok(t, "put odd key")
		want(t, "get odd key", run("kv", "get", odd).ok(t, "get odd"), "x")

		run("kv", "put", "app/new", "1", "--cas", "0").ok(t, "create-only put")
		line := run("kv", "put", "app/new", "2", "--cas", "0").fails(t, "second create-only put", 1)
		wantMatch(t, "cas conflict", line, `^dister: kv put "app/new": .*\(conflict\)$`)
		// Errors name the flags, not the REST parameters they became.
		want(t, "bad --consistency", run("kv", "get", "app/new", "--consistency", "bogus").fails(t, "bad --consistency", 1),
			`dister: kv get "app/new": --consistency "bogus": want linearizable, session or stale (invalid)`)
		want(t, "missing --lease", run("kv", "put", "app/new", "3", "--lease", "99").fails(t, "missing --lease", 1),
			`dister: kv put "app/new": put "app/new": lease 99 (lease_not_found)`)
		want(t, "bad lease id", run("lease", "revoke", "x").fails(t, "bad lease id", 2),
			`dister: lease revoke "x": want a lease id > 0`)

		want(t, "ls", run("kv", "ls", "app/").ok(t, "ls"), lsTable(t, d, "app/"))
		out := run("kv", "ls", "app/", "--limit", "2").ok(t, "ls --limit")
		if strings.Count(out, "\n") != 3 || !strings.Contains(out, "app/dir//odd key%2F") {
			t.Fatalf("ls --limit 2:\n%s", out)
		}
		var page listAnswer
		if err := json.Unmarshal([]byte(run("kv", "ls", "app/", "--limit", "2", "-o", "json").ok(t, "ls json")), &page); err != nil ||
			len(page.Entries) != 2 || !page.More || page.Revision == 0 {
			t.Fatalf("ls -o json: %+v %v", page, err)
		}

		wantMatch(t, "del", run("kv", "del", "app/new").ok(t, "del"), `^deleted 1 \(revision \d+\)\n$`)
		wantMatch(t, "del", run("kv", "del", "app/name").ok(t, "del"), `^deleted 1 \(revision \d+\)\n$`)
		wantMatch(t, "del missing", run("kv", "del", "app/name").ok(t, "del missing"), `^deleted 0 \(revision \d+\)\n$`)
		wantMatch(t, "del prefix", run("kv", "del", "app/", "--prefix").ok(t, "del prefix"), `^deleted 2 \(revision \d+\)\n$`)
		want(t, "get deleted", run("kv", "get", "app/name").fails(t, "get deleted", 1), `dister: kv get "app/name": not found`)
		want(t, "ls empty", run("kv", "ls", "app/").ok(t, "ls empty"), "KEY  VALUE  MOD_REV  VERSION\n")
	})

	t.Run("group", func(t *testing.T) {
		want(t, "create", run("group", "create", "billing").ok(t, "create"), "group \"billing\" created\n")
		want(t, "ls", run("group", "ls").ok(t, "ls"), "billing\ndefault\n")
		run("kv", "put", "--group", "billing", "rate", "7").ok(t, "put in group")
		want(t, "isolation", run("kv", "get", "rate").fails(t, "get in default", 1), `dister: kv get "rate": not found`)
		want(t, "get in group", run("kv", "get", "rate", "--group", "billing").ok(t, "get in group"), "7")
		wantMatch(t, "create twice", run("group", "create", "billing").fails(t, "create twice", 1), `\(conflict\)$`)
		want(t, "rm", run("group", "rm", "billing").ok(t, "rm"), "group \"billing\" removed\n")
		want(t, "gone", run("kv", "get", "rate", "--group", "billing").fails(t, "get in removed group", 1),
			`dister: kv get "rate": group "billing" not found`)
		wantMatch(t, "rm default", run("group", "rm", "default").fails(t, "rm default", 1), `\(invalid\)$`)
	})

	t.Run("member", func(t *testing.T) {
		out := run("member", "ls").ok(t, "ls")
		wantMatch(t, "ls", out, `^ID +RAFT_ADDR +PEER_ADDR +LEADER +ALIVE +VOTER\n1 +127\.0\.0\.1:\d+ +127\.0\.0\.1:\d+ +true +true +true\n$`)
		raft, peer := freeAddr(t), freeAddr(t)
		want(t, "add", run("member", "add", "--id", "9", raft, peer).ok(t, "add"),
			fmt.Sprintf("member 9 added (raft %s, peer %s)\n", raft, peer))
		wantMatch(t, "ls with new", run("member", "ls").ok(t, "ls"), `(?m)^9 +`+regexp.QuoteMeta(raft)+` +`+regexp.QuoteMeta(peer)+` +false +false +false$`)
		want(t, "rm", run("member", "rm", "9").ok(t, "rm"), "member 9 removed\n")
		wantMatch(t, "rm last voter", run("member", "rm", "1").fails(t, "rm last voter", 1), `^dister: member rm 1: .*\(invalid\)$`)
		run("member", "rm", "nine").fails(t, "rm bad id", 2)
		run("member", "add", raft).fails(t, "add without peer", 2)
	})

	t.Run("status", func(t *testing.T) {
		wantMatch(t, "status", run("status").ok(t, "status"),
			`^node 1 \(server\), dister \S+\nGROUP +LEADER +REVISION\ndefault +1 +\d+\n$`)
		var st statusAnswer
		if err := json.Unmarshal([]byte(run("status", "-o", "json").ok(t, "status json")), &st); err != nil || st.NodeID != 1 {
			t.Fatalf("status -o json: %+v %v", st, err)
		}
	})

	t.Run("usage", func(t *testing.T) {
		for _, args := range [][]string{
			{"nosuch"}, {"kv"}, {"kv", "nosuch"}, {"kv", "get"}, {"kv", "get", "a", "b"},
			{"kv", "get", "a", "--nosuch"}, {"kv", "get", "a", "-o", "yaml"}, {"kv", "ls", "--limit", "-1"},
			{"getkv"}, {"delkv", ","},
		} {
			run(args...).fails(t, strings.Join(args, " "), 2)
		}
		if out := run("help").ok(t, "help"); !strings.Contains(out, "kvs") || !strings.Contains(out, "server") {
			t.Errorf("help:\n%s", out)
		}
	})

	t.Run("unreachable", func(t *testing.T) {
		addr := freeAddr(t)
		line := cli(t, nil, "", nil, "status", "--addr", addr).fails(t, "status against nothing", 1)
		wantMatch(t, "unreachable", line, `^dister: status: cannot reach the dister daemon at `+regexp.QuoteMeta(addr))
		cli(t, nil, "", []string{"DISTER_ADDR=" + addr}, "kvs").fails(t, "kvs against nothing", 1)
	})
}

// lsTable is what "kv ls" should print for the daemon's keys under prefix.
func lsTable(t *testing.T, d *daemon, prefix string) string {
	var page listAnswer
	d.mustJSONCall("GET", "/v1/kv?prefix="+prefix, nil, &page)
	var b strings.Builder
	if err := printEntries(&b, page.Entries); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func want(t *testing.T, what, got, want string) {
	t.Helper()
	if got != want {
		t.Errorf("%s: got\n%q\nwant\n%q", what, got, want)
	}
}

func wantMatch(t *testing.T, what, got, pattern string) {
	t.Helper()
	if !regexp.MustCompile(pattern).MatchString(got) {
		t.Errorf("%s: %q does not match %q", what, got, pattern)
	}
}
