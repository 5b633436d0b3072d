package dister

import (
	"errors"

	"github.com/dister/dister/internal/errs"
)

// Sentinel errors. Every error dister returns matches one of them with
// errors.Is, except that context errors (context.DeadlineExceeded,
// context.Canceled) are returned as they are. An error can match both: a
// call that ran out of time because no majority was reachable matches
// context.DeadlineExceeded and ErrNoQuorum.
var (
	// ErrNotFound: the key (or server) does not exist.
	ErrNotFound = errs.NotFound
	// ErrConflict: a compare-and-swap condition did not hold, or a name or
	// id is taken.
	ErrConflict = errs.Conflict
	// ErrCompacted: a watch asked for history older than what is kept.
	ErrCompacted = errs.Compacted
	// ErrNoQuorum: no leader or no majority could be reached (a write that
	// returns it, without ErrUnknownOutcome, was not applied).
	ErrNoQuorum = errs.NoQuorum
	// ErrGroupNotFound: the group does not exist.
	ErrGroupNotFound = errs.GroupNotFound
	// ErrLeaseNotFound: the lease does not exist or expired.
	ErrLeaseNotFound = errs.LeaseNotFound
	// ErrNoInstance: no usable service instance.
	ErrNoInstance = errs.NoInstance
	// ErrStaleView: a Pick's local view of the service has not heard from
	// the cluster for longer than Options.BalancerStaleAfter (a partitioned
	// node); Fresh() reads the registry instead.
	ErrStaleView = errs.StaleView
	// ErrWatchOverflow: a watcher fell too far behind and was cancelled.
	// Servers of this version no longer end a watch so (a watcher that
	// falls behind reads on from history); a client node resumes the
	// watch elsewhere when a server of an earlier version does.
	ErrWatchOverflow = errs.WatchOverflow
	// ErrTooLarge: a key, value, transaction or result over its limit.
	ErrTooLarge = errs.TooLarge
	// ErrInvalid: malformed input; nothing was changed.
	ErrInvalid = errs.Invalid
	// ErrClosed: the Node was closed (a write that returns it was not
	// applied).
	ErrClosed = errs.Closed
	// ErrUnknownOutcome: a write that may or may not have been applied: it
	// reached the cluster but no answer came back in time (a leader change,
	// a lost majority, Close, or ctx ending while it was in flight). It is
	// joined with the ctx error when ctx ended. Read before writing again:
	// a retry of the same call is a new write. ErrNoQuorum and ErrClosed,
	// in contrast, mean that the write was surely not applied.
	ErrUnknownOutcome = errs.UnknownOutcome
	// ErrForbidden: a token (REST or a client-role node's Options.Token)
	// that is unknown, or lacks the role or group the operation needs
	// (tokens.go). REST answers 401 for a missing or unknown token and 403
	// forbidden for a wrong role or group.
	ErrForbidden = errs.Forbidden
)

// ErrInsecureTransport: Open refused a server whose Raft or peer address is
// not on a loopback host while Options.TLS is nil and
// Options.InsecureTransport is false: anyone who reaches those ports could
// join the cluster or read and write everything. It also matches
// ErrInvalid.
var ErrInsecureTransport = errors.New("insecure transport")
