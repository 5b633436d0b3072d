package cache

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// A model of a filtered feed: a server with history, a send loop that
// filters and coalesces, changes acked in order, stream resume; readers
// that read at any revision (lagging servers), fail, and fill; a warm-up;
// keys that share hashes. It checks, after every step, that every cached
// key holds its value as of the revision Lookup reports, and once
// everything settled, that no key is followed without being cached and
// that the server's filter is what the client's counts say.
type simFrame struct {
	rev  int64
	evs  []Event[int]
	ack  uint64
	prog bool
}

func simHash(k string) uint64 { return uint64(k[1]-'0') / 2 } // k0,k1 -> 0; k2,k3 -> 1; k4,k5 -> 2

func TestFilteredFeedModel(t *testing.T) {
	seeds := uint64(3000)
	if testing.Short() {
		seeds = 300
	}
	for seed := range seeds {
		if msg := simRun(seed); msg != "" {
			t.Fatalf("seed %d: %s", seed, msg)
		}
	}
}

func simRun(seed uint64) string {
	r := rand.New(rand.NewPCG(seed, 7))
	keys := []string{"k0", "k1", "k2", "k3", "k4", "k5"}
	hist := map[string][]int64{} // key -> revisions written (value = rev)
	var rev int64 = 1
	// writes: hist[k] holds rev (put) or -rev (delete)
	valAt := func(k string, at int64) (int, bool) {
		v, found := 0, false
		for _, w := range hist[k] {
			a := w
			if a < 0 {
				a = -a
			}
			if a <= at {
				if w > 0 {
					v, found = int(w), true
				} else {
					v, found = 0, false
				}
			}
		}
		return v, found
	}
	c := NewFiltered[int](3, 100, simHash)
	c.Reset(rev)
	// server
	filter := map[uint64]bool{}
	last := rev
	var queue []int64 // revisions not yet passed
	var changes []*Change
	var inbound []simFrame
	var log []string
	type reader struct {
		key string
		at  int64
	}
	var readers []reader
	for step := 0; step < 300; step++ {
		op := r.IntN(10)
		switch op {
		case 0: // write
			rev++
			k := keys[r.IntN(len(keys))]
			if r.IntN(4) == 0 {
				hist[k] = append(hist[k], -rev)
			} else {
				hist[k] = append(hist[k], rev)
			}
			queue = append(queue, rev)
			log = append(log, fmt.Sprintf("write %s@%d", k, rev))
		case 1: // server passes a frame or applies a change
			if len(changes) > 0 && (len(queue) == 0 || r.IntN(2) == 0) {
				ch := changes[0]
				changes = changes[1:]
				for _, h := range ch.Remove {
					delete(filter, h)
				}
				for _, h := range ch.Add {
					filter[h] = true
				}
				inbound = append(inbound, simFrame{rev: last, ack: ch.Seq})
				log = append(log, fmt.Sprintf("server ack %d@%d", ch.Seq, last))
			} else if len(queue) > 0 {
				fr := queue[0]
				queue = queue[1:]
				last = max(last, fr)
				var kept []Event[int]
				for _, k := range keys {
					for _, w := range hist[k] {
						if w == fr || w == -fr {
							if filter[simHash(k)] {
								kept = append(kept, Event[int]{Key: k, Value: int(w), Found: w > 0})
							}
						}
					}
				}
				if len(kept) == 0 && len(queue) > 0 {
					log = append(log, fmt.Sprintf("server drops %d", fr))
					continue
				}
				inbound = append(inbound, simFrame{rev: fr, evs: kept, prog: len(kept) == 0})
				log = append(log, fmt.Sprintf("server sends %d %v", fr, kept))
			}
		case 2, 3: // client delivers
			if len(inbound) == 0 {
				continue
			}
			fr := inbound[0]
			inbound = inbound[1:]
			switch {
			case fr.ack != 0:
				c.Ack(fr.ack, fr.rev)
			case fr.prog:
				c.Progress(fr.rev)
			default:
				c.Apply(fr.rev, fr.evs)
			}
			log = append(log, fmt.Sprintf("client gets %+v", fr))
		case 4: // send follows
			if ch := c.TakeChange(1); ch != nil {
				changes = append(changes, ch)
				log = append(log, fmt.Sprintf("client change %+v", *ch))
			}
		case 5: // a reader starts: follow, read at some revision <= rev
			k := keys[r.IntN(len(keys))]
			if _, _, _, ok, _ := c.Lookup(k); ok {
				continue
			}
			c.Follow(k)
			at := rev - int64(r.IntN(6))
			if at < 1 {
				at = 1
			}
			readers = append(readers, reader{k, at})
			log = append(log, fmt.Sprintf("reader %s reads @%d", k, at))
		case 6, 7: // a reader ends
			if len(readers) == 0 {
				continue
			}
			i := r.IntN(len(readers))
			rd := readers[i]
			readers = append(readers[:i], readers[i+1:]...)
			if r.IntN(5) == 0 {
				c.Unfollow(rd.key)
				log = append(log, fmt.Sprintf("reader %s fails", rd.key))
			} else {
				v, found := valAt(rd.key, rd.at)
				ok := c.Fill(rd.key, v, found, rd.at)
				log = append(log, fmt.Sprintf("reader %s fills %d/%v@%d: %v", rd.key, v, found, rd.at, ok))
			}
		case 9: // warm-up lists a key at some revision
			k := keys[r.IntN(len(keys))]
			at := rev - int64(r.IntN(4))
			if at < 1 {
				at = 1
			}
			if v, found := valAt(k, at); found {
				room := c.Warm(k, v, at)
				log = append(log, fmt.Sprintf("warm %s %d@%d: %v", k, v, at, room))
			}
		case 8: // stream breaks, resumes on another server from pos+1
			if r.IntN(4) != 0 {
				continue
			}
			pos, _ := c.Pos()
			hs, waiting := c.FollowedHashes()
			filter = map[uint64]bool{}
			for _, h := range hs {
				filter[h] = true
			}
			last = pos
			queue = nil
			for x := pos + 1; x <= rev; x++ {
				queue = append(queue, x)
			}
			changes, inbound = nil, nil
			c.Opened(waiting, pos)
			log = append(log, fmt.Sprintf("resume from %d hashes %v waiting %v", pos+1, hs, waiting))
		}
		for _, k := range keys {
			v, found, at, ok, _ := c.Lookup(k)
			if !ok {
				continue
			}
			wv, wf := valAt(k, at)
			if found != wf || (found && v != wv) {
				return fmt.Sprintf("%s cached %d/%v at %d, truth %d/%v\n%v", k, v, found, at, wv, wf, log)
			}
		}
	}
	// Quiesce: readers end, changes go and are acked, frames delivered.
	for _, rd := range readers {
		v, found := valAt(rd.key, rd.at)
		c.Fill(rd.key, v, found, rd.at)
	}
	for i := 0; i < 50; i++ {
		if ch := c.TakeChange(1); ch != nil {
			changes = append(changes, ch)
		}
		for _, ch := range changes {
			for _, h := range ch.Remove {
				delete(filter, h)
			}
			for _, h := range ch.Add {
				filter[h] = true
			}
			inbound = append(inbound, simFrame{rev: last, ack: ch.Seq})
		}
		changes = nil
		for _, fr := range inbound {
			if fr.ack != 0 {
				c.Ack(fr.ack, fr.rev)
			} else if fr.prog {
				c.Progress(fr.rev)
			} else {
				c.Apply(fr.rev, fr.evs)
			}
		}
		inbound = nil
	}
	var leaked []string
	for k := range c.filter.follows {
		if !c.lru.Contains(k) {
			leaked = append(leaked, k)
		}
	}
	if len(leaked) > 0 {
		return fmt.Sprintf("followed, not cached, nothing in flight: %v", leaked)
	}
	if len(filter) != len(c.filter.counts) {
		return fmt.Sprintf("server filter %v, client counts %v", filter, c.filter.counts)
	}
	return ""
}
