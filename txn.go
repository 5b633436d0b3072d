package dister

import (
	"context"
	"fmt"

	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
)

// CompareTarget is what a Compare looks at.
type CompareTarget uint8

// Compare targets. A missing key has Version, ModRevision and
// CreateRevision 0 and an empty value.
const (
	CompareValue          CompareTarget = CompareTarget(fsm.TargetValue)
	CompareVersion                      = CompareTarget(fsm.TargetVersion)
	CompareModRevision                  = CompareTarget(fsm.TargetModRevision)
	CompareCreateRevision               = CompareTarget(fsm.TargetCreateRevision)
)

// CompareOp is how a Compare compares (values compare as bytes).
type CompareOp uint8

// Compare operators.
const (
	Equal    CompareOp = CompareOp(fsm.OpEqual)
	NotEqual           = CompareOp(fsm.OpNotEqual)
	Less               = CompareOp(fsm.OpLess)
	Greater            = CompareOp(fsm.OpGreater)
)

// Compare is one condition of a Txn: Target(Key) Op Value (for
// CompareValue) or Target(Key) Op Number (for the others).
type Compare struct {
	Key    string
	Target CompareTarget
	Op     CompareOp
	Value  []byte
	Number int64
}

// OpType is the kind of a Txn op.
type OpType uint8

// Txn op kinds.
const (
	OpPut          OpType = OpType(fsm.OpPut)
	OpDelete              = OpType(fsm.OpDelete)
	OpDeletePrefix        = OpType(fsm.OpDeletePrefix) // Key is the prefix
)

// Op is one write of a Txn.
type Op struct {
	Type  OpType
	Key   string
	Value []byte
	Lease LeaseID // OpPut: tie the key to this lease (0 = none)
}

// Put is an Op that writes key.
func Put(key string, value []byte) Op { return Op{Type: OpPut, Key: key, Value: value} }

// Del is an Op that removes key.
func Del(key string) Op { return Op{Type: OpDelete, Key: key} }

// DelPrefix is an Op that removes every key under prefix.
func DelPrefix(prefix string) Op { return Op{Type: OpDeletePrefix, Key: prefix} }

// Txn is an atomic transaction: if every compare in If holds, Then runs,
// otherwise Else. Ops run in order and later ops see earlier ones; all of
// them apply at one revision. At most MaxTxnOps compares and ops in all.
type Txn struct {
	If   []Compare
	Then []Op
	Else []Op
}

// TxnResult tells which branch ran and what it did.
type TxnResult struct {
	Succeeded bool    // If held and Then ran
	Revision  int64   // the revision of the transaction
	Deleted   []int64 // per op of the branch that ran: keys it removed (0 for a put)
}

// Txn runs t atomically.
func (kv *KV) Txn(ctx context.Context, t Txn) (*TxnResult, error) {
	ctx, cancel := kv.n.bound(ctx)
	defer cancel()
	if n := len(t.If) + len(t.Then) + len(t.Else); n > MaxTxnOps {
		return nil, fmt.Errorf("txn: %d compares and ops, over %d: %w", n, MaxTxnOps, errs.TooLarge)
	}
	ft := &fsm.Txn{
		Compares: make([]fsm.Compare, len(t.If)),
		Then:     toOps(t.Then),
		Else:     toOps(t.Else),
	}
	for i, c := range t.If {
		ft.Compares[i] = fsm.Compare{Key: c.Key, Target: fsm.Target(c.Target), Op: fsm.CompareOp(c.Op),
			Value: c.Value, Int: c.Number}
	}
	r, err := kv.n.e.Txn(ctx, kv.group, ft)
	if err != nil {
		return nil, fmt.Errorf("txn: %w", err)
	}
	res := &TxnResult{Succeeded: r.Succeeded, Revision: r.Revision, Deleted: make([]int64, len(r.Ops))}
	for i, o := range r.Ops {
		res.Deleted[i] = o.Deleted
	}
	return res, nil
}

func toOps(ops []Op) []fsm.Op {
	out := make([]fsm.Op, len(ops))
	for i, o := range ops {
		out[i] = fsm.Op{Type: fsm.OpType(o.Type), Key: o.Key, Value: o.Value, Lease: int64(o.Lease)}
	}
	return out
}
