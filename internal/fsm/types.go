// Package fsm is dister's replicated state machine: a key-value store on
// pebble whose every change is a command decoded from the Raft log. It does
// not import dragonboat; internal/shard adapts it to dragonboat's
// IOnDiskStateMachine.
//
// Everything a client writes is a Txn: a Put is a Txn with one Put op (and a
// compare for CAS), a Delete is a Txn with one Delete op. One code path keeps
// the atomicity and revision rules in one place.
//
// Besides the keys, the state holds the watch history (every change as an
// Event, trimmed deterministically; events.go) and leases with the keys
// attached to them (lease.go). Both are replicated state: written in
// Update, never from a clock or randomness, and carried by snapshots.
package fsm

// Limits enforced by Validate and by the codec.
const (
	MaxKeySize   = 4 << 10 // bytes
	MaxValueSize = 1 << 20 // bytes
	MaxTxnOps    = 128     // compares + then ops + else ops
	// MaxTxnBytes bounds the keys and values of one txn's compares and ops
	// together: a txn is one Raft entry, and one of 100 MiB (128 values of
	// 1 MiB would fit the other limits) took longer to replicate and sync
	// than an election timeout, so leaders lost their quorum over and over
	// and no write of the group went through. Checked where a command is
	// proposed (EncodeCommand, a server taking a client's command), not
	// when an entry is applied: one already in a log still applies.
	MaxTxnBytes  = 4 << 20
	MaxListLimit = 10000 // entries one list answers (ListQuery.Limit)

	// MaxLeaseTTL bounds a lease's TTL and a checkpoint's remaining time:
	// one year, in milliseconds. The smallest TTL the state machine takes is
	// 1 ms; a floor that makes sense against election timeouts is the
	// lessor's business.
	MaxLeaseTTL = 365 * 24 * 60 * 60 * 1000
	// MaxLeaseBatch bounds the ids of one KindLeaseRevoke and the
	// checkpoints of one KindLeaseCheckpoint.
	MaxLeaseBatch = 1024
)

// CmdKind tells what a command carries; it is the second byte of the
// encoded command (after the codec version).
type CmdKind uint8

const (
	// KindTxn carries Command.Txn; its result decodes with DecodeResult.
	KindTxn CmdKind = 1
	// KindLeaseGrant carries Command.Grant; its result decodes with
	// DecodeLeaseResult (Revision, ID, TTL). Granting an id that exists
	// fails with an error wrapping errs.Conflict.
	KindLeaseGrant CmdKind = 2
	// KindLeaseRevoke carries Command.Revoke; its result decodes with
	// DecodeLeaseResult (Revision, Deleted).
	KindLeaseRevoke CmdKind = 3
	// KindLeaseCheckpoint carries Command.Checkpoint; its result decodes
	// with DecodeLeaseResult (Revision).
	KindLeaseCheckpoint CmdKind = 4
	// KindLeaseEpoch carries Command.Epoch: a new group leader commits one
	// before its lessor answers keepalives, expires or checkpoints anything.
	// Its result decodes with DecodeLeaseResult (Revision, Epoch: the new
	// lessor epoch).
	KindLeaseEpoch CmdKind = 5
)

// Command is one Raft proposal. Session and Seq form the dedup id: Session is
// a random number chosen by each proposer (a Node) when it opens, Seq
// increases per proposal. A command with Session 0 is never deduplicated.
//
// Exactly-once (the client sessions of the Raft dissertation, section 6.3):
// Mark is the proposer's lowest Seq still unanswered when it encoded the
// command (every Seq below it was answered, or abandoned with an unknown
// outcome); the state machine keeps the results of a session's commands at
// or above the highest Mark it has seen, answers a repeated id from them,
// and refuses a command whose Seq is below that Mark (a late copy of one
// that was answered or abandoned). Time is the clock (Unix ms) of the
// server that proposed the command (a client node's command is stamped by
// the server that takes it, WithTime): a session whose newest Time is more
// than Options.SessionHorizon behind
// the newest Time of any command is forgotten, so the table is bounded by
// what is outstanding, never by a count of entries.
//
// Exactly one payload is set, the one its Kind names; the others are nil.
type Command struct {
	Session    uint64
	Seq        uint64
	Mark       uint64 // <= Seq; 0 = none (forgets nothing)
	Time       int64  // Unix ms, >= 0; 0 = unknown (moves no clock)
	Kind       CmdKind
	Txn        *Txn             // Kind == KindTxn
	Grant      *LeaseGrant      // Kind == KindLeaseGrant
	Revoke     *LeaseRevoke     // Kind == KindLeaseRevoke
	Checkpoint *LeaseCheckpoint // Kind == KindLeaseCheckpoint
	Epoch      *LeaseEpoch      // Kind == KindLeaseEpoch
}

// LeaseEpoch starts a new lessor epoch (the stored epoch + 1). Expiries and
// checkpoints carry the epoch their lessor runs under; Update refuses those
// of any other epoch, so a deposed leader can neither expire a lease that
// the new leader renews nor checkpoint a stale remaining time.
type LeaseEpoch struct{}

// LeaseGrant creates a lease. Leases carry no clock: the group leader counts
// TTLs down and proposes KindLeaseRevoke with Expired when one runs out.
type LeaseGrant struct {
	ID  int64 // >= 0; 0 = use the entry's index as the id
	TTL int64 // milliseconds, 1..MaxLeaseTTL
}

// LeaseRevoke removes leases and deletes every key attached to them (one
// delete event per key, all at the entry's revision).
//
// Without Expired (a client's Revoke) every id must exist when the command
// applies, else nothing changes and the command fails with an error wrapping
// errs.LeaseNotFound. With Expired (the leader's expiry of one or more
// leases) ids that no longer exist are skipped.
type LeaseRevoke struct {
	IDs     []int64 // 1..MaxLeaseBatch ids, each > 0
	Expired bool
	// Epoch (with Expired) is the lessor epoch the expiry was decided in:
	// an expiry of another epoch than the stored one changes nothing and
	// fails with an error wrapping errs.NoQuorum (its leader was deposed).
	Epoch uint64
}

// LeaseCheckpoint records the remaining TTL of leases, so a new leader does
// not restart their countdown at the full TTL forever; a renewal clears a
// lease's checkpoint (RemainingMs 0), so a new leader does not start a
// renewed lease at a remainder older than the renewal. Ids that do not exist
// are skipped. A checkpoint of another epoch than the stored one changes
// nothing and fails with an error wrapping errs.NoQuorum.
type LeaseCheckpoint struct {
	Checkpoints []LeaseRemaining // 1..MaxLeaseBatch
	Epoch       uint64
}

// LeaseRemaining is one lease's remaining time at a checkpoint.
type LeaseRemaining struct {
	ID int64 // > 0
	// RemainingMs: 0 clears the checkpoint (the lease was renewed), else
	// 1..MaxLeaseTTL, stored as min(RemainingMs, the lease's TTL).
	RemainingMs int64
}

// Target is what a Compare looks at.
type Target uint8

const (
	TargetValue Target = iota + 1
	TargetVersion
	TargetModRevision
	TargetCreateRevision
)

// CompareOp is how a Compare compares.
type CompareOp uint8

const (
	OpEqual CompareOp = iota + 1
	OpNotEqual
	OpLess
	OpGreater
)

// Compare is one condition of a Txn. A missing key has Version,
// ModRevision and CreateRevision 0 and an empty (nil) value, as in etcd.
type Compare struct {
	Key    string
	Target Target
	Op     CompareOp
	Value  []byte // TargetValue
	Int    int64  // the other targets
}

// OpType is the kind of a write op.
type OpType uint8

const (
	OpPut OpType = iota + 1
	OpDelete
	OpDeletePrefix // Key is the prefix; "" deletes every key
)

// Op is one write of a Txn.
type Op struct {
	Type  OpType
	Key   string
	Value []byte // OpPut
	// Lease attaches the key to a lease (OpPut; 0 = none, negative is
	// invalid). The lease must exist when the txn applies, else the whole
	// command fails with an error wrapping errs.LeaseNotFound and changes
	// nothing. A put replaces the key's lease: a put without one detaches it.
	Lease int64
}

// Txn: if every Compare holds, the Then ops run, otherwise the Else ops.
// All ops of one Txn apply at one revision. Revisions count the commands
// that changed at least one key (a put, or a delete of a key that existed):
// each such command gets the group's revision + 1, so revisions have no
// gaps; a command that changes no key keeps the revision as it is.
type Txn struct {
	Compares []Compare
	Then     []Op
	Else     []Op
}

// OpResult is the outcome of one op of the branch that ran.
type OpResult struct {
	Deleted int64 // OpDelete / OpDeletePrefix: keys removed
}

// TxnResult is what applying a Txn returns (also stored in the dedup table).
type TxnResult struct {
	Succeeded bool // the compares held (Then ran)
	// Revision is the revision of every change the txn made, or, when it
	// changed no key, the group's revision when it applied.
	Revision int64
	Ops      []OpResult
}

// Record is what is stored per key.
type Record struct {
	Value          []byte
	CreateRevision int64
	ModRevision    int64
	Version        int64
	Lease          int64
}

// KV is a Record with its key, as reads return it.
type KV struct {
	Key string
	Record
}

// Queries accepted by StateMachine.Lookup.
type (
	// GetQuery answers *GetResult.
	GetQuery struct{ Key string }
	// ListQuery answers *ListResult: keys with Prefix, sorted, strictly
	// after After (when set), at most Limit (0 = no limit; More tells if
	// some were left out).
	ListQuery struct {
		Prefix string
		After  string
		Limit  int
	}
	// RevisionQuery answers int64: the group's revision.
	RevisionQuery struct{}
	// EpochQuery answers uint64: the lessor epoch (0 before the first
	// KindLeaseEpoch).
	EpochQuery struct{}
	// EventsQuery answers *EventsResult: the watch events with revision >=
	// From (From >= 1), in (revision, sequence) order, at most Limit of them
	// (0 = DefaultEventsLimit) except that a page never ends inside a
	// revision: it may exceed Limit to finish the last revision it holds.
	// From below the compact revision fails with a *CompactedError (which
	// matches errs.Compacted and carries CompactRevision) and no result.
	EventsQuery struct {
		From  int64
		Limit int
	}
	// LeasesQuery answers *LeasesResult: every lease (without Keys).
	LeasesQuery struct{}
	// LeaseQuery answers *LeaseInfo with Keys, or an error wrapping
	// errs.LeaseNotFound.
	LeaseQuery struct{ ID int64 }
)

// DefaultEventsLimit is EventsQuery's page size when Limit is 0.
const DefaultEventsLimit = 1000

// EventType tells a put from a delete.
type EventType uint8

const (
	EventPut    EventType = 1
	EventDelete EventType = 2
)

// Event is one change made by a command. All events of one entry share its
// revision; a txn's come in op order, a prefix delete's and a lease
// revocation's in key order.
type Event struct {
	Type     EventType
	Revision int64
	// KV is, for a put, the new entry; for a delete, Key and ModRevision
	// (the delete's revision) only.
	KV KV
	// Prev is the key's entry before the change; nil when it did not exist.
	Prev *KV
}

// EventsResult is one consistent page of events.
type EventsResult struct {
	Events []Event
	// Revision is the revision of the read view: with More false the caller
	// has seen every event up to it and continues from Revision+1.
	Revision int64
	// CompactRevision is the lowest revision a query may start from (1
	// until the first trim).
	CompactRevision int64
	// More is set when events after this page exist in the view.
	More bool
}

// LeaseInfo describes one lease.
type LeaseInfo struct {
	ID        int64
	TTL       int64    // ms
	Remaining int64    // ms at the last checkpoint; 0 = no checkpoint
	Keys      []string // LeaseQuery only: the attached keys, sorted
	Revision  int64    // LeaseQuery only: revision of the read view
}

// LeasesResult lists every lease, by id.
type LeasesResult struct {
	Leases   []LeaseInfo
	Revision int64
}

// LeaseResult is what a lease command returns (see DecodeLeaseResult).
type LeaseResult struct {
	Revision int64  // the revision of the deletions it made, or the group's revision
	ID       int64  // KindLeaseGrant: the lease's id
	TTL      int64  // KindLeaseGrant: its TTL, ms
	Deleted  int64  // KindLeaseRevoke: keys deleted
	Epoch    uint64 // KindLeaseEpoch: the new lessor epoch
}

// GetResult: Found false means the key does not exist at Revision.
type GetResult struct {
	KV       KV
	Found    bool
	Revision int64 // revision of the read view
}

// ListResult is one consistent page of a List.
type ListResult struct {
	KVs      []KV
	More     bool
	Revision int64
}

// Entry is one committed log entry handed to Update; Update fills Result.
type Entry struct {
	Index  uint64
	Cmd    []byte
	Result Result
}

// Result mirrors dragonboat's: Value is the entry's index, Data the encoded
// TxnResult (KindTxn) or LeaseResult (lease kinds), or for a command that
// failed deterministically (bad encoding, invalid txn, missing lease,
// duplicate grant, stale lessor epoch, a stale copy of an answered command)
// Value 0 and Data the encoded error (see DecodeResult/DecodeLeaseResult).
// A repeated command (same dedup id, still kept) gets the first one's
// Result again.
type Result struct {
	Value uint64
	Data  []byte
}
