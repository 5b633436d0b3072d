// Package errs holds the sentinel errors that the public package re-exports.
// They live in a leaf package so that internal packages (fsm, shard, peer)
// can return them without importing the root package.
package errs

import "errors"

var (
	NotFound      = errors.New("dister: not found")
	Conflict      = errors.New("dister: conflict")
	Compacted     = errors.New("dister: revision compacted")
	NoQuorum      = errors.New("dister: no quorum")
	GroupNotFound = errors.New("dister: group not found")
	LeaseNotFound = errors.New("dister: lease not found")
	NoInstance    = errors.New("dister: no usable instance")
	WatchOverflow = errors.New("dister: watch buffer overflow")
	StaleView     = errors.New("dister: balancer view is stale")
	TooLarge      = errors.New("dister: too large")
	Invalid       = errors.New("dister: invalid argument")
	Closed        = errors.New("dister: closed")
	// UnknownOutcome: a write that may or may not have been applied.
	UnknownOutcome = errors.New("dister: outcome unknown")
	// Forbidden: the caller's token lacks the role or group an operation needs.
	Forbidden = errors.New("dister: forbidden")
)

// Mark makes err match sentinel with errors.Is while its message stays
// err's own: an operating-system error (address in use, permission denied)
// reads as the system said it, without a sentinel's text after it.
func Mark(err, sentinel error) error {
	if err == nil {
		return nil
	}
	return &marked{err: err, sentinel: sentinel}
}

type marked struct{ err, sentinel error }

func (m *marked) Error() string   { return m.err.Error() }
func (m *marked) Unwrap() []error { return []error{m.err, m.sentinel} }
