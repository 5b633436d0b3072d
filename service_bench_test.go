package dister_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// Service figures on a 3-server cluster in one process:
//
//	go test -run '^$' -bench 'Pick' -benchmem .
//	go test -run '^$' -bench 'Register' -benchtime 20000x .
//	go test -run '^$' -bench 'DeathToExclusion' -benchtime 10x .
//	go test -run '^$' -bench 'SteadyWrites' -benchtime 1x .   (60 s window; DISTER_BENCH_WINDOW=10s shortens it)

// BenchmarkPick picks from a watch-fed view of 10 passing instances: no
// network, no lock, no allocation. One goroutine, so ns/op is one core's.
func BenchmarkPick(b *testing.B) {
	c := benchCluster(b)
	ctx := context.Background()
	s := c.Node(1).Services()
	for i := range 10 {
		if err := s.Register(ctx, dister.Instance{Service: "bench", ID: fmt.Sprint(i), Address: "127.0.0.1:1", Priority: i + 1}); err != nil {
			b.Fatal(err)
		}
	}
	bal := c.Node(2).Balancer()
	for _, st := range []struct {
		name string
		opt  dister.PickOption
	}{{"priority", dister.PriorityWeighted()}, {"round_robin", dister.RoundRobin()}, {"hash", dister.HashKey("user-42")}} {
		b.Run(st.name, func(b *testing.B) {
			if _, err := bal.Pick(ctx, "bench", st.opt); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := bal.Pick(ctx, "bench", st.opt); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "picks/s")
		})
	}
}

// BenchmarkRegister: 64 concurrent registrars, each op one Register of a
// fresh instance (a linearizable read and a CAS write).
func BenchmarkRegister(b *testing.B) {
	c := benchCluster(b)
	s := c.Node(c.Leader()).Services()
	runParallel(b, 64, func(ctx context.Context, w, i int) error {
		return s.Register(ctx, dister.Instance{Service: fmt.Sprintf("svc%02d", w), ID: fmt.Sprint(i),
			Address: "127.0.0.1:8080", Priority: 1})
	})
}

// BenchmarkDeathToExclusion measures the time from an HTTP instance's
// server stopping, at a random phase of its 1 s check interval, to Pick no
// longer returning it (default damping of 2 results); ns/op is not the
// figure, p50-s and max-s are.
func BenchmarkDeathToExclusion(b *testing.B) {
	c := benchCluster(b)
	ctx := context.Background()
	s := c.Node(1).Services()
	bal := c.Node(2).Balancer()
	if err := s.Register(ctx, dister.Instance{Service: "dte", ID: "spare", Address: "127.0.0.1:1"}); err != nil {
		b.Fatal(err)
	}
	var took []time.Duration
	for i := 0; b.Loop(); i++ {
		srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
		addr := srv.Listener.Addr().String()
		id := fmt.Sprint(i)
		if err := s.Register(ctx, dister.Instance{Service: "dte", ID: id, Address: addr, Priority: 1,
			Check: dister.Check{Type: dister.CheckHTTP, Target: "http://" + addr + "/", Interval: time.Second}}); err != nil {
			b.Fatal(err)
		}
		for {
			if in, err := bal.Pick(ctx, "dte"); err == nil && in.ID == id {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		// Die at a random phase of the check interval.
		time.Sleep(rand.N(time.Second))
		srv.Close()
		start := time.Now()
		for {
			if in, err := bal.Pick(ctx, "dte"); err == nil && in.ID != id {
				break
			}
			time.Sleep(time.Millisecond)
		}
		took = append(took, time.Since(start))
		if err := s.Deregister(ctx, "dte", id); err != nil {
			b.Fatal(err)
		}
	}
	slices.Sort(took)
	b.ReportMetric(took[len(took)/2].Seconds(), "p50-s")
	b.ReportMetric(took[len(took)-1].Seconds(), "max-s")
}

// BenchmarkSteadyWrites counts the Raft entries a steady cluster with
// 1,000 checked instances (tcp, 1 s interval, all passing) commits per
// minute: status is written only on change, so the goal is 0.
func BenchmarkSteadyWrites(b *testing.B) {
	window := time.Minute
	if v := os.Getenv("DISTER_BENCH_WINDOW"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatal(err)
		}
		window = d
	}
	c := benchCluster(b)
	ctx := context.Background()
	ln := listenAccepting(b)
	s := c.Node(1).Services()
	const n = 1000
	for i := range n {
		if err := s.Register(ctx, dister.Instance{Service: fmt.Sprintf("s%02d", i%50), ID: fmt.Sprint(i), Address: ln,
			Check: dister.Check{Type: dister.CheckTCP, Target: ln, Interval: time.Second}}); err != nil {
			b.Fatal(err)
		}
	}
	waitAllPassing(b, s, n)
	for b.Loop() {
		before, err := c.Node(1).KV().Revision(ctx, dister.Linearizable())
		if err != nil {
			b.Fatal(err)
		}
		time.Sleep(window)
		after, err := c.Node(1).KV().Revision(ctx, dister.Linearizable())
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(after-before)/window.Minutes(), "writes/min")
	}
}

// listenAccepting returns the address of a loopback listener that accepts
// and closes connections until the test ends.
func listenAccepting(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
	tb.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

func waitAllPassing(tb testing.TB, s *dister.Services, n int) {
	tb.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		list, err := s.List(context.Background(), dister.WithRead(dister.Linearizable()))
		passing := 0
		for _, l := range list {
			passing += l.Passing
		}
		if err == nil && passing == n {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%d of %d instances passing after 60s (%v)", passing, n, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A steady cluster writes nothing: once 100 checked instances pass, the
// group's revision stays put over many check intervals.
func TestSteadyChecksWriteNothing(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	ln := listenAccepting(t)
	s := c.Node(1).Services()
	const n = 100
	for i := range n {
		if err := s.Register(ctx, dister.Instance{Service: "steady", ID: fmt.Sprint(i), Address: ln,
			Check: dister.Check{Type: dister.CheckTCP, Target: ln, Interval: fastCheck}}); err != nil {
			t.Fatal(err)
		}
	}
	waitAllPassing(t, s, n)
	before, err := c.Node(2).KV().Revision(ctx, dister.Linearizable())
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * fastCheck)
	after, err := c.Node(2).KV().Revision(ctx, dister.Linearizable())
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Fatalf("revision moved from %d to %d in a steady cluster", before, after)
	}
}
