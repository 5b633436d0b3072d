package dister_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime/pprof"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

var (
	stressRounds = flag.Int("stress.rounds", 5, "rounds of TestStressRounds")
	stressSeed   = flag.Uint64("stress.seed", 0, "seed of TestStressRounds (0 = from the clock)")
)

// TestStressRounds runs a 3-server cluster through seeded random rounds of
// faults — the leader closed and reopened, a server removed and replaced by
// a new one (new id, empty data dir), a group created, written and deleted —
// while writers, a kept-alive lease and watches run, and checks:
//   - every acknowledged write is there at the end; a write that failed
//     with ErrNoQuorum or ErrClosed (which mean "not applied") is not;
//   - the kept-alive lease never expires;
//   - each watch sees every acknowledged write under its prefix exactly
//     once, revisions strictly increasing across resumes, or ends with a
//     true ErrCompacted;
//   - every Close returns (a goroutine dump after 60 s otherwise);
//   - WaitReady succeeds after each round; no goroutine is left (TestMain).
//
// `go test -run TestStressRounds -stress.rounds 100 .` for a long run.
func TestStressRounds(t *testing.T) {
	t.Parallel() // long, mostly waiting on timers: runs beside the others
	seed := *stressSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -stress.seed %d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	c := testcluster.New(t, 3, func(o *dister.Options) { o.LeaseCheckpoint = 2 * time.Second })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	s := &stress{t: t, c: c, ctx: ctx, acked: map[string]int64{}, refused: map[string]error{}}
	s.startLease()
	for w := range 3 {
		s.ww.Add(1)
		go s.writer(w)
	}
	for _, prefix := range []string{"w0/", "w1/"} {
		s.wg.Add(1)
		go s.watcher(prefix)
	}
	counts := map[string]int{}
	for round := range *stressRounds {
		s.waitAcked(20)
		var action string
		switch rng.IntN(3) {
		case 0:
			action = "leader close/reopen"
			s.closeLeader()
		case 1:
			action = "server replace"
			s.replaceServer(rng)
		case 2:
			action = "group create/delete"
			s.groupLife(round)
		}
		counts[action]++
		s.readyAll()
		if t.Failed() {
			t.Fatalf("round %d (%s) failed", round, action)
		}
		t.Logf("round %d: %s; %d writes acknowledged", round, action, s.ackedCount())
	}
	s.waitAcked(20)
	s.stopLoad()
	s.check()
	t.Logf("%d rounds: %v; %d writes acknowledged, %d refused, %d of unknown outcome; %d watch resumes",
		*stressRounds, counts, len(s.acked), len(s.refused), s.unknown, s.resumes)
}

type stress struct {
	t   *testing.T
	c   *testcluster.Cluster
	ctx context.Context
	wg  sync.WaitGroup // watchers
	ww  sync.WaitGroup // writers and the lease keeper

	mu      sync.Mutex
	acked   map[string]int64 // key -> revision of its acknowledged write
	refused map[string]error // keys whose write surely did not apply
	unknown int
	resumes int
	seen    map[string][]int64    // watch prefix -> revisions it delivered
	skipped map[string][][2]int64 // watch prefix -> revision ranges a true ErrCompacted skipped
	reached map[string]int64      // watch prefix -> last revision delivered
	stopped bool                  // writers and the lease keeper stop
	ended   bool                  // watchers stop

	leaseID  dister.LeaseID
	leaseErr error
}

// node picks a running server at random.
func (s *stress) node() *dister.Node {
	ids := s.c.IDs()
	for len(ids) > 0 {
		i := rand.IntN(len(ids))
		if n := s.c.Node(ids[i]); n != nil {
			return n
		}
		ids = append(ids[:i], ids[i+1:]...)
	}
	return nil
}

func (s *stress) done() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopped
}

func (s *stress) watchEnded() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ended
}

func (s *stress) writer(w int) {
	defer s.ww.Done()
	for i := 0; !s.done(); i++ {
		n := s.node()
		if n == nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		key := fmt.Sprintf("w%d/%06d", w, i)
		wctx, cancel := context.WithTimeout(s.ctx, 3*time.Second)
		rev, err := n.KV().Put(wctx, key, []byte(key))
		cancel()
		s.mu.Lock()
		switch {
		case err == nil:
			s.acked[key] = rev
		case errors.Is(err, dister.ErrUnknownOutcome):
			s.unknown++
			if os.Getenv("DISTER_STRESS_DEBUG") != "" {
				fmt.Fprintln(os.Stderr, "WRITE UNKNOWN", err)
			}
		case errors.Is(err, dister.ErrNoQuorum), errors.Is(err, dister.ErrClosed):
			s.refused[key] = err
		default:
			s.unknown++ // e.g. a bare deadline before the write reached the engine
			if os.Getenv("DISTER_STRESS_DEBUG") != "" {
				fmt.Fprintln(os.Stderr, "WRITE ERR", err)
			}
		}
		s.mu.Unlock()
	}
}

func (s *stress) ackedCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.acked)
}

// waitAcked waits until n more writes were acknowledged: the cluster works.
func (s *stress) waitAcked(n int) {
	s.t.Helper()
	want := s.ackedCount() + n
	deadline := time.Now().Add(30 * time.Second)
	for s.ackedCount() < want {
		if time.Now().After(deadline) {
			s.t.Fatalf("no progress: %d writes acknowledged, want %d", s.ackedCount(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startLease grants a lease with a key and keeps it alive from the test,
// through whichever server answers, every quarter of its TTL.
func (s *stress) startLease() {
	const ttl = 6 * time.Second
	id, err := s.node().Leases().Grant(s.ctx, ttl)
	if err != nil {
		s.t.Fatal(err)
	}
	if _, err := s.node().KV().Put(s.ctx, "lease/key", []byte("x"), dister.WithLease(id)); err != nil {
		s.t.Fatal(err)
	}
	s.leaseID = id
	s.ww.Add(1)
	go func() {
		defer s.ww.Done()
		last := time.Now()
		for !s.done() {
			time.Sleep(ttl / 4)
			for !s.done() {
				kctx, cancel := context.WithTimeout(s.ctx, time.Second)
				err := s.node().Leases().KeepAlive(kctx, id)
				cancel()
				if err == nil {
					last = time.Now()
					break
				}
				if errors.Is(err, dister.ErrLeaseNotFound) || time.Since(last) > ttl {
					s.mu.Lock()
					s.leaseErr = fmt.Errorf("kept-alive lease lost (last keepalive %v ago): %w", time.Since(last), err)
					s.mu.Unlock()
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}()
}

// watcher follows prefix across servers: when its server closes, it
// resumes on another from the revision after the last one it saw.
func (s *stress) watcher(prefix string) {
	defer s.wg.Done()
	var last int64
	for !s.watchEnded() {
		n := s.node()
		if n == nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		wctx, cancel := context.WithCancel(s.ctx)
		stop := make(chan struct{})
		go func() { // end the watch at the end of the test
			for !s.watchEnded() {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
			cancel()
		}()
		for ev := range n.KV().Watch(wctx, prefix, dister.FromRevision(last+1)) {
			if ev.Err != nil {
				s.mu.Lock()
				s.resumes++
				if errors.Is(ev.Err, dister.ErrCompacted) {
					if ev.CompactRevision <= last+1 {
						s.t.Errorf("watch %s from %d: ErrCompacted with compact revision %d", prefix, last+1, ev.CompactRevision)
					} else {
						if s.skipped == nil {
							s.skipped = map[string][][2]int64{}
						}
						s.skipped[prefix] = append(s.skipped[prefix], [2]int64{last + 1, ev.CompactRevision - 1})
						last = ev.CompactRevision - 1
					}
				}
				s.mu.Unlock()
				break
			}
			if ev.Type == dister.EventProgress {
				continue
			}
			// Only single-key puts under the prefix: one event a revision.
			if ev.Revision <= last || !ev.LastInRevision || !strings.HasPrefix(ev.Entry.Key, prefix) {
				s.t.Errorf("watch %s: event %+v after revision %d", prefix, ev, last)
			}
			last = ev.Revision
			s.mu.Lock()
			if s.seen == nil {
				s.seen, s.reached = map[string][]int64{}, map[string]int64{}
			}
			s.seen[prefix] = append(s.seen[prefix], ev.Revision)
			s.reached[prefix] = last
			s.mu.Unlock()
		}
		close(stop)
		cancel()
	}
}

// closeWithin closes server id, failing with a goroutine dump if Close
// takes over 60 s.
func (s *stress) closeWithin(id uint64) {
	s.t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.c.Stop(id)
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		pprof.Lookup("goroutine").WriteTo(os.Stderr, 2)
		s.t.Fatalf("Close of server %d did not return in 60 s", id)
	}
}

func (s *stress) closeLeader() {
	leader := s.c.Leader()
	s.closeWithin(leader)
	s.waitAcked(5)
	s.c.Restart(leader)
}

// replaceServer removes a random server (it stays running until the
// removal is done, then closes) and joins a new one with an empty data dir.
func (s *stress) replaceServer(rng *rand.Rand) {
	s.t.Helper()
	ids := s.c.IDs()
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	victim := ids[rng.IntN(len(ids))]
	var via *dister.Node
	for _, id := range ids {
		if id != victim {
			via = s.c.Node(id)
		}
	}
	rctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	err := via.RemoveServer(rctx, victim)
	cancel()
	if err != nil {
		s.t.Fatalf("remove server %d: %v", victim, err)
	}
	s.closeWithin(victim)
	n := s.c.Join(0)
	waitVoters(s.t, n, 3)
}

func (s *stress) groupLife(round int) {
	s.t.Helper()
	name := fmt.Sprintf("g%d", round)
	if err := s.node().CreateGroup(s.ctx, name); err != nil {
		s.t.Fatalf("create group %s: %v", name, err)
	}
	g := s.node().Group(name)
	for i := range 10 {
		if _, err := g.KV().Put(s.ctx, fmt.Sprint(i), nil); err != nil {
			s.t.Fatalf("write to group %s: %v", name, err)
		}
	}
	if err := s.node().DeleteGroup(s.ctx, name); err != nil {
		s.t.Fatalf("delete group %s: %v", name, err)
	}
}

func (s *stress) readyAll() {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	for _, id := range s.c.IDs() {
		if n := s.c.Node(id); n != nil {
			if err := n.WaitReady(ctx); err != nil {
				s.t.Fatalf("server %d not ready after the round: %v", id, err)
			}
		}
	}
}

// stopLoad stops the writers and the lease keeper, lets the watchers catch
// up with the last acknowledged write, then stops them.
func (s *stress) stopLoad() {
	s.t.Helper()
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	s.ww.Wait() // every write in flight is answered: the acknowledged set is final
	want := map[string]int64{}
	s.mu.Lock()
	for k, rev := range s.acked {
		p := k[:3]
		want[p] = max(want[p], rev)
	}
	s.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for _, p := range []string{"w0/", "w1/"} {
		for {
			s.mu.Lock()
			got := s.reached[p]
			s.mu.Unlock()
			if got >= want[p] {
				break
			}
			if time.Now().After(deadline) {
				s.t.Errorf("watch %s reached %d, the last write is at %d", p, got, want[p])
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	s.mu.Lock()
	s.ended = true
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *stress) check() {
	s.t.Helper()
	if s.leaseErr != nil {
		s.t.Error(s.leaseErr)
	}
	n := s.node()
	if _, err := n.KV().Get(s.ctx, "lease/key", dister.Linearizable()); err != nil {
		s.t.Errorf("key of the kept-alive lease: %v", err)
	}
	all := map[string]dister.Entry{}
	for _, prefix := range []string{"w0/", "w1/", "w2/"} {
		after := ""
		for {
			page, _, err := n.KV().List(s.ctx, prefix, dister.Linearizable(), dister.Limit(dister.MaxListLimit), dister.After(after))
			if err != nil {
				s.t.Fatal(err)
			}
			for _, e := range page {
				all[e.Key] = e
			}
			if len(page) < dister.MaxListLimit {
				break
			}
			after = page[len(page)-1].Key
		}
	}
	for k, rev := range s.acked {
		e, ok := all[k]
		if !ok || e.ModRevision != rev || e.Version != 1 {
			s.t.Errorf("acknowledged write %s at revision %d: %+v (present %v)", k, rev, e, ok)
		}
	}
	// Every key is written by one Put: a write of unknown outcome is there
	// or not, but never applied twice.
	for k, e := range all {
		if e.Version != 1 {
			s.t.Errorf("key %s written once has version %d", k, e.Version)
		}
	}
	for k, err := range s.refused {
		if _, ok := all[k]; ok {
			s.t.Errorf("write %s failed with %v (not applied) but is there", k, err)
		}
	}
	// Every acknowledged write under a watched prefix was seen once, unless
	// a true ErrCompacted skipped it.
	for _, prefix := range []string{"w0/", "w1/"} {
		count := map[int64]int{}
		for _, r := range s.seen[prefix] {
			count[r]++
		}
	keys:
		for k, rev := range s.acked {
			if !strings.HasPrefix(k, prefix) {
				continue
			}
			for _, sk := range s.skipped[prefix] {
				if rev >= sk[0] && rev <= sk[1] {
					continue keys
				}
			}
			if count[rev] != 1 {
				s.t.Errorf("watch %s: the write of %s at revision %d delivered %d times", prefix, k, rev, count[rev])
			}
		}
	}
}
