package faults

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

var (
	flagRounds = flag.Int("rounds", 0, "fault rounds, kinds drawn at random (0: one of each kind in turn, the short run of .ci/run)")
	flagNodes  = flag.Int("nodes", 3, "servers: 3 or 5")
	flagSeed   = flag.Uint64("seed", 0, "seed of the fault choices (0: from the clock; printed)")
	flagDir    = flag.String("faults.dir", "", "where logs, histories and visualizations go (default: a new directory under $TMPDIR, kept on failure)")
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Keep-alive connections of the REST clients close on their own.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

// enabled skips t unless DISTER_FAULTS=1 and a docker daemon answers.
func enabled(t *testing.T) {
	t.Helper()
	if os.Getenv("DISTER_FAULTS") != "1" {
		t.Skip("fault runs need DISTER_FAULTS=1 (and Docker)")
	}
	if !dockerUsable() {
		t.Skip("no docker daemon answers")
	}
}

// outDir is where a run's files go: removed when the test passed.
func outDir(t *testing.T) string {
	if *flagDir != "" {
		if err := os.MkdirAll(*flagDir, 0o755); err != nil {
			t.Fatal(err)
		}
		return *flagDir
	}
	dir, err := os.MkdirTemp("", "dister-faults-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs and histories kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	return dir
}

// roundStat is one fault round's account.
type roundStat struct {
	kind     string
	what     string
	from, to int64 // recorder time
	took     time.Duration
}

// TestFaults runs the KV workload on 3 (or 5) servers in containers
// through rounds of faults, restarts every server at the end, and checks
// the whole history.
func TestFaults(t *testing.T) {
	enabled(t)
	if *flagNodes != 3 && *flagNodes != 5 {
		t.Fatalf("-nodes %d: want 3 or 5", *flagNodes)
	}
	rounds := *flagRounds

	seed := *flagSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -seed %d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0x6661756c7473))
	dir := outDir(t)
	sweepStale(context.Background())
	run := newRunID()
	began := time.Now()
	image := buildImage(t, run)
	c := startCluster(t, image, run, *flagNodes, dir)
	t.Logf("run %s: %d servers ready after %v (build included)", run, len(c.nodes), time.Since(began).Round(time.Millisecond))
	defer c.api.http.CloseIdleConnections()

	rec := newRecorder()
	w := newKVWorkload(c, rec)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	const clients = 5
	for i := range clients {
		wg.Go(func() { w.client(stop, i) })
	}
	wg.Go(func() { w.ackWriter(stop) })
	lw := &leaseWorkload{c: c, rec: rec}
	wg.Go(func() { lw.keeper(stop) })
	wg.Go(func() { lw.abandoner(stop) })
	sw := startEndpoints(t, c)
	svcStop := make(chan struct{})
	var swg sync.WaitGroup
	swg.Go(func() { sw.poller(svcStop) })
	wg.Go(func() { sw.toggler(t, stop) })
	defer func() {
		select {
		case <-svcStop:
		default:
			close(svcStop)
		}
		swg.Wait()
	}()
	wctx, wcancel := context.WithCancel(context.Background())
	var wwg sync.WaitGroup
	wwg.Go(func() { w.watcher(wctx) })
	stopped := false
	stopAll := func() {
		if !stopped {
			stopped = true
			close(stop)
			wg.Wait()
		}
		wcancel()
		wwg.Wait()
	}
	defer stopAll()

	kinds := faults
	if !canBridge() {
		t.Logf("no nsenter, iptables or root here: the bridge partition is left out")
		kinds = slices.DeleteFunc(slices.Clone(kinds), func(f fault) bool { return f.name == "partition-bridge" })
	}
	if rounds == 0 {
		rounds = len(kinds)
	}
	var stats []roundStat
	for r := range rounds {
		f := kinds[r%len(kinds)]
		if *flagRounds != 0 {
			f = kinds[rng.IntN(len(kinds))]
		}
		w.setRound(r)
		from := rec.now()
		time.Sleep(time.Second)
		what := f.run(t, c, rng)
		c.waitReady(t, 2*time.Minute)
		time.Sleep(time.Second)
		st := roundStat{kind: f.name, what: what, from: from, to: rec.now()}
		st.took = time.Duration(st.to - st.from)
		stats = append(stats, st)
		t.Logf("round %d: %s (%v)", r, what, st.took.Round(time.Millisecond))
	}
	phase := time.Now()
	close(stop)
	stopped = true
	wg.Wait()
	var phases []string
	mark := func(name string) {
		phases = append(phases, fmt.Sprintf("%s %v", name, time.Since(phase).Round(time.Millisecond)))
		phase = time.Now()
	}
	mark("workers stopped")

	// Every server killed and started from its volume.
	c.restartAll(t)
	mark("every server killed and restarted")
	final := finalReads(t, c, rec, w.newProc())
	mark("final reads")
	// The end of the watch: a last write the watcher must see.
	endValue := "end-" + run
	o := op{client: w.newProc(), node: c.nodes[0].id, kind: opWrite, key: regPrefix + "zz-end", value: endValue, call: rec.now()}
	for try := 0; ; try++ {
		var r reply
		o.rev, r = c.api.put(context.Background(), c.nodes[try%len(c.nodes)], o.key, endValue, nil)
		if r.out == outOK {
			o.out, o.hdr, o.ret = outOK, r.rev, rec.now()
			rec.add(o)
			break
		}
		if try > 20 {
			t.Fatalf("the last write failed: %v", r)
		}
		time.Sleep(time.Second)
	}
	watchDone := false
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if watchDone = w.watchSaw(endValue); watchDone {
			break
		}
	}
	wcancel()
	wwg.Wait()

	mark("watch caught up")
	svc, svcBad := sw.check(svcStop)
	mark("services passing")
	swg.Wait()
	if svc.cycles >= 2 && svc.neverExcluded == svc.cycles {
		svcBad = append(svcBad, fmt.Sprintf("e2 was never seen excluded in %d cycles of 10 s down", svc.cycles))
	}
	abandonedBad := lw.checkAbandoned()
	mark("abandoned leases gone")
	t.Logf("after the rounds: %s", strings.Join(phases, ", "))

	h := rec.all()
	violations := 0
	report := func(what string, bad []string) {
		for i, b := range bad {
			if i == 20 {
				t.Errorf("%s: %d more", what, len(bad)-20)
				break
			}
			t.Errorf("%s: %s", what, b)
		}
		violations += len(bad)
	}
	if w.compacted != "" {
		report("watch", []string{"compacted: " + w.compacted})
	}
	if !watchDone {
		report("watch", []string{"the watcher never received the last write"})
	}
	seen, bad := checkWatch(h, w.events, func(k string) bool { return strings.HasPrefix(k, regPrefix) })
	report("watch", bad)
	if !watchDone || len(bad) > 0 {
		seen = nil // unknown outcomes stay open for porcupine
	}
	sessions, bad := checkSessions(h)
	report("session", bad)
	report("acknowledged", checkAcked(w.acked, final))
	report("lease", lw.bad)
	report("lease", abandonedBad)
	report("service", svcBad)
	lin, err := checkLinearizable(h, seen, dir, "kv")
	if err != nil {
		report("linearizability", []string{err.Error()})
	}
	if violations > 0 {
		writeHistory(dir+"/kv-history.txt", h)
	}

	sum := summarize(h, stats)
	t.Logf("\n%s%s%s", sum.table(rounds, lin, sessions, len(w.acked), len(w.events), w.resumes, violations), lw.figures(), svc)
}

// finalReads lists every register and ack key linearizably after the
// restart of all servers; the register reads join the history.
func finalReads(t *testing.T, c *cluster, rec *recorder, proc int) map[string]entryJSON {
	t.Helper()
	out := map[string]entryJSON{}
	for _, prefix := range []string{"ack/", regPrefix} {
		var entries []entryJSON
		var err error
		call := rec.now()
		for try := 0; try < 20; try++ {
			if entries, err = c.api.list(context.Background(), c.nodes[try%len(c.nodes)], prefix); err == nil {
				break
			}
			time.Sleep(time.Second)
		}
		if err != nil {
			t.Fatalf("final listing: %v", err)
		}
		ret := rec.now()
		for _, e := range entries {
			out[e.Key] = e
			if prefix == regPrefix {
				rec.add(op{client: proc, kind: opRead, key: e.Key, value: *e.Value, rev: e.ModRevision, out: outOK, call: call, ret: ret})
			}
		}
	}
	return out
}

// summary is the figures of a run.
type summary struct {
	ops, unknown, failed int
	byKind               map[string]*kindStat
	kinds                []string
}

type kindStat struct {
	rounds  int
	longest time.Duration // longest time without a completed write during such rounds
	took    time.Duration
}

func summarize(h []op, stats []roundStat) summary {
	s := summary{byKind: map[string]*kindStat{}}
	var writes []int64
	for _, o := range h {
		s.ops++
		switch o.out {
		case outUnknown:
			s.unknown++
		case outFail:
			s.failed++
		case outOK:
			if o.kind == opWrite || o.kind == opCAS {
				writes = append(writes, o.ret)
			}
		}
	}
	sort.Slice(writes, func(i, j int) bool { return writes[i] < writes[j] })
	for _, st := range stats {
		k := s.byKind[st.kind]
		if k == nil {
			k = &kindStat{}
			s.byKind[st.kind] = k
			s.kinds = append(s.kinds, st.kind)
		}
		k.rounds++
		k.took += st.took
		prev := st.from
		i := sort.Search(len(writes), func(i int) bool { return writes[i] >= st.from })
		for ; i < len(writes) && writes[i] <= st.to; i++ {
			k.longest = max(k.longest, time.Duration(writes[i]-prev))
			prev = writes[i]
		}
		k.longest = max(k.longest, time.Duration(st.to-prev))
	}
	sort.Strings(s.kinds)
	return s
}

func (s summary) table(rounds int, lin linResult, sessions, acked, events, resumes, violations int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "rounds %d, operations %d (unknown %d, failed %d), violations %d\n", rounds, s.ops, s.unknown, s.failed, violations)
	fmt.Fprintf(&b, "porcupine: %d ops on %d keys in %v (%d unknown outcomes settled by the watch, %d left open)\n",
		lin.ops, lin.keys, lin.took.Round(time.Millisecond), lin.resolved, lin.unknown)
	fmt.Fprintf(&b, "session reads checked %d; acknowledged writes checked %d; watch events %d over %d connections\n",
		sessions, acked, events, resumes)
	fmt.Fprintf(&b, "%-20s %6s %12s %22s\n", "fault", "rounds", "mean round", "longest no-write gap")
	for _, k := range s.kinds {
		st := s.byKind[k]
		fmt.Fprintf(&b, "%-20s %6d %12v %22v\n", k, st.rounds, (st.took / time.Duration(st.rounds)).Round(time.Millisecond), st.longest.Round(time.Millisecond))
	}
	return b.String()
}
