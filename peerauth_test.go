package dister_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// A server with PeerTokens checks every peer call: client-role nodes get
// what their Options.Token's role and groups allow and ErrForbidden
// beyond it; a server joining without a token is refused, with one it
// joins.
func TestPeerTokens(t *testing.T) {
	tokens := tokenFile(t, "admin srv\nwrite cw\nread cr\nwrite tw t1\n")
	c := testcluster.New(t, 1, func(o *dister.Options) { o.PeerTokens, o.Token = tokens, "srv" })
	c.WaitReady()
	peerAddr := c.Options(1).PeerAddr

	client := func(token string) *dister.Node {
		t.Helper()
		n, err := dister.Open(context.Background(), dister.Options{Role: dister.RoleClient, Servers: []string{peerAddr},
			Token: token, Logger: testcluster.Logger()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = n.Close() })
		return n
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 5*time.Second) }
	forbidden := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, dister.ErrForbidden) {
			t.Fatalf("%s: %v, want ErrForbidden", what, err)
		}
	}

	w := client("cw")
	if err := w.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := w.KV().Put(ctx, "k", []byte("v")); err != nil {
		t.Fatalf("write token, put: %v", err)
	}
	if e, err := w.KV().Get(ctx, "k", dister.Linearizable()); err != nil || string(e.Value) != "v" {
		t.Fatalf("write token, get: %v %v", e, err)
	}
	if _, err := w.Leases().Grant(ctx, 10*time.Second); err != nil {
		t.Fatalf("write token, lease: %v", err)
	}
	_, err := w.Members(ctx)
	forbidden("write token, members", err)
	forbidden("write token, create group", w.CreateGroup(ctx, "t1"))

	r := client("cr")
	if e, err := r.KV().Get(ctx, "k", dister.Linearizable()); err != nil || string(e.Value) != "v" {
		t.Fatalf("read token, get: %v %v", e, err)
	}
	_, err = r.KV().Put(ctx, "k", []byte("x"))
	forbidden("read token, put", err)

	tw := client("tw")
	_, err = tw.KV().Put(ctx, "k", []byte("x"))
	forbidden("token of group t1, put in default", err)

	for _, tok := range []string{"", "wrong"} {
		n := client(tok)
		sctx, scancel := short()
		_, err := n.KV().Get(sctx, "k", dister.Linearizable())
		scancel()
		forbidden("token "+tok+", get", err)
	}
	// Nothing the refused calls sent was written.
	if e, err := w.KV().Get(ctx, "k", dister.Linearizable()); err != nil || string(e.Value) != "v" {
		t.Fatalf("after refused writes: %v %v", e, err)
	}

	// A server joining presents its token too.
	refused := testcluster.FreeAddr(t)
	_, err = dister.Open(ctx, dister.Options{DataDir: t.TempDir(), RaftAddr: refused, PeerAddr: testcluster.FreeAddr(t),
		Join: true, Servers: []string{peerAddr}, Token: "cw", Logger: testcluster.Logger()})
	forbidden("join with a write token", err)

	// With the admin token it joins, and the servers' own calls to each
	// other (liveness) pass: both are seen alive.
	j, err := dister.Open(ctx, dister.Options{DataDir: t.TempDir(), RaftAddr: testcluster.FreeAddr(t), PeerAddr: testcluster.FreeAddr(t),
		Join: true, Servers: []string{peerAddr}, Token: "srv", PeerTokens: tokens, Logger: testcluster.Logger()})
	if err != nil {
		t.Fatalf("join with the admin token: %v", err)
	}
	t.Cleanup(func() { _ = j.Close() })
	for {
		ms, err := j.Members(ctx)
		alive := 0
		for _, m := range ms {
			if m.Alive {
				alive++
			}
		}
		if err == nil && alive == 2 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("members after the join: %+v %v", ms, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPeerGroupsHidesOtherTenantsGroups: a client node whose token is
// limited to some groups lists only those, as GET /v1/groups shows such a
// token only its own: groups isolate tenants, and the names of the other
// tenants' groups are theirs.
func TestPeerGroupsHidesOtherTenantsGroups(t *testing.T) {
	tokens := tokenFile(t, "admin srv\nread tr t1\n")
	c := testcluster.New(t, 1, func(o *dister.Options) { o.PeerTokens, o.Token = tokens, "srv" })
	c.WaitReady()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, g := range []string{"t1", "othertenant"} {
		if err := c.Node(1).CreateGroup(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	n, err := dister.Open(ctx, dister.Options{Role: dister.RoleClient, Servers: []string{c.Options(1).PeerAddr},
		Token: "tr", Logger: testcluster.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	gs, err := n.Groups(ctx)
	if err != nil {
		t.Fatalf("groups with a token of t1: %v", err)
	}
	if len(gs) != 1 || gs[0] != "t1" {
		t.Errorf("a token limited to t1 lists groups %v, want [t1]", gs)
	}
	if _, err := n.Group("t1").KV().Put(ctx, "k", []byte("v")); !errors.Is(err, dister.ErrForbidden) {
		t.Errorf("read token of t1, put: %v, want ErrForbidden", err)
	}
	if _, err := n.Group("t1").KV().Get(ctx, "k", dister.Linearizable()); err != nil && !errors.Is(err, dister.ErrNotFound) {
		t.Errorf("read token of t1, get in t1 after filtering: %v", err)
	}
}

// TestPeerWatchEndsWhenItsTokenIsRevoked: a client node's watch, opened
// with a token since removed from the servers' token file, carries no
// change made after the removal: it ends (with ErrForbidden when it
// tries to resume) instead.
func TestPeerWatchEndsWhenItsTokenIsRevoked(t *testing.T) {
	f := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(f, []byte("admin srv\nread tr\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tokens, err := dister.LoadTokens(f, nil, testcluster.Logger())
	if err != nil {
		t.Fatal(err)
	}
	c := testcluster.New(t, 1, func(o *dister.Options) { o.PeerTokens, o.Token = tokens, "srv" })
	c.WaitReady()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := dister.Open(ctx, dister.Options{Role: dister.RoleClient, Servers: []string{c.Options(1).PeerAddr},
		Token: "tr", Logger: testcluster.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if err := n.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	events := n.KV().Watch(ctx, "k")
	// The watch is running once a put made now reaches it.
	if _, err := c.Node(1).KV().Put(ctx, "k0", []byte("before")); err != nil {
		t.Fatal(err)
	}
	for ev := range events {
		if ev.Err != nil {
			t.Fatalf("watch before the revocation: %v", ev.Err)
		}
		if ev.Type == dister.EventPut {
			break
		}
	}
	if err := os.WriteFile(f, []byte("admin srv\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The file is reread at most once a second: wait until tr is refused.
	for {
		_, err := n.KV().Get(ctx, "k0", dister.Linearizable())
		if errors.Is(err, dister.ErrForbidden) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("tr still reads after its removal: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := c.Node(1).KV().Put(ctx, "k1", []byte("secret")); err != nil {
		t.Fatal(err)
	}
	for ev := range events {
		if ev.Err != nil {
			return // ended
		}
		if ev.Type == dister.EventPut {
			t.Fatalf("the revoked token's watch received %s=%s", ev.Entry.Key, ev.Entry.Value)
		}
	}
}

// A script or custom check runs commands on the servers: through the peer
// API, as over REST, registering one needs an admin token for the whole
// cluster, not a write token nor one limited to a group.
func TestPeerScriptCheckNeedsAdmin(t *testing.T) {
	tokens := tokenFile(t, "admin srv\nwrite cw\nadmin ta default\n")
	c := testcluster.New(t, 1, func(o *dister.Options) { o.PeerTokens, o.Token, o.EnableScriptChecks = tokens, "srv", true })
	ctx := ctxT(t)
	client := func(token string) *dister.Node {
		t.Helper()
		n := tokenClient(t, c, token, nil)
		if err := n.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
		return n
	}
	admin := client("srv")
	if err := admin.SetSettings(ctx, dister.Settings{ScriptChecks: true}); err != nil {
		t.Fatal(err)
	}
	script := dister.Instance{Service: "job", ID: "x", Address: "10.0.0.1:80",
		Check: dister.Check{Type: dister.CheckCustom, Target: "echo 1", Interval: time.Second}}
	for _, tok := range []string{"cw", "ta"} {
		if err := client(tok).Services().Register(ctx, script); !errors.Is(err, dister.ErrForbidden) {
			t.Fatalf("token %s registers a custom check: %v, want ErrForbidden", tok, err)
		}
		if err := client(tok).Services().Replace(ctx, []string{"job"}, []dister.Instance{script}); !errors.Is(err, dister.ErrForbidden) {
			t.Fatalf("token %s replaces with a custom check: %v, want ErrForbidden", tok, err)
		}
	}
	plain := script
	plain.Check = dister.Check{Type: dister.CheckNever}
	if err := client("cw").Services().Register(ctx, plain); err != nil {
		t.Fatalf("write token, instance without a command: %v", err)
	}
	if err := admin.Services().Register(ctx, script); err != nil {
		t.Fatalf("admin token registers a custom check: %v", err)
	}
}

// tokenFile writes lines as a token file and loads it.
func tokenFile(t *testing.T, lines string) *dister.Tokens {
	t.Helper()
	f := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(f, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	tokens, err := dister.LoadTokens(f, nil, testcluster.Logger())
	if err != nil {
		t.Fatal(err)
	}
	return tokens
}

// tokenClient opens a client-role node on every server of c that presents
// token (and tl, when set); it is closed with the test.
func tokenClient(t *testing.T, c *testcluster.Cluster, token string, tl *dister.TLS) *dister.Node {
	t.Helper()
	var seeds []string
	for _, id := range c.IDs() {
		seeds = append(seeds, c.Options(id).PeerAddr)
	}
	n, err := dister.Open(context.Background(), dister.Options{Role: dister.RoleClient, Servers: seeds, TLS: tl,
		Token: token, Logger: testcluster.Logger()})
	if err != nil {
		t.Fatalf("open client node: %v", err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}
