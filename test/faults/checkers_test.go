package faults

import (
	"fmt"
	"sort"
)

// checkSessions checks, per client (process), the session reads it made
// through any daemon with ?min_revision= carried: the answer is at least
// at the floor sent (monotonic reads), and a key reads at least at the
// client's own last acknowledged write of it (read-your-writes) and at the
// highest mod revision the client saw of it before. It returns the number
// of session reads checked and the violations.
func checkSessions(h []op) (int, []string) {
	byClient := map[int][]op{}
	for _, o := range h {
		if o.out == outOK {
			byClient[o.client] = append(byClient[o.client], o)
		}
	}
	checked := 0
	var bad []string
	for _, ops := range byClient {
		// A process runs one op at a time; order them by invocation.
		sort.Slice(ops, func(i, j int) bool { return ops[i].call < ops[j].call })
		seen := map[string]int64{} // key -> highest mod revision seen or written
		for _, o := range ops {
			if o.kind == opSessionRead {
				checked++
				if o.hdr < o.floor {
					bad = append(bad, fmt.Sprintf("session read answered at revision %d below its floor %d: %v", o.hdr, o.floor, o))
				}
				if o.rev < seen[o.key] {
					bad = append(bad, fmt.Sprintf("session read went back from mod revision %d: %v", seen[o.key], o))
				}
			}
			if o.kind != opCAS || o.ok {
				seen[o.key] = max(seen[o.key], o.rev)
			}
		}
	}
	return checked, bad
}

// watchEvent is one put event of a watch on the register prefix.
type watchEvent struct {
	rev   int64
	key   string
	value string
	node  int
	at    int64
}

// checkWatch checks the events a resuming watcher received against the
// history: revisions strictly increase (each revision's events arrive as
// one block, never twice), every event is a write that was invoked and
// not failed (at the revision its answer gave, if it answered), and every
// acknowledged write of the prefix is there. It returns the applied map
// for the linearizability check and the violations.
func checkWatch(h []op, events []watchEvent, inPrefix func(string) bool) (applied, []string) {
	var bad []string
	seen := applied{}
	var last int64
	for i, e := range events {
		if e.rev < last {
			bad = append(bad, fmt.Sprintf("watch revision %d after %d (event %d, key %s)", e.rev, last, i, e.key))
		}
		last = e.rev
		if prev, dup := seen[e.value]; dup {
			bad = append(bad, fmt.Sprintf("watch delivered value %q twice (revisions %d and %d)", e.value, prev, e.rev))
		}
		seen[e.value] = e.rev
	}
	writes := map[string]op{}
	for _, o := range h {
		if (o.kind == opWrite || o.kind == opCAS) && inPrefix(o.key) {
			writes[o.value] = o
		}
	}
	for _, e := range events {
		w, ok := writes[e.value]
		switch {
		case !ok:
			bad = append(bad, fmt.Sprintf("watch event %s=%q at %d matches no write", e.key, e.value, e.rev))
		case w.key != e.key:
			bad = append(bad, fmt.Sprintf("watch event %s=%q at %d: the value was written to %s", e.key, e.value, e.rev, w.key))
		case w.out == outFail:
			bad = append(bad, fmt.Sprintf("watch event %s=%q at %d: the write failed (%s), yet it applied: %v", e.key, e.value, e.rev, w.detail, w))
		case w.out == outOK && (w.kind == opWrite || w.ok) && w.rev != e.rev:
			bad = append(bad, fmt.Sprintf("watch event %s=%q at %d: the write answered revision %d", e.key, e.value, e.rev, w.rev))
		case w.out == outOK && w.kind == opCAS && !w.ok:
			bad = append(bad, fmt.Sprintf("watch event %s=%q at %d: the cas answered not succeeded: %v", e.key, e.value, e.rev, w))
		}
	}
	for _, w := range writes {
		if w.out == outOK && (w.kind == opWrite || w.ok) {
			if _, ok := seen[w.value]; !ok {
				bad = append(bad, fmt.Sprintf("acknowledged write missing from the watch: %v", w))
			}
		}
	}
	return seen, bad
}

// ackWrite is an acknowledged put of a key written once.
type ackWrite struct {
	key, value string
	rev        int64
}

// checkAcked checks that every acknowledged write is present with its
// value in final (a linearizable listing after every server restarted).
func checkAcked(acked []ackWrite, final map[string]entryJSON) []string {
	var bad []string
	for _, a := range acked {
		e, ok := final[a.key]
		switch {
		case !ok:
			bad = append(bad, fmt.Sprintf("acknowledged write lost: %s=%q at revision %d", a.key, a.value, a.rev))
		case e.Value == nil || *e.Value != a.value || e.ModRevision != a.rev:
			bad = append(bad, fmt.Sprintf("acknowledged write %s=%q at %d reads back as %+v", a.key, a.value, a.rev, e))
		}
	}
	return bad
}
