package dister_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

func TestStatusAndMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := testcluster.New(t, 1, func(o *dister.Options) { o.Metrics = reg })
	ctx := ctxT(t)
	n := c.Node(1)
	rev, err := n.KV().Put(ctx, "k", []byte("v"))
	if err != nil {
		t.Fatal(err)
	}
	n.KV().Put(ctx, "k", []byte("x"), dister.IfModRevision(rev+1)) // a conflict

	st := n.Status()
	if st.NodeID != 1 || st.Version != dister.Version || len(st.Groups) != 1 ||
		st.Groups[0].Name != "default" || st.Groups[0].Leader != 1 || st.Groups[0].Revision < rev {
		t.Fatalf("status: %+v (rev %d)", st, rev)
	}
	if got := counterValue(t, reg, "dister_proposals_total", "default", "ok"); got != 1 {
		t.Fatalf("ok proposals: %v", got)
	}
	if got := counterValue(t, reg, "dister_proposals_total", "default", "conflict"); got != 1 {
		t.Fatalf("conflicting proposals: %v", got)
	}
	mfs, _ := reg.Gather()
	found := false
	for _, mf := range mfs {
		if mf.GetName() == "dister_group_revision" {
			for _, m := range mf.Metric {
				if m.Label[0].GetValue() == "default" && m.Gauge.GetValue() >= float64(rev) {
					found = true
				}
			}
		}
	}
	if !found {
		t.Fatal("no dister_group_revision for default")
	}
	// Close unregisters: the same registry serves the restarted Node.
	c.Stop(1)
	c.Restart(1)
	if _, err := c.Node(1).KV().Put(ctx, "k2", nil); err != nil {
		t.Fatal(err)
	}
}

// counterValue reads one counter of reg by its label values (in label-name
// order); 0 if absent.
func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			match := len(m.Label) == len(labels)
			for i, l := range m.Label {
				if match && l.GetValue() != labels[i] {
					match = false
				}
			}
			if match {
				return m.Counter.GetValue()
			}
		}
	}
	return 0
}
