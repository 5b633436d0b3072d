package dister_test

import (
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/svc"
	"github.com/dister/dister/internal/testcluster"
)

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func getInstance(t *testing.T, s *dister.Services, service, id string) (dister.Instance, bool) {
	t.Helper()
	insts, err := s.Get(ctxT(t), service, dister.WithRead(dister.Linearizable()))
	if err != nil {
		t.Fatalf("get %s: %v", service, err)
	}
	for _, in := range insts {
		if in.ID == id {
			return in, true
		}
	}
	return dister.Instance{}, false
}

// TestCheckerStoreLostCASIsConflict: the real store must report a status
// write against a revision that is no longer current as ErrConflict. Before
// the fix it returned nil (the txn's Succeeded was dropped), so the checker
// took a lost write for a committed one.
func TestCheckerStoreLostCASIsConflict(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	s := c.Node(1).Services()
	in := dister.Instance{Service: "web", ID: "1", Address: "127.0.0.1:8001"}
	if err := s.Register(ctx, in); err != nil {
		t.Fatal(err)
	}
	old, _ := getInstance(t, s, "web", "1")
	in.Address = "127.0.0.1:8002"
	if err := s.Register(ctx, in); err != nil {
		t.Fatal(err)
	}
	st, err := dister.CheckerStore(ctx, c.Node(1), "default")
	if err != nil {
		t.Fatal(err)
	}
	rec := &svc.Record{Service: "web", ID: "1", Address: old.Address, Status: svc.Critical, Output: "x"}
	if _, err := st.Update(ctx, rec, old.ModRevision); !errors.Is(err, dister.ErrConflict) {
		t.Fatalf("update at a superseded revision: %v, want ErrConflict", err)
	}
	if err := st.Remove(ctx, rec, old.ModRevision); !errors.Is(err, dister.ErrConflict) {
		t.Fatalf("remove at a superseded revision: %v, want ErrConflict", err)
	}
	if got, ok := getInstance(t, s, "web", "1"); !ok || got.Address != "127.0.0.1:8002" {
		t.Fatalf("after lost writes: %+v %v, want the re-registration", got, ok)
	}
}

// TestCheckerDoesNotUndoReregistration: a deploy re-registers an instance
// with a new address and check while the leader's checker is writing the
// old one's status. The checker must never write the old address back, and
// must go on checking the new registration. Before the fix the lost write
// was adopted as the checker's record: it kept probing the old target, and
// once that died it CASed the old address and check over the new record.
func TestCheckerDoesNotUndoReregistration(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	leader := c.Node(c.Leader())
	s := c.Node(1).Services()
	oldLn, newLn := listen(t), listen(t)
	oldAddr, newAddr := oldLn.Addr().String(), newLn.Addr().String()

	var once sync.Once
	entered, release := make(chan struct{}), make(chan struct{})
	dister.SetCheckWriteHook(leader, func(key string) {
		once.Do(func() { close(entered); <-release })
	})
	t.Cleanup(func() { dister.SetCheckWriteHook(leader, nil) })

	reg := func(addr string) dister.Instance {
		return dister.Instance{Service: "web", ID: "1", Address: addr, Priority: 1,
			Check: dister.Check{Type: dister.CheckTCP, Target: addr, Interval: fastCheck}}
	}
	if err := s.Register(ctx, reg(oldAddr)); err != nil {
		t.Fatal(err)
	}
	select { // the checker's first status write (passing) is held
	case <-entered:
	case <-ctx.Done():
		t.Fatal("the checker wrote nothing")
	}
	if err := s.Register(ctx, reg(newAddr)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // let the checker reload while its write is held
	close(release)
	oldLn.Close() // the old process is gone

	waitFor(t, func() bool {
		in, ok := getInstance(t, s, "web", "1")
		if ok && in.Address != newAddr {
			t.Fatalf("the re-registration was undone: %+v", in)
		}
		return ok && in.Status == dister.StatusPassing
	})
	// And it stays the new registration while the checker goes on.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		in, ok := getInstance(t, s, "web", "1")
		if !ok || in.Address != newAddr || in.Check.Target != newAddr || in.Status != dister.StatusPassing {
			t.Fatalf("instance now %+v (found %v), want the new registration passing", in, ok)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDeregisterCriticalAfterSurvivesLeaderChanges: the countdown of
// DeregisterCriticalAfter runs from the stored time the instance became
// critical, so leaders that each last less than it still remove the
// instance. Before the fix every new leader started the count afresh and a
// critical instance outlived any number of short leaders.
func TestDeregisterCriticalAfterSurvivesLeaderChanges(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	s := c.Node(1).Services()
	dead := listen(t)
	addr := dead.Addr().String()
	dead.Close()
	const after = 6 * time.Second
	if err := s.Register(ctx, dister.Instance{Service: "web", ID: "dead", Address: addr,
		Check: dister.Check{Type: dister.CheckTCP, Target: addr, Interval: fastCheck, DeregisterCriticalAfter: after}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		in, ok := getInstance(t, s, "web", "dead")
		return ok && !in.LastChecked.IsZero()
	})
	for round := range 30 {
		leader := c.Leader()
		start := time.Now()
		c.Stop(leader)
		c.Restart(leader)
		c.WaitReady()
		var reader *dister.Node
		for _, id := range c.IDs() {
			reader = c.Node(id)
		}
		if _, ok := getInstance(t, reader.Services(), "web", "dead"); !ok {
			t.Logf("removed after %d leader changes", round+1)
			return
		}
		// Each leader lasts less than the countdown.
		time.Sleep(max(0, after/2-time.Since(start)))
	}
	t.Fatal("a critical instance outlived its DeregisterCriticalAfter across 30 short leaders")
}

// TestReplaceKeepsUnchangedStatus: replacing a service's instances with
// the same set (the legacy API re-POSTing an unchanged /service) keeps
// every unchanged instance's status and writes nothing; a changed one
// starts over. Before the fix every instance went back to "not checked"
// and nothing could be picked until the checker ran again.
func TestReplaceKeepsUnchangedStatus(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	s := c.Node(2).Services()
	var insts []dister.Instance
	for _, id := range []string{"a", "b", "c"} {
		addr := listen(t).Addr().String()
		insts = append(insts, dister.Instance{Service: "web", ID: id, Address: addr, Priority: 1,
			Check: dister.Check{Type: dister.CheckTCP, Target: addr, Interval: time.Second}})
	}
	if err := s.Replace(ctx, []string{"web"}, insts); err != nil {
		t.Fatal(err)
	}
	for _, in := range insts {
		waitStatus(t, s, "web", in.ID, dister.StatusPassing)
	}
	rev, err := c.Node(2).KV().Revision(ctx, dister.Linearizable())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Replace(ctx, []string{"web"}, insts); err != nil {
		t.Fatal(err)
	}
	for _, in := range insts {
		if got := instanceStatus(t, s, "web", in.ID); got != dister.StatusPassing {
			t.Fatalf("%s is %q right after an unchanged replace", in.ID, got)
		}
	}
	if after, err := c.Node(2).KV().Revision(ctx, dister.Linearizable()); err != nil || after != rev {
		t.Fatalf("an unchanged replace wrote: revision %d -> %d (%v)", rev, after, err)
	}
	changed := append([]dister.Instance(nil), insts...)
	changed[2].Priority = 5            // same check: keeps its status
	changed[1].Address = "127.0.0.1:1" // another address: checked afresh
	changed[1].Check.Target = "127.0.0.1:1"
	if err := s.Replace(ctx, []string{"web"}, changed); err != nil {
		t.Fatal(err)
	}
	if got := instanceStatus(t, s, "web", "a"); got != dister.StatusPassing {
		t.Fatalf("unchanged a is %q", got)
	}
	if got := instanceStatus(t, s, "web", "c"); got != dister.StatusPassing {
		t.Fatalf("c with a new priority only is %q", got)
	}
	if got := instanceStatus(t, s, "web", "b"); got != dister.StatusCritical {
		t.Fatalf("b with a new check is %q, want critical until checked", got)
	}
}
