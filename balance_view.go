package dister

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/dister/dister/internal/balance"
	"github.com/dister/dister/internal/core"
	"github.com/dister/dister/internal/errs"
)

// start runs the goroutine that keeps v fresh until the Node closes or
// the view is dropped, reloading after any watch failure; false when the
// Node is closed. Changes apply to the view one at a time (a binary search
// and a move of pointers each); after each revision the view publishes a
// snapshot for Picks.
func (b *Balancer) start(service string, v *view) bool {
	n := b.s.n
	b.sweeper.Do(func() { n.spawn(b.sweep) })
	ctx, stop := context.WithCancel(n.life)
	v.stop = stop
	ok := n.spawn(func() {
		defer stop()
		var once sync.Once
		backoff := 50 * time.Millisecond
		var bv *balance.View[*Instance]
		publish := func() {
			v.size.Store(int64(bv.Len()))
			v.set.Store(bv.Set())
		}
		for {
			err := b.s.feed(ctx, service, feedFuncs{
				load: func(_ int64, insts []*Instance) bool {
					if bv == nil {
						bv = balance.NewView[*Instance](&v.rr)
					} else {
						// A reload after a failure: apply the difference,
						// so a hash ring is updated, not built anew.
						keep := make(map[string]bool, len(insts))
						for _, in := range insts {
							keep[in.ID] = true
						}
						for _, id := range bv.IDs() {
							if !keep[id] {
								bv.Delete(id)
							}
						}
					}
					for _, in := range insts {
						bv.Put(member(in))
					}
					b.heard(v, b.now())
					publish()
					once.Do(func() { close(v.ready) })
					backoff = 50 * time.Millisecond
					return true
				},
				put: func(in *Instance) { bv.Put(member(in)) },
				del: func(id string) { bv.Delete(id) },
				commit: func(rev int64) bool {
					b.heard(v, b.now())
					publish()
					return true
				},
				progress: func(rev int64) { b.heardAt(v, rev) },
				coalesce: true,
			})
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, errs.GroupNotFound) {
				// The group is gone (or never was): drop the view, so a
				// later Pick starts afresh and sees that.
				b.drop(service, v)
				once.Do(func() { v.err = err; close(v.ready) })
				return
			}
			n.log.Debug("balancer view of a service restarts", "service", service, "err", err)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	})
	if !ok {
		stop()
	}
	return ok
}

// heardAt records a progress note at rev: the view was current when the
// newest confirmation at or below rev was read.
func (b *Balancer) heardAt(v *view, rev int64) {
	for i := range b.confirms {
		if c := b.confirms[i].Load(); c != nil && c.rev <= rev {
			if c.at > v.heard.Load() {
				b.heard(v, c.at)
			}
			return
		}
	}
}

// heard records that v was current at at (since the epoch).
func (b *Balancer) heard(v *view, at int64) {
	v.heard.Store(at)
	if v.stale.Load() && b.now()-at <= int64(b.s.n.staleAfter) {
		v.stale.Store(false)
	}
}

// markStale flags the views that have not heard for longer than the bound.
func (b *Balancer) markStale() {
	now, bound := b.now(), int64(b.s.n.staleAfter)
	b.views.Range(func(_, v any) bool {
		vw := v.(*view)
		if vw.set.Load() != nil && now-vw.heard.Load() > bound && !vw.stale.Load() {
			vw.stale.Store(true)
			// The view may have heard in between: heard() saw no flag
			// to clear then.
			if b.now()-vw.heard.Load() <= bound {
				vw.stale.Store(false)
			}
		}
		return true
	})
}

// confirm reads the group's revision from its leader (linearizably) and
// asks every watch of the group on this Node for a progress note, so each
// view learns that it was current when that revision was read. A progress
// note alone says nothing about a partitioned server: its own replica
// still answers, so only a note at a confirmed revision counts.
func (b *Balancer) confirm(period time.Duration) {
	n := b.s.n
	ctx, cancel := context.WithTimeout(n.life, period)
	defer cancel()
	at := b.now()
	rev, err := n.e.Revision(ctx, b.s.group, core.ReadOpts{Consistency: core.Linearizable})
	if err != nil {
		n.log.Debug("balancer cannot confirm its views", "group", b.s.group, "err", err)
		return
	}
	b.confirms[1].Store(b.confirms[0].Load())
	b.confirms[0].Store(&confirmation{rev: rev, at: at})
	if err := n.e.RequestProgress(ctx, b.s.group); err != nil {
		n.log.Debug("balancer cannot ask for progress", "group", b.s.group, "err", err)
	}
}

// drop forgets v (if it is still service's view) and stops its watch.
func (b *Balancer) drop(service string, v *view) {
	if b.views.CompareAndDelete(service, v) {
		b.count.Add(-1)
	}
	v.stop()
}

// sweep drops, every sweep period, the views without instances that no
// Pick read since the previous sweep and the others that no Pick read for
// idleSweeps periods, and keeps the views' staleness bound confirmed.
func (b *Balancer) sweep() {
	life := b.s.n.life
	idle := b.idle
	if idle == 0 {
		idle = viewIdle
	}
	t := time.NewTicker(idle)
	defer t.Stop()
	var confirmC <-chan time.Time
	period := b.s.n.staleAfter / 3
	if period > 0 {
		ct := time.NewTicker(period)
		defer ct.Stop()
		confirmC = ct.C
	}
	for {
		select {
		case <-life.Done():
			return
		case <-confirmC:
			if b.count.Load() > 0 {
				// Staleness first, then the next confirmation: the
				// progress note of the previous round had a whole period
				// to arrive, so one slow or failed round on a loaded
				// machine does not make a healthy view stale (checked
				// right after confirming, the note of this round was not
				// in yet and the view looked a period older than it was).
				b.markStale()
				b.confirm(period)
			}
		case <-t.C:
			b.views.Range(func(k, v any) bool {
				vw := v.(*view)
				if vw.used.Swap(false) || vw.set.Load() == nil {
					vw.idle = 0
					return true
				}
				// Empty views go at once (Picks of names that never
				// exist would otherwise keep a watch each); others
				// after idleSweeps periods without a Pick.
				if vw.idle++; vw.size.Load() == 0 || vw.idle >= idleSweeps {
					b.drop(k.(string), vw)
				}
				return true
			})
		}
	}
}
