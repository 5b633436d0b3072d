package dister_test

import (
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// dbDSN reads a DSN that .ci/databases.sh exports. In CI a missing one is
// a failure, so the DB checks cannot silently go untested.
func dbDSN(t *testing.T, env string) string {
	t.Helper()
	if v := os.Getenv(env); v != "" {
		return v
	}
	msg := env + ` is not set: run eval "$(.ci/databases.sh)" (as root) to start MariaDB and PostgreSQL`
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

const fastCheck = 200 * time.Millisecond

func TestServiceTCPCheck(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	s := c.Node(1).Services()
	if err := s.Register(ctx, dister.Instance{Service: "cache", ID: "1", Address: addr, Priority: 1,
		Check: dister.Check{Type: dister.CheckTCP, Target: addr, Interval: fastCheck}}); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, s, "cache", "1", dister.StatusPassing)
	b := c.Node(3).Balancer()
	waitFor(t, func() bool { _, err := b.Pick(ctx, "cache"); return err == nil })
	ln.Close()
	waitStatus(t, s, "cache", "1", dister.StatusCritical)
	waitFor(t, func() bool { _, err := b.Pick(ctx, "cache"); return errors.Is(err, dister.ErrNoInstance) })
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	waitStatus(t, s, "cache", "1", dister.StatusPassing)
	waitFor(t, func() bool { in, err := b.Pick(ctx, "cache"); return err == nil && in.ID == "1" })
}

// MySQL and PostgreSQL checks against the real servers .ci/run starts: the
// right credentials pass, a wrong password is critical.
func TestServiceDBChecks(t *testing.T) {
	my := dbDSN(t, "DISTER_TEST_MYSQL_DSN")
	pg := dbDSN(t, "DISTER_TEST_PGSQL_DSN")
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	s := c.Node(2).Services()
	wrongMy := strings.Replace(my, ":disterpw@", ":wrong@", 1)
	wrongPg := strings.Replace(pg, ":disterpw@", ":wrong@", 1)
	if wrongMy == my || wrongPg == pg {
		t.Fatalf("cannot make a wrong-password DSN from %q and %q", my, pg)
	}
	for _, in := range []dister.Instance{
		{Service: "mysql", ID: "good", Address: "127.0.0.1:3306", Check: dister.Check{Type: dister.CheckMySQL, Target: my, Interval: fastCheck}},
		{Service: "mysql", ID: "wrong", Address: "127.0.0.1:3306", Check: dister.Check{Type: dister.CheckMySQL, Target: wrongMy, Interval: fastCheck}},
		{Service: "pgsql", ID: "good", Address: "127.0.0.1:5432", Check: dister.Check{Type: dister.CheckPgSQL, Target: pg, Interval: fastCheck}},
		{Service: "pgsql", ID: "wrong", Address: "127.0.0.1:5432", Check: dister.Check{Type: dister.CheckPgSQL, Target: wrongPg, Interval: fastCheck}},
	} {
		if err := s.Register(ctx, in); err != nil {
			t.Fatalf("register %s/%s: %v", in.Service, in.ID, err)
		}
	}
	for _, svc := range []string{"mysql", "pgsql"} {
		waitStatus(t, s, svc, "good", dister.StatusPassing)
		waitFor(t, func() bool {
			insts, err := s.Get(ctx, svc)
			if err != nil {
				return false
			}
			for _, in := range insts {
				if in.ID == "wrong" {
					return in.Status == dister.StatusCritical && !in.LastChecked.IsZero() && in.Output != ""
				}
			}
			return false
		})
	}
	// A critical instance stays critical (and is not rewritten) while the
	// good one stays passing.
	for _, svc := range []string{"mysql", "pgsql"} {
		in, err := c.Node(1).Balancer().Pick(ctx, svc)
		if err != nil || in.ID != "good" {
			t.Fatalf("pick %s = %v, %v; want good", svc, in.ID, err)
		}
	}
}

func TestServiceScriptChecksAreAClusterSetting(t *testing.T) {
	c := testcluster.New(t, 3, enableScripts)
	ctx := ctxT(t)
	s := c.Node(1).Services()
	in := dister.Instance{Service: "job", ID: "1", Address: "127.0.0.1:1",
		Check: dister.Check{Type: dister.CheckScript, Target: "true", Interval: fastCheck}}
	if err := s.Register(ctx, in); !errors.Is(err, dister.ErrInvalid) || !strings.Contains(err.Error(), "disabled") {
		t.Fatalf("script check with the setting off: %v, want ErrInvalid saying it is disabled", err)
	}
	if st, err := c.Node(2).Settings(ctx); err != nil || st.ScriptChecks {
		t.Fatalf("default settings %+v, %v", st, err)
	}
	if err := c.Node(2).SetSettings(ctx, dister.Settings{ScriptChecks: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.Register(ctx, in); err != nil {
		t.Fatal(err)
	}
	warn := in
	warn.ID, warn.Check.Target = "2", "false" // exit 1
	if err := s.Register(ctx, warn); err != nil {
		t.Fatal(err)
	}
	custom := in
	custom.ID, custom.Check = "3", dister.Check{Type: dister.CheckCustom, Target: "echo 1", Interval: fastCheck}
	if err := s.Register(ctx, custom); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, s, "job", "1", dister.StatusPassing)
	waitStatus(t, s, "job", "2", dister.StatusWarning)
	waitStatus(t, s, "job", "3", dister.StatusPassing)
	// Turned off again: the leader stops running them; their status stays
	// and their output says they were not run.
	if err := c.Node(3).SetSettings(ctx, dister.Settings{ScriptChecks: false}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		in, ok := getInstance(t, s, "job", "1")
		if ok && in.Status != dister.StatusPassing {
			t.Fatalf("a script check that was not run changed the status: %+v", in)
		}
		return ok && strings.HasPrefix(in.Output, "not run")
	})
}

func enableScripts(o *dister.Options) { o.EnableScriptChecks = true }

// A ttl instance registered through a Node is kept alive by it; once the
// Node is closed the instance turns critical, then is removed.
func TestServiceTTLInstanceOfClosedNode(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	in := dister.Instance{Service: "worker", ID: "w3", Address: "127.0.0.1:7",
		Check: dister.Check{Type: dister.CheckTTL, TTL: time.Second, DeregisterCriticalAfter: time.Second}}
	if err := c.Node(3).Services().Register(ctx, in); err != nil {
		t.Fatal(err)
	}
	s := c.Node(1).Services()
	if got := instanceStatus(t, s, "worker", "w3"); got != dister.StatusPassing {
		t.Fatalf("status after register %q", got)
	}
	// Kept alive past several TTLs while the Node runs.
	time.Sleep(3 * time.Second)
	if got := instanceStatus(t, s, "worker", "w3"); got != dister.StatusPassing {
		t.Fatalf("status of a live Node's ttl instance after 3 TTLs: %q", got)
	}
	c.Stop(3)
	waitStatus(t, s, "worker", "w3", dister.StatusCritical)
	waitStatus(t, s, "worker", "w3", "")
}

// A ttl instance registered with ExternalHeartbeat needs Heartbeat calls.
func TestServiceTTLExternalHeartbeat(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	s := c.Node(1).Services()
	in := dister.Instance{Service: "ext", ID: "1", Address: "127.0.0.1:7",
		Check: dister.Check{Type: dister.CheckTTL, TTL: time.Second}}
	if err := s.Register(ctx, in, dister.ExternalHeartbeat()); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, s, "ext", "1", dister.StatusCritical)
	if err := s.Heartbeat(ctx, "ext", "1"); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, s, "ext", "1", dister.StatusPassing)
	if err := s.Heartbeat(ctx, "ext", "missing"); !errors.Is(err, dister.ErrNotFound) {
		t.Fatalf("heartbeat of a missing instance: %v", err)
	}
}

// Checks run on the group leader; when it fails the new leader takes them
// over: a server that dies after the failover is still seen.
func TestServiceChecksContinueAfterFailover(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	srv := serveOK(t, "127.0.0.1:0")
	addr := srv.Listener.Addr().String()
	leader := c.Leader()
	var other uint64
	for _, id := range c.IDs() {
		if id != leader {
			other = id
		}
	}
	s := c.Node(other).Services()
	if err := s.Register(ctx, dister.Instance{Service: "web", ID: "1", Address: addr,
		Check: dister.Check{Type: dister.CheckHTTP, Target: "http://" + addr + "/", Interval: fastCheck}}); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, s, "web", "1", dister.StatusPassing)
	c.Stop(leader)
	srv.Close()
	waitStatus(t, s, "web", "1", dister.StatusCritical)
}
