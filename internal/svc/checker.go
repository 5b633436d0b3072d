package svc

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/health"
)

// Stored is a record with the revision it was last written at.
type Stored struct {
	Record      *Record
	ModRevision int64
}

// Change is one committed change to an instance or a heartbeat, as the
// group's watch history has it.
type Change struct {
	Key      string // an InstanceKey or a HeartbeatKey
	Revision int64  // the revision that made it (a put's ModRevision)
	// Record is an instance's new record; nil for a delete and for a
	// heartbeat.
	Record  *Record
	Deleted bool
}

// Store is what a Checker reads and writes; the cluster engine implements
// it over one group.
type Store interface {
	// Generation changes whenever the group's reserved namespace may have
	// changed (see fsm.StateMachine.ReservedGeneration).
	Generation() uint64
	// Load reads every instance, and the keys of the live heartbeats, from
	// the local replica as of one revision, which it returns.
	Load(ctx context.Context) (instances []Stored, heartbeats map[string]bool, rev int64, err error)
	// Changes returns, in order, the changes to instances and heartbeats
	// committed after revision after, and the revision the caller has then
	// seen everything up to. An after below the retained history fails
	// with an error wrapping errs.Compacted: Load again.
	Changes(ctx context.Context, after int64) (changes []Change, rev int64, err error)
	// Update replaces the record at key if it is still at modRev and
	// returns the revision it wrote; a lost CAS is an error wrapping
	// errs.Conflict, never a success.
	Update(ctx context.Context, r *Record, modRev int64) (int64, error)
	// Remove deletes the instance (and its heartbeat) if it is still at
	// modRev; a lost CAS wraps errs.Conflict.
	Remove(ctx context.Context, r *Record, modRev int64) error
}

// Prober runs probes: a *health.Prober, or a *health.Lane of one.
type Prober interface {
	Probe(ctx context.Context, c health.Check) health.Result
}

// CheckerConfig configures a Checker.
type CheckerConfig struct {
	Store  Store
	Prober Prober
	Logger *slog.Logger
	// Damping is how many consecutive results must agree before a status
	// changes; 0 = health.DefaultDamping.
	Damping int
	// Tick is how often the checker looks for due work; 0 = 100ms.
	Tick time.Duration
	// NotRun, when set, is called for every probe that could not run.
	NotRun func()
}

// Checker probes the instances of one group and writes their status
// through the Store. It runs on the group's leader only: Run returns when
// its ctx ends, which the engine does when leadership is lost.
//
// A status is written only when it changes: a probed check needs Damping
// consecutive results that agree (the first result of a never-checked
// instance is written at once); a ttl check turns critical as soon as its
// heartbeat key is gone (the lease TTL is its damping) and passing when it
// is back. A steady cluster writes nothing.
//
// Its cost follows the work due, not the group's size: it reads every
// instance once (Load, again only when the history it follows was trimmed
// past it), then applies the group's changes one by one from the watch
// history (Changes); a target is looked at when a change, a probe result or
// a write concerns it, or when its due time (next probe, end of a hold,
// DeregisterCriticalAfter) comes up in a heap ordered by that time.
type Checker struct {
	cfg      CheckerConfig
	gen      uint64 // the Store's Generation that rev reflects
	rev      int64  // every change up to rev is applied
	loaded   bool
	nextLoad time.Time // a reload waits for it (see load)
	targets  map[string]*target
	beats    map[string]bool
	due      dueHeap
	touched  []*target // by the changes being applied
	results  chan probeResult
	writes   chan writeDone
	wg       sync.WaitGroup
	// visits counts the targets the checker looked at (for tests: a
	// steady group costs nothing per tick).
	visits atomic.Int64
}

type target struct {
	key    string
	rec    *Record
	modRev int64
	damper *health.Damper
	output string // output of the result that set damper's status
	next   time.Time
	// probing: a probe is in flight; writing: a write or removal is.
	probing, writing bool
	// criticalSince is when the stored record became critical (see
	// CriticalSince); zero otherwise. DeregisterCriticalAfter counts from
	// it, so a new leader goes on with the count rather than restarting it.
	criticalSince time.Time
	// holdUntil holds writes and removals back after one failed, until
	// the change that shows why (a lost CAS) or for an interval (no quorum).
	holdUntil time.Time
	// due is when the checker looks at t next, at index in the heap (-1:
	// not in it, nothing due). touched: a change being applied concerns t.
	due     time.Time
	index   int
	touched bool
}

type probeResult struct {
	t       *target
	checked Check // the check probed: a re-registration may change t's
	r       health.Result
}

type writeDone struct {
	t       *target
	written *Record // nil for a removal
	base    int64   // the revision the write was a CAS on
	rev     int64   // the revision it wrote (a committed update)
	err     error
}

// NewChecker returns a Checker; call Run.
func NewChecker(cfg CheckerConfig) *Checker {
	if cfg.Damping <= 0 {
		cfg.Damping = health.DefaultDamping
	}
	if cfg.Tick <= 0 {
		cfg.Tick = 100 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Checker{cfg: cfg, targets: map[string]*target{},
		results: make(chan probeResult), writes: make(chan writeDone)}
}

// Run checks until ctx ends, then waits for its probes and writes.
func (c *Checker) Run(ctx context.Context) {
	tick := time.NewTicker(c.cfg.Tick)
	defer tick.Stop()
	defer c.wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case pr := <-c.results:
			c.observe(ctx, pr)
		case wd := <-c.writes:
			c.written(ctx, wd)
		case <-tick.C:
			c.sync(ctx)
			c.step(ctx, time.Now())
		}
	}
}

// sync brings the targets up to date: a full load first (and after the
// history was trimmed past what was applied), then the changes since.
func (c *Checker) sync(ctx context.Context) {
	if !c.loaded {
		c.load(ctx)
		return
	}
	gen := c.cfg.Store.Generation()
	if gen == c.gen {
		return
	}
	changes, rev, err := c.cfg.Store.Changes(ctx, c.rev)
	if err != nil {
		if errors.Is(err, errs.Compacted) {
			c.cfg.Logger.Info("instance changes trimmed from the history: reloading", "after", c.rev)
			c.loaded = false
			c.load(ctx)
			return
		}
		c.cfg.Logger.Debug("instance changes not read", "err", err)
		return
	}
	c.gen, c.rev = gen, max(c.rev, rev)
	now := time.Now()
	for _, ch := range changes {
		c.apply(ch, now)
	}
	c.visitTouched(ctx, now)
}

// load reads every instance and heartbeat and reconciles the targets with
// them, keeping what it knew of the unchanged ones.
func (c *Checker) load(ctx context.Context) {
	if time.Now().Before(c.nextLoad) {
		return
	}
	gen := c.cfg.Store.Generation()
	start := time.Now()
	instances, beats, rev, err := c.cfg.Store.Load(ctx)
	// A load reads every instance: when it fails again and again, keep its
	// retries under a tenth of the leader's time.
	c.nextLoad = time.Now().Add(9 * time.Since(start))
	if err != nil {
		c.cfg.Logger.Debug("instances not loaded", "err", err)
		return
	}
	c.gen, c.rev, c.loaded, c.beats = gen, rev, true, beats
	now := time.Now()
	seen := make(map[string]bool, len(instances))
	for _, s := range instances {
		key := InstanceKey(s.Record.Service, s.Record.ID)
		seen[key] = true
		c.put(key, s.Record, s.ModRevision, now)
	}
	for key, t := range c.targets {
		if !seen[key] {
			c.forget(t)
		}
	}
	// Heartbeats may have changed for any of them: look at them all.
	for i, t := range c.touched {
		t.touched = false
		c.touched[i] = nil
	}
	c.touched = c.touched[:0]
	for _, t := range c.targets {
		c.visit(ctx, t, now)
	}
}

// apply applies one change; the targets it concerns are looked at once
// every change of the batch is applied (visitTouched).
func (c *Checker) apply(ch Change, now time.Time) {
	if strings.HasPrefix(ch.Key, HeartbeatsPrefix) {
		if ch.Deleted {
			delete(c.beats, ch.Key)
		} else {
			c.beats[ch.Key] = true
		}
		if service, id, ok := SplitKey(ch.Key); ok {
			if t := c.targets[InstanceKey(service, id)]; t != nil {
				c.touch(t)
			}
		}
		return
	}
	t := c.targets[ch.Key]
	switch {
	case ch.Deleted:
		if t != nil {
			c.forget(t)
		}
	case ch.Record == nil:
	case t != nil && ch.Revision <= t.modRev:
		// Already held: the checker's own write, adopted when it
		// committed.
	default:
		c.put(ch.Key, ch.Record, ch.Revision, now)
	}
}

// put makes r at modRev the record of key's target.
func (c *Checker) put(key string, r *Record, modRev int64, now time.Time) {
	t := c.targets[key]
	switch {
	case t == nil:
		t = &target{key: key, index: -1}
		c.targets[key] = t
		t.reset(r, c.cfg.Damping, now)
	case t.modRev == modRev:
		return
	case !SameCheck(t.rec, r):
		t.reset(r, c.cfg.Damping, now)
	default:
		if t.damper.Current().String() != r.Status {
			t.damper = seededDamper(c.cfg.Damping, r)
		}
	}
	t.rec, t.modRev = r, modRev
	// The change that shows why a write was lost has come.
	t.holdUntil = time.Time{}
	t.criticalSince = CriticalSince(t.rec)
	c.touch(t)
}

// forget drops a deregistered target; a probe or write in flight for it
// finds it gone.
func (c *Checker) forget(t *target) {
	delete(c.targets, t.key)
	c.schedule(t, time.Time{})
}

func (c *Checker) touch(t *target) {
	if !t.touched {
		t.touched = true
		c.touched = append(c.touched, t)
	}
}

func (c *Checker) visitTouched(ctx context.Context, now time.Time) {
	for i, t := range c.touched {
		t.touched = false
		c.touched[i] = nil
		if c.targets[t.key] == t {
			c.visit(ctx, t, now)
		}
	}
	c.touched = c.touched[:0]
}

// CriticalSince is when r's stored status became critical (zero when it is
// not critical): the status and LastCheckedMs change together, so that is
// LastCheckedMs, or the registration when that is later (a registrar that
// registers again is alive: the countdown to removal starts over). It is
// stored, so every leader counts from the same time.
func CriticalSince(r *Record) time.Time {
	if r.Status != Critical {
		return time.Time{}
	}
	return time.UnixMilli(max(r.LastCheckedMs, r.RegisteredMs, 1))
}

// reset starts t afresh for r: a new damper, and a first probe spread over
// the interval (or soon, when r was never checked).
func (t *target) reset(r *Record, damping int, now time.Time) {
	t.damper = seededDamper(damping, r)
	spread := r.Check.Interval
	if r.LastCheckedMs == 0 {
		spread = min(spread, time.Second)
	}
	t.next = now
	if spread > 0 {
		t.next = now.Add(rand.N(spread))
	}
}

// seededDamper is a damper that already holds r's stored status, so that
// only a change is reported; a never-checked r gets a fresh one, whose first
// result counts at once.
func seededDamper(n int, r *Record) *health.Damper {
	d := health.NewDamper(n)
	if r.LastCheckedMs != 0 {
		if s, err := health.ParseStatus(r.Status); err == nil {
			d.Observe(s)
		}
	}
	return d
}

// step looks at the targets whose due time has come.
func (c *Checker) step(ctx context.Context, now time.Time) {
	for _, t := range c.due.popDue(now) {
		c.visit(ctx, t, now)
	}
}

// visit starts what t needs now (a probe, a status write, a removal) and
// schedules when to look at it again; a probe or write in flight calls it
// again when it ends.
func (c *Checker) visit(ctx context.Context, t *target, now time.Time) {
	c.visits.Add(1)
	chk := t.rec.Check
	var due time.Time
	switch {
	case chk.Type == TypeTTL:
		st, out := health.Critical, "heartbeat missed: the lease expired"
		if c.beats[HeartbeatKey(t.rec.Service, t.rec.ID)] {
			st, out = health.Passing, "heartbeat alive"
		}
		if st.String() != t.rec.Status {
			c.write(ctx, t, st, out, now)
		}
	case chk.Probed():
		if !t.probing && !now.Before(t.next) {
			c.probe(ctx, t)
		}
		if cur := t.damper.Current(); cur != 0 && (cur.String() != t.rec.Status || t.rec.LastCheckedMs == 0) {
			c.write(ctx, t, cur, t.output, now)
		}
		if !t.probing {
			due = t.next
		}
	}
	if dca := chk.DeregisterCriticalAfter; dca > 0 && !t.criticalSince.IsZero() && !t.writing {
		if !now.Before(t.holdUntil) && now.Sub(t.criticalSince) >= dca {
			c.remove(ctx, t)
		} else {
			due = earliest(due, t.criticalSince.Add(dca))
		}
	}
	if now.Before(t.holdUntil) {
		// A write or removal may be held back: look again when it may go.
		due = earliest(due, t.holdUntil)
	}
	c.schedule(t, due)
}

// written ends a write. The checker writes only the status fields onto
// the exact record revision it holds (t.rec at t.modRev), so a committed
// write gives it that record at the revision written; a write that lost its
// CAS (a re-registration or deregistration beat it) changes nothing it
// holds: the change that follows brings the record that won.
func (c *Checker) written(ctx context.Context, wd writeDone) {
	t := wd.t
	t.writing = false
	if wd.err != nil {
		if ctx.Err() == nil {
			c.cfg.Logger.Debug("instance status not written", "key", t.key, "err", wd.err)
		}
		if t.modRev == wd.base {
			// Hold further writes until the change that shows why (a lost
			// CAS), or for an interval (no quorum).
			t.holdUntil = time.Now().Add(max(t.rec.Check.Interval, time.Second))
		}
		if c.targets[t.key] == t {
			c.visit(ctx, t, time.Now())
		}
		return
	}
	if wd.written == nil { // removed
		if c.targets[t.key] == t {
			c.forget(t)
		}
		return
	}
	if t.modRev == wd.base {
		t.rec, t.modRev = wd.written, wd.rev
		t.criticalSince = CriticalSince(t.rec)
	}
	// Otherwise a change applied during the write is this write or a
	// later one: what it brought is newer than what was written.
	if c.targets[t.key] == t {
		c.visit(ctx, t, time.Now())
	}
}

func (c *Checker) probe(ctx context.Context, t *target) {
	t.probing = true
	checked := t.rec.Check
	chk := checked.Probe()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		r := c.cfg.Prober.Probe(ctx, chk)
		select {
		case c.results <- probeResult{t, checked, r}:
		case <-ctx.Done():
		}
	}()
}

// observe feeds a probe result to its target's damper and schedules the
// next probe, spread by ±10% so probes that started together drift apart.
// While a change waits for confirmation the next probe comes after a
// quarter interval: damping then delays a death by about half an interval
// rather than a whole one.
func (c *Checker) observe(ctx context.Context, pr probeResult) {
	t := pr.t
	t.probing = false
	// Clamped: a stored record is not validated again (a restored backup
	// may hold any interval), and the jitter below panics on a negative one.
	iv := min(max(t.rec.Check.Interval, MinInterval), MaxInterval)
	if c.targets[t.key] != t || pr.checked != t.rec.Check {
		// Deregistered, or re-registered with another check: the result
		// says nothing about what is registered now, whose first probe
		// waited for this one to end.
		if c.targets[t.key] == t {
			c.visit(ctx, t, time.Now())
		}
		return
	}
	if pr.r.NotRun {
		// Nothing learned about the target: the status stays, damping
		// counts nothing, and the output says why (written once).
		if c.cfg.NotRun != nil {
			c.cfg.NotRun()
		}
		t.next = time.Now().Add(iv - iv/10 + rand.N(iv/5+1))
		if !strings.HasPrefix(t.rec.Output, "not run") {
			c.writeRecord(ctx, t, func(r *Record) { r.Output = pr.r.Output })
		}
		c.visit(ctx, t, time.Now())
		return
	}
	changed, cur := t.damper.Observe(pr.r.Status)
	if changed {
		t.output = pr.r.Output
	}
	if !changed && pr.r.Status != cur {
		iv = max(iv/4, MinInterval)
	}
	now := time.Now()
	t.next = now.Add(iv - iv/10 + rand.N(iv/5+1))
	c.visit(ctx, t, now)
}

// write commits a new status for t unless a write of t is in flight.
func (c *Checker) write(ctx context.Context, t *target, st health.Status, output string, now time.Time) {
	c.writeRecord(ctx, t, func(r *Record) {
		r.Status, r.Output, r.LastCheckedMs = st.String(), output, now.UnixMilli()
	})
}

// writeRecord commits t's record with the status fields set changes,
// unless a write of t is in flight or held back. It is a CAS on the exact
// revision t holds: nothing but the status fields ever differs.
func (c *Checker) writeRecord(ctx context.Context, t *target, set func(r *Record)) {
	if t.writing || time.Now().Before(t.holdUntil) {
		return
	}
	t.writing = true
	r := *t.rec
	set(&r)
	modRev := t.modRev
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		rev, err := c.cfg.Store.Update(ctx, &r, modRev)
		select {
		case c.writes <- writeDone{t: t, written: &r, base: modRev, rev: rev, err: err}:
		case <-ctx.Done():
		}
	}()
}

func (c *Checker) remove(ctx context.Context, t *target) {
	t.writing = true
	r, modRev := t.rec, t.modRev
	c.cfg.Logger.Info("deregistering critical instance", "service", r.Service, "id", r.ID,
		"critical_for", time.Since(t.criticalSince).Round(time.Millisecond))
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		err := c.cfg.Store.Remove(ctx, r, modRev)
		select {
		case c.writes <- writeDone{t: t, base: modRev, err: err}:
		case <-ctx.Done():
		}
	}()
}
