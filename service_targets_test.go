package dister_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// TestCheckTargetsLimitTheLeader: with CheckTargets set, a leader's checks
// reach only what it lists; a check of anything else is critical and says
// why. By default a link-local target (cloud metadata) is refused the same
// way. Bad entries fail Open.
func TestCheckTargetsLimitTheLeader(t *testing.T) {
	c := testcluster.New(t, 3, func(o *dister.Options) { o.CheckTargets = []string{"10.0.0.0/8"} })
	ctx := ctxT(t)
	ln := listen(t)
	addr := ln.Addr().String()
	s := c.Node(1).Services()
	if err := s.Register(ctx, dister.Instance{Service: "db", ID: "1", Address: addr,
		Check: dister.Check{Type: dister.CheckTCP, Target: addr, Interval: fastCheck}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		in, ok := getInstance(t, s, "db", "1")
		if ok && in.Status == dister.StatusPassing {
			t.Fatalf("a target outside CheckTargets was reached: %+v", in)
		}
		return ok && !in.LastChecked.IsZero() && strings.Contains(in.Output, "not allowed")
	})

	d := testcluster.New(t, 1)
	s = d.Node(1).Services()
	if err := s.Register(ctx, dister.Instance{Service: "meta", ID: "1", Address: "169.254.169.254:80",
		Check: dister.Check{Type: dister.CheckHTTP, Target: "http://169.254.169.254/latest/meta-data/", Interval: fastCheck}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		in, ok := getInstance(t, s, "meta", "1")
		return ok && in.Status == dister.StatusCritical && strings.Contains(in.Output, "not allowed")
	})

	o := d.Options(1)
	o.CheckTargets = []string{"10.0.0.0/99"}
	if _, err := dister.Open(ctx, o); !errors.Is(err, dister.ErrInvalid) {
		t.Fatalf("Open with a bad check target: %v", err)
	}
}
