package faults

import (
	"fmt"
	"sort"
	"sync"
	"time"
)

// opKind is what a recorded operation did.
type opKind uint8

const (
	opRead        opKind = iota // linearizable GET
	opWrite                     // PUT
	opCAS                       // txn: put value if the key holds old
	opSessionRead               // GET ?consistency=session&min_revision=floor
)

func (k opKind) String() string {
	return [...]string{"read", "write", "cas", "session-read"}[k]
}

// op is one recorded operation: invoke at call, completion at ret (both
// nanoseconds since the recorder began, from the monotonic clock).
type op struct {
	client int // process id: a client that saw an unknown outcome takes a new one
	node   int
	kind   opKind
	key    string
	value  string // written (write, cas) or read (read, session-read; "" = absent)
	old    string // cas: the value compared against
	out    outcome
	ok     bool  // cas: succeeded
	rev    int64 // write/cas: the write's revision; reads: the entry's mod_revision
	hdr    int64 // X-Dister-Revision of the answer
	floor  int64 // session-read: the min_revision sent
	call   int64
	ret    int64
	detail string // the answer of a failed or unknown op
}

func (o op) String() string {
	s := fmt.Sprintf("[%s..%s] c%d n%d %s %s", fmtNS(o.call), fmtNS(o.ret), o.client, o.node, o.kind, o.key)
	switch o.kind {
	case opWrite:
		s += fmt.Sprintf(" := %q", o.value)
	case opCAS:
		s += fmt.Sprintf(" %q -> %q ok=%v", o.old, o.value, o.ok)
	case opSessionRead:
		s += fmt.Sprintf(" (floor %d) = %q", o.floor, o.value)
	default:
		s += fmt.Sprintf(" = %q", o.value)
	}
	s += fmt.Sprintf(" %v rev=%d hdr=%d", o.out, o.rev, o.hdr)
	if o.detail != "" {
		s += " " + o.detail
	}
	return s
}

func fmtNS(ns int64) string { return fmt.Sprintf("%.3fs", float64(ns)/1e9) }

// recorder keeps a run's history; safe for concurrent use.
type recorder struct {
	start time.Time
	mu    sync.Mutex
	ops   []op
}

func newRecorder() *recorder { return &recorder{start: time.Now()} }

// now is the time since the recorder began, monotonic.
func (r *recorder) now() int64 { return int64(time.Since(r.start)) }

func (r *recorder) add(o op) {
	r.mu.Lock()
	r.ops = append(r.ops, o)
	r.mu.Unlock()
}

// all is a copy of the history, sorted by invocation.
func (r *recorder) all() []op {
	r.mu.Lock()
	out := append([]op(nil), r.ops...)
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].call < out[j].call })
	return out
}
