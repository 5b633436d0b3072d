package fsm

import (
	"encoding/binary"
	"fmt"

	"github.com/dister/dister/internal/errs"
)

// Command encoding (codec version 2):
//
//	byte    codec version (2)
//	byte    CmdKind
//	uvarint Session, uvarint Seq, uvarint Mark, varint Time
//	KindTxn:             uvarint n, n × compare; uvarint n, n × op (Then); uvarint n, n × op (Else)
//	KindLeaseGrant:      varint ID, varint TTL
//	KindLeaseRevoke:     byte Expired (0 or 1), uvarint Epoch, uvarint n, n × varint id
//	KindLeaseCheckpoint: uvarint Epoch, uvarint n, n × (varint id, varint RemainingMs)
//	KindLeaseEpoch:      nothing more
//	compare: uvarint len + key, byte Target, byte CompareOp,
//	         then uvarint len + value (TargetValue) or varint Int (other targets)
//	op:      byte OpType, uvarint len + key, and for OpPut uvarint len + value, varint Lease
//
// Version 1 (still decoded, for logs written before version 2) has no Mark
// and Time in the header, no Epoch in KindLeaseRevoke and
// KindLeaseCheckpoint, no KindLeaseEpoch, and no RemainingMs 0.
//
// Fields that a target or op type does not use (Compare.Int of a value
// compare, Op.Value of a delete, ...) are not encoded. Trailing bytes are an
// error, so one command has one meaning.
const (
	cmdCodecVersion   = 2
	cmdCodecVersionV1 = 1
)

// Result encoding: byte version (1), byte tag, then for resultTxn
// byte succeeded, varint Revision, uvarint n, n × varint Deleted; for
// resultLease varint Revision, varint ID, varint TTL, varint Deleted; for
// resultEpoch varint Revision, uvarint Epoch; for resultError byte code,
// uvarint len + message.
const (
	resultCodecVersion = 1

	resultTxn   = 1
	resultError = 2
	resultLease = 3
	resultEpoch = 4

	errCodeOther         = 0
	errCodeInvalid       = 1
	errCodeTooLarge      = 2
	errCodeConflict      = 3
	errCodeLeaseNotFound = 4
	errCodeNoQuorum      = 5 // a deposed lessor's expiry or checkpoint
	errCodeStale         = 6 // a late copy of a command already answered or abandoned

	maxErrorMessage = 4 << 10
)

// EncodeCommand validates c (a txn's size too, see MaxTxnBytes) and
// returns its encoding.
func EncodeCommand(c *Command) ([]byte, error) {
	if err := ValidateCommand(c); err != nil {
		return nil, err
	}
	if c.Kind == KindTxn {
		if err := CheckTxnSize(c.Txn); err != nil {
			return nil, err
		}
	}
	return encodeCommand(c), nil
}

// ValidateCommand checks that c has a known kind, exactly the payload of
// that kind, and that the payload is within the limits (see ValidateTxn and
// the lease types). Sizes over a limit wrap errs.TooLarge, everything else
// errs.Invalid.
func ValidateCommand(c *Command) error {
	if c == nil {
		return fmt.Errorf("nil command: %w", errs.Invalid)
	}
	if c.Session != 0 && c.Mark > c.Seq {
		return fmt.Errorf("command mark %d above its seq %d: %w", c.Mark, c.Seq, errs.Invalid)
	}
	if c.Time < 0 {
		return fmt.Errorf("negative command time %d: %w", c.Time, errs.Invalid)
	}
	payloads := 0
	for _, set := range [...]bool{c.Txn != nil, c.Grant != nil, c.Revoke != nil, c.Checkpoint != nil, c.Epoch != nil} {
		if set {
			payloads++
		}
	}
	switch c.Kind {
	case KindTxn:
		if err := ValidateTxn(c.Txn); err != nil {
			return err
		}
	case KindLeaseGrant:
		g := c.Grant
		if g == nil {
			return fmt.Errorf("lease grant without payload: %w", errs.Invalid)
		}
		if g.ID < 0 {
			return fmt.Errorf("lease grant: negative id %d: %w", g.ID, errs.Invalid)
		}
		if g.TTL < 1 || g.TTL > MaxLeaseTTL {
			return fmt.Errorf("lease grant: TTL %d ms outside 1..%d: %w", g.TTL, int64(MaxLeaseTTL), errs.Invalid)
		}
	case KindLeaseRevoke:
		r := c.Revoke
		if r == nil {
			return fmt.Errorf("lease revoke without payload: %w", errs.Invalid)
		}
		if len(r.IDs) == 0 {
			return fmt.Errorf("lease revoke: no ids: %w", errs.Invalid)
		}
		if len(r.IDs) > MaxLeaseBatch {
			return fmt.Errorf("lease revoke: %d ids, more than %d: %w", len(r.IDs), MaxLeaseBatch, errs.TooLarge)
		}
		for i, id := range r.IDs {
			if id <= 0 {
				return fmt.Errorf("lease revoke: id %d at %d is not positive: %w", id, i, errs.Invalid)
			}
		}
	case KindLeaseCheckpoint:
		cp := c.Checkpoint
		if cp == nil {
			return fmt.Errorf("lease checkpoint without payload: %w", errs.Invalid)
		}
		if len(cp.Checkpoints) == 0 {
			return fmt.Errorf("lease checkpoint: no leases: %w", errs.Invalid)
		}
		if len(cp.Checkpoints) > MaxLeaseBatch {
			return fmt.Errorf("lease checkpoint: %d leases, more than %d: %w", len(cp.Checkpoints), MaxLeaseBatch, errs.TooLarge)
		}
		for i, l := range cp.Checkpoints {
			if l.ID <= 0 {
				return fmt.Errorf("lease checkpoint %d: id %d is not positive: %w", i, l.ID, errs.Invalid)
			}
			if l.RemainingMs < 0 || l.RemainingMs > MaxLeaseTTL {
				return fmt.Errorf("lease checkpoint %d: remaining %d ms outside 0..%d: %w", i, l.RemainingMs, int64(MaxLeaseTTL), errs.Invalid)
			}
		}
	case KindLeaseEpoch:
		if c.Epoch == nil {
			return fmt.Errorf("lease epoch without payload: %w", errs.Invalid)
		}
	default:
		return fmt.Errorf("unknown command kind %d: %w", c.Kind, errs.Invalid)
	}
	if payloads != 1 {
		return fmt.Errorf("command of kind %d carries %d payloads, want 1: %w", c.Kind, payloads, errs.Invalid)
	}
	return nil
}

// encodeCommand encodes c without validating it (tests use it to forge
// invalid commands). The payload of c.Kind must not be nil.
func encodeCommand(c *Command) []byte {
	switch c.Kind {
	case KindLeaseEpoch:
		return appendCmdHeader(make([]byte, 0, 2+4*binary.MaxVarintLen64), c)
	case KindLeaseGrant:
		b := make([]byte, 0, 2+6*binary.MaxVarintLen64)
		b = appendCmdHeader(b, c)
		b = binary.AppendVarint(b, c.Grant.ID)
		return binary.AppendVarint(b, c.Grant.TTL)
	case KindLeaseRevoke:
		r := c.Revoke
		b := make([]byte, 0, 3+(6+len(r.IDs))*binary.MaxVarintLen64)
		b = appendCmdHeader(b, c)
		expired := byte(0)
		if r.Expired {
			expired = 1
		}
		b = append(b, expired)
		b = binary.AppendUvarint(b, r.Epoch)
		b = binary.AppendUvarint(b, uint64(len(r.IDs)))
		for _, id := range r.IDs {
			b = binary.AppendVarint(b, id)
		}
		return b
	case KindLeaseCheckpoint:
		cps := c.Checkpoint.Checkpoints
		b := make([]byte, 0, 2+(6+2*len(cps))*binary.MaxVarintLen64)
		b = appendCmdHeader(b, c)
		b = binary.AppendUvarint(b, c.Checkpoint.Epoch)
		b = binary.AppendUvarint(b, uint64(len(cps)))
		for _, l := range cps {
			b = binary.AppendVarint(b, l.ID)
			b = binary.AppendVarint(b, l.RemainingMs)
		}
		return b
	}
	t := c.Txn
	// Size first so the whole command is one allocation: large values would
	// otherwise be copied several times while the slice grows.
	n := 2 + 4*binary.MaxVarintLen64 + 3*binary.MaxVarintLen64
	for i := range t.Compares {
		n += 2 + 2*binary.MaxVarintLen64 + len(t.Compares[i].Key) + len(t.Compares[i].Value)
	}
	for _, ops := range [2][]Op{t.Then, t.Else} {
		for i := range ops {
			n += 1 + 3*binary.MaxVarintLen64 + len(ops[i].Key) + len(ops[i].Value)
		}
	}
	b := make([]byte, 0, n)
	b = appendCmdHeader(b, c)
	b = binary.AppendUvarint(b, uint64(len(t.Compares)))
	for i := range t.Compares {
		cmp := &t.Compares[i]
		b = appendString(b, cmp.Key)
		b = append(b, byte(cmp.Target), byte(cmp.Op))
		if cmp.Target == TargetValue {
			b = appendBytes(b, cmp.Value)
		} else {
			b = binary.AppendVarint(b, cmp.Int)
		}
	}
	b = appendOps(b, t.Then)
	return appendOps(b, t.Else)
}

func appendCmdHeader(b []byte, c *Command) []byte {
	b = append(b, cmdCodecVersion, byte(c.Kind))
	b = binary.AppendUvarint(b, c.Session)
	b = binary.AppendUvarint(b, c.Seq)
	b = binary.AppendUvarint(b, c.Mark)
	return binary.AppendVarint(b, c.Time)
}

// WithTime returns the encoded command b with its time replaced by ms.
// The server that takes a client node's command stamps it with its own
// clock, as it does its own commands: the session table measures idleness
// against the newest command time (sessions.go), so a client's clock, fast
// or slow, must not reach it. Only codec version 2 carries a time; b must
// be a well-formed command (DecodeCommand).
func WithTime(b []byte, ms int64) ([]byte, error) {
	if ms < 0 {
		return nil, fmt.Errorf("negative command time %d: %w", ms, errs.Invalid)
	}
	if len(b) < 2 || b[0] != cmdCodecVersion {
		return nil, fmt.Errorf("a command without a time (not codec version %d): %w", cmdCodecVersion, errs.Invalid)
	}
	off := 2
	for range 3 { // Session, Seq, Mark
		_, n := binary.Uvarint(b[off:])
		if n <= 0 {
			return nil, errCorrupt
		}
		off += n
	}
	_, n := binary.Varint(b[off:])
	if n <= 0 {
		return nil, errCorrupt
	}
	out := make([]byte, 0, len(b)-n+binary.MaxVarintLen64)
	out = append(out, b[:off]...)
	out = binary.AppendVarint(out, ms)
	return append(out, b[off+n:]...), nil
}

// header reads the session fields of a command of codec version v.
func (d *decoder) header(c *Command, v byte) {
	c.Session = d.uvarint()
	c.Seq = d.uvarint()
	if v >= cmdCodecVersion {
		c.Mark = d.uvarint()
		c.Time = d.varint()
		// What EncodeCommand refuses is not a command either when it
		// comes off the wire (found by FuzzDecodeCommand).
		if c.Session != 0 && c.Mark > c.Seq || c.Time < 0 {
			d.fail()
		}
	}
}

func appendOps(b []byte, ops []Op) []byte {
	b = binary.AppendUvarint(b, uint64(len(ops)))
	for i := range ops {
		op := &ops[i]
		b = append(b, byte(op.Type))
		b = appendString(b, op.Key)
		if op.Type == OpPut {
			b = appendBytes(b, op.Value)
			b = binary.AppendVarint(b, op.Lease)
		}
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b []byte, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// DecodeCommand decodes and validates an encoded command. Any malformed input
// gives an error wrapping errs.Invalid (or errs.TooLarge from validation);
// lengths are checked against the limits and the bytes left before anything
// is allocated. The result does not alias b.
func DecodeCommand(b []byte) (*Command, error) {
	return decodeCommand(b, false)
}

// errCorrupt is returned for every structural decoding failure: the cause
// is a bug or a forged entry, and a static error keeps the hot path free of
// allocations.
var errCorrupt = fmt.Errorf("corrupt command: %w", errs.Invalid)

// cmdAlloc lets one allocation hold the Command and its Txn.
type cmdAlloc struct {
	cmd Command
	txn Txn
}

// decodeCommand is DecodeCommand; with alias, values point into b instead of
// being copied, which Update uses since b outlives the apply.
func decodeCommand(b []byte, alias bool) (*Command, error) {
	d := decoder{b: b, alias: alias}
	v := d.byte()
	if v != cmdCodecVersion && v != cmdCodecVersionV1 {
		if len(b) == 0 {
			return nil, errCorrupt
		}
		return nil, fmt.Errorf("unknown command codec version %d: %w", b[0], errs.Invalid)
	}
	kind := CmdKind(d.byte())
	if d.err != nil {
		return nil, d.err
	}
	switch kind {
	case KindTxn:
	case KindLeaseGrant, KindLeaseRevoke, KindLeaseCheckpoint:
		return decodeLeaseCommand(&d, kind, v)
	case KindLeaseEpoch:
		if v == cmdCodecVersionV1 {
			return nil, fmt.Errorf("command kind %d in codec version 1: %w", kind, errs.Invalid)
		}
		return decodeLeaseCommand(&d, kind, v)
	default:
		return nil, fmt.Errorf("unknown command kind %d: %w", kind, errs.Invalid)
	}
	a := &cmdAlloc{}
	c := &a.cmd
	c.Kind = kind
	d.header(c, v)
	c.Txn = &a.txn
	budget := MaxTxnOps
	if n := d.count(&budget); n > 0 {
		c.Txn.Compares = make([]Compare, n)
		for i := range c.Txn.Compares {
			cmp := &c.Txn.Compares[i]
			cmp.Key = d.string(MaxKeySize)
			cmp.Target = Target(d.byte())
			cmp.Op = CompareOp(d.byte())
			if cmp.Target == TargetValue {
				cmp.Value = d.bytes(MaxValueSize)
			} else {
				cmp.Int = d.varint()
			}
		}
	}
	c.Txn.Then = d.ops(&budget)
	c.Txn.Else = d.ops(&budget)
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, errCorrupt
	}
	if err := ValidateTxn(c.Txn); err != nil {
		return nil, err
	}
	return c, nil
}

// decodeLeaseCommand decodes the rest of a lease command (d is past the
// kind byte).
func decodeLeaseCommand(d *decoder, kind CmdKind, v byte) (*Command, error) {
	c := &Command{Kind: kind}
	d.header(c, v)
	switch kind {
	case KindLeaseEpoch:
		c.Epoch = &LeaseEpoch{}
	case KindLeaseGrant:
		c.Grant = &LeaseGrant{ID: d.varint(), TTL: d.varint()}
	case KindLeaseRevoke:
		r := &LeaseRevoke{}
		switch d.byte() {
		case 0:
		case 1:
			r.Expired = true
		default:
			d.fail()
		}
		if v >= cmdCodecVersion {
			r.Epoch = d.uvarint()
		}
		if n := d.leaseCount(); n > 0 {
			r.IDs = make([]int64, n)
			for i := range r.IDs {
				r.IDs[i] = d.varint()
			}
		}
		c.Revoke = r
	case KindLeaseCheckpoint:
		cp := &LeaseCheckpoint{}
		if v >= cmdCodecVersion {
			cp.Epoch = d.uvarint()
		}
		if n := d.leaseCount(); n > 0 {
			cp.Checkpoints = make([]LeaseRemaining, n)
			for i := range cp.Checkpoints {
				cp.Checkpoints[i].ID = d.varint()
				cp.Checkpoints[i].RemainingMs = d.varint()
			}
		}
		c.Checkpoint = cp
		if v == cmdCodecVersionV1 {
			for _, l := range cp.Checkpoints {
				if l.RemainingMs == 0 {
					d.fail() // version 1 had no "clear"
				}
			}
		}
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, errCorrupt
	}
	if err := ValidateCommand(c); err != nil {
		return nil, err
	}
	return c, nil
}

// decoder reads from b; the first failure sticks in err and every later
// read returns zero values, so callers check once at the end.
type decoder struct {
	b     []byte
	err   error
	alias bool
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errCorrupt
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) == 0 {
		d.fail()
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a count and charges it to budget, so a forged count cannot
// make the caller allocate more than MaxTxnOps elements in total.
func (d *decoder) count(budget *int) int {
	n := d.uvarint()
	if n > uint64(*budget) {
		d.fail()
		return 0
	}
	*budget -= int(n)
	return int(n)
}

// leaseCount reads the length of a lease list: at most MaxLeaseBatch, and
// no more than the bytes left (every element takes at least one), so a
// forged count allocates nothing much.
func (d *decoder) leaseCount() int {
	n := d.uvarint()
	if n > MaxLeaseBatch || n > uint64(len(d.b)) {
		d.fail()
		return 0
	}
	return int(n)
}

// raw reads a uvarint length (at most max) and returns that many bytes of b
// without copying.
func (d *decoder) raw(max int) []byte {
	n := d.uvarint()
	if n > uint64(max) || n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) string(max int) string {
	return string(d.raw(max))
}

// bytes returns nil for an empty field, so decode(encode(x)) is stable.
func (d *decoder) bytes(max int) []byte {
	v := d.raw(max)
	if len(v) == 0 {
		return nil
	}
	if d.alias {
		return v
	}
	return append([]byte(nil), v...)
}

func (d *decoder) ops(budget *int) []Op {
	n := d.count(budget)
	if n == 0 {
		return nil
	}
	ops := make([]Op, n)
	for i := range ops {
		op := &ops[i]
		op.Type = OpType(d.byte())
		op.Key = d.string(MaxKeySize)
		if op.Type == OpPut {
			op.Value = d.bytes(MaxValueSize)
			op.Lease = d.varint()
		}
		if d.err != nil {
			return nil
		}
	}
	return ops
}
