package dister_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// The old group's checker must stop probing once the group is deleted,
// and must not write its results into the group created again under the
// same name (which holds an instance of the same service and id whose
// target fails).
func TestCheckerAcrossRecreate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var oldHits atomic.Int64
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { oldHits.Add(1) }))
	defer ok.Close()
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) }))
	defer bad.Close()
	c := testcluster.New(t, 3)
	admin := c.Node(1)
	if err := admin.CreateGroup(ctx, "cg"); err != nil {
		t.Fatal(err)
	}
	reg := func(target string) {
		t.Helper()
		in := dister.Instance{Service: "web", ID: "a", Address: "127.0.0.1:7",
			Check: dister.Check{Type: dister.CheckHTTP, Target: target, Interval: 100 * time.Millisecond}}
		if err := admin.Group("cg").Services().Register(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	reg(ok.URL)
	waitUntil(t, "probes of the old instance", func() bool { return oldHits.Load() > 3 })
	if err := admin.DeleteGroup(ctx, "cg"); err != nil {
		t.Fatal(err)
	}
	if err := admin.CreateGroup(ctx, "cg"); err != nil {
		t.Fatal(err)
	}
	reg(bad.URL)
	time.Sleep(time.Second)
	h0 := oldHits.Load()
	var sts []dister.HealthStatus
	for range 20 {
		insts, err := admin.Group("cg").Services().Get(ctx, "web", dister.WithRead(dister.Linearizable()))
		if err != nil || len(insts) != 1 {
			t.Fatalf("new group's web: %v, %v", insts, err)
		}
		sts = append(sts, insts[0].Status)
		if insts[0].Status == dister.StatusPassing {
			t.Errorf("the new group's web/a (target answers 500) is passing: %v", sts)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if h := oldHits.Load(); h != h0 {
		t.Errorf("the old group's target was probed %d times more, 1 s to 3 s after the group was deleted", h-h0)
	}
	t.Logf("new group's web/a statuses: %v; old target hits %d", sts, oldHits.Load())
}
