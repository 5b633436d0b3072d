package fsm

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/dister/dister/internal/errs"
)

// The rules a transaction and its keys must follow before it is encoded
// (and after it is decoded): limits, key shape, reserved keys.

// ValidateTxn checks t against the limits and the key rules. Sizes over a
// limit wrap errs.TooLarge, everything else errs.Invalid.
func ValidateTxn(t *Txn) error {
	if t == nil {
		return fmt.Errorf("nil txn: %w", errs.Invalid)
	}
	if n := len(t.Compares) + len(t.Then) + len(t.Else); n > MaxTxnOps {
		return fmt.Errorf("txn has %d compares and ops, more than %d: %w", n, MaxTxnOps, errs.TooLarge)
	}
	for i := range t.Compares {
		c := &t.Compares[i]
		if err := validateKey(c.Key, false); err != nil {
			return fmt.Errorf("compare %d: %w", i, err)
		}
		if c.Target < TargetValue || c.Target > TargetCreateRevision {
			return fmt.Errorf("compare %d: unknown target %d: %w", i, c.Target, errs.Invalid)
		}
		if c.Op < OpEqual || c.Op > OpGreater {
			return fmt.Errorf("compare %d: unknown operator %d: %w", i, c.Op, errs.Invalid)
		}
		if c.Target == TargetValue && len(c.Value) > MaxValueSize {
			return fmt.Errorf("compare %d: value of %d bytes, more than %d: %w", i, len(c.Value), MaxValueSize, errs.TooLarge)
		}
	}
	if err := validateOps("then", t.Then); err != nil {
		return err
	}
	return validateOps("else", t.Else)
}

// CheckTxnSize refuses a txn whose keys and values together exceed
// MaxTxnBytes (errs.TooLarge). Apart from ValidateTxn: entries committed
// before the limit existed must still decode and apply.
func CheckTxnSize(t *Txn) error {
	n := 0
	for i := range t.Compares {
		n += len(t.Compares[i].Key) + len(t.Compares[i].Value)
	}
	for _, ops := range [2][]Op{t.Then, t.Else} {
		for i := range ops {
			n += len(ops[i].Key) + len(ops[i].Value)
		}
	}
	if n > MaxTxnBytes {
		return fmt.Errorf("txn of %d bytes of keys and values, more than %d: %w", n, MaxTxnBytes, errs.TooLarge)
	}
	return nil
}

func validateOps(branch string, ops []Op) error {
	for i := range ops {
		op := &ops[i]
		switch op.Type {
		case OpPut:
			if len(op.Value) > MaxValueSize {
				return fmt.Errorf("%s op %d: value of %d bytes, more than %d: %w", branch, i, len(op.Value), MaxValueSize, errs.TooLarge)
			}
			if op.Lease < 0 {
				return fmt.Errorf("%s op %d: negative lease %d: %w", branch, i, op.Lease, errs.Invalid)
			}
		case OpDelete, OpDeletePrefix:
		default:
			return fmt.Errorf("%s op %d: unknown op type %d: %w", branch, i, op.Type, errs.Invalid)
		}
		if err := validateKey(op.Key, op.Type == OpDeletePrefix); err != nil {
			return fmt.Errorf("%s op %d: %w", branch, i, err)
		}
	}
	return nil
}

func validateKey(k string, allowEmpty bool) error {
	switch {
	case len(k) == 0 && !allowEmpty:
		return fmt.Errorf("empty key: %w", errs.Invalid)
	case len(k) > MaxKeySize:
		return fmt.Errorf("key of %d bytes, more than %d: %w", len(k), MaxKeySize, errs.TooLarge)
	case !utf8.ValidString(k):
		return fmt.Errorf("key is not valid UTF-8: %w", errs.Invalid)
	case strings.IndexByte(k[min(len(k), 1):], 0) >= 0:
		return fmt.Errorf("key contains NUL: %w", errs.Invalid)
	}
	return nil
}

// ValidateUserKey checks a key a client names: the rules of every key, and
// no NUL at all (a leading NUL is the reserved namespace). allowEmpty is for
// prefixes.
func ValidateUserKey(k string, allowEmpty bool) error {
	if IsReserved(k) {
		return fmt.Errorf("key contains NUL: %w", errs.Invalid)
	}
	return validateKey(k, allowEmpty)
}

// RejectReserved fails if a key of t is in the reserved namespace: a
// client's txn may not name one. It checks that rule only; EncodeCommand
// runs ValidateTxn's checks.
func RejectReserved(t *Txn) error {
	for i := range t.Compares {
		if IsReserved(t.Compares[i].Key) {
			return fmt.Errorf("compare %d: key contains NUL: %w", i, errs.Invalid)
		}
	}
	for _, ops := range [][]Op{t.Then, t.Else} {
		for i := range ops {
			if IsReserved(ops[i].Key) {
				return fmt.Errorf("op %d: key contains NUL: %w", i, errs.Invalid)
			}
		}
	}
	return nil
}
