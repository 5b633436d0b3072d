// Package fsm is dister's replicated state machine: a key-value store on
// pebble whose every change is a command decoded from the Raft log. It does
// not import dragonboat; internal/shard adapts it to dragonboat's
// IOnDiskStateMachine.
//
// Everything a client writes is a Txn: a Put is a Txn with one Put op (and a
// compare for CAS), a Delete is a Txn with one Delete op. One code path keeps
// the atomicity and revision rules in one place.
package fsm

// Limits enforced by Validate and by the codec.
const (
	MaxKeySize   = 4 << 10 // bytes
	MaxValueSize = 1 << 20 // bytes
	MaxTxnOps    = 128     // compares + then ops + else ops
)

// CmdKind tells what a command carries; it is the second byte of the
// encoded command (after the codec version).
type CmdKind uint8

const (
	KindTxn CmdKind = 1
)

// Command is one Raft proposal. Session and Seq form the dedup id: Session is
// a random number chosen by each Node when it opens, Seq increases per
// proposal. A command with Session 0 is never deduplicated.
type Command struct {
	Session uint64
	Seq     uint64
	Kind    CmdKind
	Txn     *Txn // Kind == KindTxn
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
	Lease int64  // OpPut; 0 = none
}

// Txn: if every Compare holds, the Then ops run, otherwise the Else ops.
// All ops of one Txn apply at one revision (the entry's Raft index).
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
	Succeeded bool  // the compares held (Then ran)
	Revision  int64 // the entry's index; the revision of every change it made
	Ops       []OpResult
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
	// RevisionQuery answers int64: the applied index.
	RevisionQuery struct{}
)

// GetResult: Found false means the key does not exist at Revision.
type GetResult struct {
	KV       KV
	Found    bool
	Revision int64 // applied index the read saw
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

// Result mirrors dragonboat's: Value is the revision (the entry index), Data
// the encoded TxnResult, or for a command that failed deterministically
// (bad encoding, invalid txn) Value 0 and Data the encoded error (see
// EncodeError/DecodeResult).
type Result struct {
	Value uint64
	Data  []byte
}
