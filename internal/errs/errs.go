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
	TooLarge      = errors.New("dister: too large")
	Invalid       = errors.New("dister: invalid argument")
	Closed        = errors.New("dister: closed")
	// UnknownOutcome: a write that may or may not have been applied.
	UnknownOutcome = errors.New("dister: outcome unknown")
)
