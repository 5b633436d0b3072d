package health

// DefaultDamping is the number of consecutive identical results a Damper
// needs before it reports a new status. 2 absorbs a single lost packet or
// GC pause without delaying a real outage by more than one interval.
const DefaultDamping = 2

// Damper damps flapping: the reported status changes only after n
// consecutive results agree on a new one, so a status is written through
// Raft only when it really changed. The first result is adopted at once, so
// a new instance gets a status after one probe. A Damper belongs to one
// check loop and is not safe for concurrent use.
type Damper struct {
	n       int
	started bool
	current Status
	next    Status
	streak  int
}

// NewDamper returns a Damper needing n agreeing results; n < 1 means
// DefaultDamping, and 1 means no damping.
func NewDamper(n int) *Damper {
	if n < 1 {
		n = DefaultDamping
	}
	return &Damper{n: n}
}

// Observe feeds one result and returns whether the reported status changed
// and what it is now.
func (d *Damper) Observe(s Status) (changed bool, current Status) {
	if !d.started {
		d.started, d.current, d.streak = true, s, 0
		return true, s
	}
	if s == d.current {
		d.streak = 0
		return false, d.current
	}
	if s != d.next {
		d.next, d.streak = s, 0
	}
	d.streak++
	if d.streak >= d.n {
		d.current, d.streak = s, 0
		return true, s
	}
	return false, d.current
}

// Current is the reported status; zero before the first Observe.
func (d *Damper) Current() Status { return d.current }
