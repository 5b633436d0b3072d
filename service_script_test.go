package dister_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// TestScriptChecksNeedTheServerFlag: the cluster setting alone (which
// anyone with REST access can flip) must not let a script run on a leader
// that was not started with EnableScriptChecks. Before the fix the
// registration was accepted and the leader ran the command.
func TestScriptChecksNeedTheServerFlag(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	if err := c.Node(2).SetSettings(ctx, dister.Settings{ScriptChecks: true}); err != nil {
		t.Fatal(err)
	}
	ran := filepath.Join(t.TempDir(), "ran")
	in := dister.Instance{Service: "job", ID: "1", Address: "127.0.0.1:1",
		Check: dister.Check{Type: dister.CheckScript, Target: "touch " + ran, Interval: fastCheck}}
	err := c.Node(1).Services().Register(ctx, in)
	if !errors.Is(err, dister.ErrInvalid) || !strings.Contains(err.Error(), "not enabled on the leader") {
		t.Errorf("script check on servers without the flag: %v, want ErrInvalid \"not enabled on the leader\"", err)
	}
	time.Sleep(time.Second)
	if _, err := os.Stat(ran); err == nil {
		t.Fatal("the leader ran the command of a script check")
	}
}

// TestScriptCheckUnderLeaderWithoutFlag: a script check registered under a
// leader with the flag is not run once the leader lacks it (here: the same
// server restarted without it); its status stays as it was, its output
// says it was not run, the metric counts it, and a new script check is
// refused.
func TestScriptCheckUnderLeaderWithoutFlag(t *testing.T) {
	c := testcluster.New(t, 1, enableScripts)
	ctx := ctxT(t)
	if err := c.Node(1).SetSettings(ctx, dister.Settings{ScriptChecks: true}); err != nil {
		t.Fatal(err)
	}
	in := dister.Instance{Service: "job", ID: "1", Address: "127.0.0.1:1",
		Check: dister.Check{Type: dister.CheckScript, Target: "true", Interval: fastCheck}}
	if err := c.Node(1).Services().Register(ctx, in); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, c.Node(1).Services(), "job", "1", dister.StatusPassing)
	c.Stop(1)
	n := c.RestartWith(1, func(o *dister.Options) { o.EnableScriptChecks = false })
	c.WaitReady()
	s := n.Services()
	waitFor(t, func() bool {
		got, ok := getInstance(t, s, "job", "1")
		if ok && got.Status != dister.StatusPassing {
			t.Fatalf("status changed under a leader without the flag: %+v", got)
		}
		return ok && strings.HasPrefix(got.Output, "not run") && dister.ProbesNotRun(n) > 0
	})
	in.ID = "2"
	if err := s.Register(ctx, in); !errors.Is(err, dister.ErrInvalid) || !strings.Contains(err.Error(), "not enabled on the leader") {
		t.Fatalf("script check under a leader without the flag: %v", err)
	}
}
