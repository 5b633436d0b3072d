package dister_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/svc"
	"github.com/dister/dister/internal/testcluster"
)

// BenchmarkServicesScale measures the services' scale targets on 3 servers
// in one process: N instances in one group (10 services of N/10; half tcp
// checked every 10 s against listeners in a child process, so their CPU is
// not counted here; half ttl 30 s, kept alive by the Nodes that registered
// them, spread over the three servers).
//
//	go test -run '^$' -bench BenchmarkServicesScale -benchtime 1x -timeout 60m .        (N = 100,000)
//	DISTER_SCALE_N=1000 go test -run '^$' -bench BenchmarkServicesScale -benchtime 1x .  (what CI runs)
//
// DISTER_SCALE_N sets N (a multiple of 20); DISTER_SCALE_WINDOW the steady
// window (default 60 s from 10,000 instances, 5 s below);
// DISTER_SCALE_CPUPROFILE=FILE writes a CPU profile of that window;
// DISTER_SCALE_SAMPLES the status changes timed (default 40, 6 below
// 10,000 instances). Figures:
//
//	reg-ops/s         Register calls per second, 64 at a time
//	raft-writes/min   Raft entries committed (default group and catalog) in the steady window: the goal is 0
//	steady-cores      process CPU in the steady window minus an idle cluster's, in cores: the leader's
//	                  checker, the keepalives of the ttl half, the probes' client side
//	change-p50-ms, change-p99-ms
//	                  from the leader's checker writing an instance's new status to Pick on another
//	                  server reflecting it, in a service of N/10 instances
//	pick-ns, pick-allocs, pick-M/s
//	                  Pick (priority-weighted) of a service of N/10 instances, one goroutine
//	probes-not-run    probes that found no free slot in time (status kept) over the whole run
//	heap-B/inst       Go heap growth per instance per server (the process heap after GC, less an idle
//	                  cluster's, / N / 3); it includes the registering Nodes' keepers and one server's
//	                  balancer view
func BenchmarkServicesScale(b *testing.B) {
	n := scaleEnvInt(b, "DISTER_SCALE_N", 100000)
	if n < 20 || n%20 != 0 {
		b.Fatalf("DISTER_SCALE_N=%d: want a multiple of 20", n)
	}
	window := 5 * time.Second
	if n >= 10000 {
		window = time.Minute
	}
	if v := os.Getenv("DISTER_SCALE_WINDOW"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatal(err)
		}
		window = d
	}
	b.ReportMetric(0, "ns/op")
	targets := scaleListeners(b, 8)
	c := testcluster.New(b, 3)
	leader := c.Leader()
	ctx := context.Background()

	// Baseline: an idle cluster's CPU and heap.
	heap0 := heapAfterGC()
	idle := cpuCores(func() { time.Sleep(min(window, 10*time.Second)) })

	// The flipping instance, one of service s0: Pick by a key hashed to
	// it returns it exactly while it passes.
	flip := newFlipTarget(b)
	flipKey := svc.InstanceKey("s0", "flip")
	if err := c.Node(1).Services().Register(ctx, dister.Instance{Service: "s0", ID: "flip", Address: flip.addr, Priority: 1,
		Check: dister.Check{Type: dister.CheckTCP, Target: flip.addr, Interval: 200 * time.Millisecond, Timeout: 200 * time.Millisecond}}); err != nil {
		b.Fatal(err)
	}

	// Registration.
	var next atomic.Int64
	var failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				in := dister.Instance{Service: fmt.Sprintf("s%d", i%10), ID: strconv.Itoa(i), Priority: 1}
				if i%2 == 0 {
					in.Address = targets[i/2%len(targets)]
					in.Check = dister.Check{Type: dister.CheckTCP, Target: in.Address, Interval: 10 * time.Second}
				} else {
					in.Address = "127.0.0.1:9"
					in.Check = dister.Check{Type: dister.CheckTTL, TTL: 30 * time.Second}
				}
				rctx, cancel := context.WithTimeout(ctx, time.Minute)
				err := c.Node(uint64(i%3+1)).Services().Register(rctx, in)
				cancel()
				if err != nil && failed.Add(1) == 1 {
					b.Errorf("register %d: %v", i, err)
				}
			}
		}()
	}
	wg.Wait()
	regTook := time.Since(start)
	if failed.Load() > 0 {
		b.Fatalf("%d of %d registrations failed", failed.Load(), n)
	}
	b.ReportMetric(float64(n)/regTook.Seconds(), "reg-ops/s")
	progress("registered %d instances in %v", n, regTook.Round(time.Millisecond))
	notPassing := scaleWaitPassing(b, c.Node(leader).Services(), n+1)
	b.ReportMetric(float64(notPassing), "not-passing")
	progress("steady window of %v", window)
	time.Sleep(2 * time.Second) // the last first results' writes

	// Every write of the checkers is counted; the flipping instance's
	// status changes are timed too.
	var statusWrites atomic.Int64
	type change struct {
		at     time.Time
		status string
	}
	written := make(chan change, 16)
	for _, id := range c.IDs() {
		dister.SetCheckStatusHook(c.Node(id), func(key, status string) {
			statusWrites.Add(1)
			if key == flipKey {
				select {
				case written <- change{time.Now(), status}:
				default:
				}
			}
		})
		defer dister.SetCheckStatusHook(c.Node(id), nil)
	}

	// Steady state: Raft entries and CPU over the window.
	ln := c.Node(leader)
	d0, s0, w0 := dister.RaftApplied(ln, "default"), dister.RaftApplied(ln, "_system"), statusWrites.Load()
	stopProfile := scaleProfile(b)
	busy := cpuCores(func() { time.Sleep(window) })
	stopProfile()
	d, sys, w := dister.RaftApplied(ln, "default")-d0, dister.RaftApplied(ln, "_system")-s0, statusWrites.Load()-w0
	b.ReportMetric(float64(d+sys)/window.Minutes(), "raft-writes/min")
	b.ReportMetric(max(busy-idle, 0), "steady-cores")
	progress("steady: %d Raft entries in the group (%d of them status writes), %d in the catalog; %.3f cores (idle %.3f)",
		d, w, sys, busy, idle)
	if l := c.Leader(); l != leader {
		// A new leader's checker starts over (one read of every instance,
		// first probes spread over the interval): not a steady window.
		progress("the leader moved from %d to %d before or in the steady window", leader, l)
		b.ReportMetric(1, "leader-moved")
		leader = l
	}

	// Status change to Pick on a follower.
	var other uint64 = 1
	for other == leader {
		other++
	}
	bal := c.Node(other).Balancer()
	vctx, cancel := context.WithTimeout(ctx, 10*time.Minute) // the first Picks load the views
	defer cancel()
	start = time.Now()
	for _, name := range []string{"s0", "s1"} {
		if _, err := bal.Pick(vctx, name); err != nil {
			b.Fatal(err)
		}
	}
	progress("the views of two services loaded on server %d in %v", other, time.Since(start).Round(time.Millisecond))
	key := ""
	for j := 0; key == "" && j < 100*n; j++ {
		if in, err := bal.Pick(ctx, "s0", dister.HashKey(strconv.Itoa(j))); err == nil && in.ID == "flip" {
			key = strconv.Itoa(j)
		}
	}
	if key == "" {
		b.Fatal("no key hashes to the flipping instance")
	}
	b.ReportMetric(float64(heapAfterGC()-heap0)/float64(n)/3, "heap-B/inst")
	for len(written) > 0 {
		<-written
	}
	samples := 40
	if n < 10000 {
		samples = 6
	}
	samples = scaleEnvInt(b, "DISTER_SCALE_SAMPLES", samples)
	var lat []time.Duration
	for i := range samples {
		up := i%2 == 1 // the flip passes now; odd samples bring it back
		flip.set(b, up)
		// The write of the new status (not an output-only write, such as
		// a probe that could not run).
		want := dister.StatusCritical
		if up {
			want = dister.StatusPassing
		}
		var t0 time.Time
		for t0.IsZero() {
			select {
			case ch := <-written:
				if ch.status == string(want) {
					t0 = ch.at
				}
			case <-time.After(30 * time.Second):
				b.Fatalf("sample %d: no %s status written for the flipping instance in 30 s", i, want)
			}
		}
		for deadline := time.Now().Add(30 * time.Second); ; {
			in, err := bal.Pick(ctx, "s0", dister.HashKey(key))
			if (err == nil && in.ID == "flip") == up {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("sample %d: Pick on server %d did not follow the status in 30 s (%v, %v)", i, other, in.ID, err)
			}
			time.Sleep(100 * time.Microsecond)
		}
		lat = append(lat, time.Since(t0))
		if (i+1)%10 == 0 {
			progress("%d status changes, the last seen by Pick after %v", i+1, lat[i])
		}
		time.Sleep(300 * time.Millisecond)
		for len(written) > 0 { // a retried write of the same change
			<-written
		}
	}
	slices.Sort(lat)
	progress("status changes: %v", lat)
	var notRun uint64
	for _, id := range c.IDs() {
		notRun += dister.ProbesNotRun(c.Node(id))
	}
	b.ReportMetric(float64(notRun), "probes-not-run")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "change-p50-ms")
	b.ReportMetric(float64(lat[(len(lat)*99+99)/100-1].Microseconds())/1000, "change-p99-ms")

	// Pick, one goroutine.
	pick := func() {
		if _, err := bal.Pick(ctx, "s1"); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(testing.AllocsPerRun(10000, pick), "pick-allocs")
	const picks = 1000000
	t := time.Now()
	for range picks {
		pick()
	}
	ns := float64(time.Since(t).Nanoseconds()) / picks
	b.ReportMetric(ns, "pick-ns")
	b.ReportMetric(1000/ns, "pick-M/s")
}

// progress tells on stderr how a long run goes (b.Log shows only at the end).
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s scale: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func scaleEnvInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		b.Fatalf("%s=%q: %v", name, v, err)
	}
	return n
}

// cpuCores runs f and returns the process CPU (user and system) it took,
// in cores: CPU time over wall time.
func cpuCores(f func()) float64 {
	cpu := func() time.Duration {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	c0, t0 := cpu(), time.Now()
	f()
	return float64(cpu()-c0) / float64(time.Since(t0))
}

// scaleProfile starts a CPU profile of the steady window into the file
// DISTER_SCALE_CPUPROFILE names, if any; the returned func stops it.
func scaleProfile(b *testing.B) func() {
	path := os.Getenv("DISTER_SCALE_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

func heapAfterGC() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// scaleWaitPassing waits until n instances pass, reading them all every
// second or so, and returns how many do not pass when its patience ends
// (telling on stderr which and why).
func scaleWaitPassing(b *testing.B, s *dister.Services, n int) int {
	deadline := time.Now().Add(time.Minute + time.Duration(n)*time.Millisecond)
	for {
		all, err := s.All(context.Background(), dister.WithRead(dister.Linearizable()))
		passing := 0
		why := map[string]int{}
		for _, in := range all {
			if in.Status == dister.StatusPassing {
				passing++
				continue
			}
			out, _, _ := strings.Cut(in.Output, ":")
			why[fmt.Sprintf("%s %s %q", in.Check.Type, in.Status, out)]++
		}
		if err == nil && passing == n {
			return 0
		}
		if time.Now().After(deadline) {
			progress("%d of %d instances passing (%v); the others: %v", passing, n, err, why)
			return n - passing
		}
		time.Sleep(time.Second)
	}
}

// flipTarget is a loopback listener the benchmark closes and opens again
// on the same address, flipping its instance's status.
type flipTarget struct {
	addr string
	ln   net.Listener
	done chan struct{}
}

func newFlipTarget(b *testing.B) *flipTarget {
	f := &flipTarget{addr: "127.0.0.1:0"}
	f.set(b, true)
	f.addr = f.ln.Addr().String()
	b.Cleanup(func() { f.set(b, false) })
	return f
}

func (f *flipTarget) set(b *testing.B, up bool) {
	if !up {
		if f.ln != nil {
			f.ln.Close()
			<-f.done
			f.ln = nil
		}
		return
	}
	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		b.Fatal(err)
	}
	f.ln, f.done = ln, make(chan struct{})
	go func() {
		defer close(f.done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
}

// scaleListeners starts k loopback listeners in a child process (this test
// binary running TestScaleListeners) and returns their addresses; the child
// ends when the benchmark does.
func scaleListeners(b *testing.B, k int) []string {
	cmd := exec.Command(os.Args[0], "-test.run=^TestScaleListeners$", "-test.count=1", "-test.timeout=0")
	cmd.Env = append(os.Environ(), "DISTER_SCALE_LISTENERS="+strconv.Itoa(k))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	drained := make(chan struct{})
	b.Cleanup(func() {
		stdin.Close()
		<-drained
		_ = cmd.Wait()
	})
	var addrs []string
	sc := bufio.NewScanner(stdout)
	for len(addrs) < k && sc.Scan() {
		if a, ok := strings.CutPrefix(sc.Text(), "listening "); ok {
			addrs = append(addrs, a)
		}
	}
	go func() {
		defer close(drained)
		_, _ = io.Copy(io.Discard, stdout)
	}()
	if len(addrs) < k {
		b.Fatalf("the listeners' process gave %d addresses: %v", len(addrs), sc.Err())
	}
	return addrs
}

// TestScaleListeners is BenchmarkServicesScale's child process: it runs
// only when DISTER_SCALE_LISTENERS is set, accepts and closes connections
// on that many loopback listeners, and ends when its stdin closes.
func TestScaleListeners(t *testing.T) {
	k, err := strconv.Atoi(os.Getenv("DISTER_SCALE_LISTENERS"))
	if err != nil {
		t.Skip("the child process of BenchmarkServicesScale")
	}
	var wg sync.WaitGroup
	var lns []net.Listener
	for range k {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				conn.Close()
			}
		}()
		fmt.Printf("listening %s\n", ln.Addr())
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, ln := range lns {
		ln.Close()
	}
	wg.Wait()
}
