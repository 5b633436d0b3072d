package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dister/dister/internal/errs"
)

// Results of applied commands, as stored in the dedup table and handed to
// proposers: see "Result encoding" in codec.go.

// encodeTxnResult appends the encoding of r to dst.
func encodeTxnResult(dst []byte, r *TxnResult) []byte {
	succeeded := byte(0)
	if r.Succeeded {
		succeeded = 1
	}
	dst = append(dst, resultCodecVersion, resultTxn, succeeded)
	dst = binary.AppendVarint(dst, r.Revision)
	dst = binary.AppendUvarint(dst, uint64(len(r.Ops)))
	for i := range r.Ops {
		dst = binary.AppendVarint(dst, r.Ops[i].Deleted)
	}
	return dst
}

// encodeLeaseResult appends the encoding of r to dst.
func encodeLeaseResult(dst []byte, r *LeaseResult) []byte {
	dst = append(dst, resultCodecVersion, resultLease)
	dst = binary.AppendVarint(dst, r.Revision)
	dst = binary.AppendVarint(dst, r.ID)
	dst = binary.AppendVarint(dst, r.TTL)
	return binary.AppendVarint(dst, r.Deleted)
}

// encodeEpochResult appends the result of a KindLeaseEpoch to dst.
func encodeEpochResult(dst []byte, r *LeaseResult) []byte {
	dst = append(dst, resultCodecVersion, resultEpoch)
	dst = binary.AppendVarint(dst, r.Revision)
	return binary.AppendUvarint(dst, r.Epoch)
}

// encodeError encodes the deterministic error of a command that could not
// be applied. Only the class (Invalid, TooLarge, Conflict, LeaseNotFound,
// NoQuorum, UnknownOutcome) and the message survive.
func encodeError(err error) []byte {
	code := byte(errCodeOther)
	switch {
	case errors.Is(err, errs.UnknownOutcome):
		code = errCodeStale
	case errors.Is(err, errs.NoQuorum):
		code = errCodeNoQuorum
	case errors.Is(err, errs.TooLarge):
		code = errCodeTooLarge
	case errors.Is(err, errs.Invalid):
		code = errCodeInvalid
	case errors.Is(err, errs.Conflict):
		code = errCodeConflict
	case errors.Is(err, errs.LeaseNotFound):
		code = errCodeLeaseNotFound
	}
	msg := err.Error()
	if len(msg) > maxErrorMessage {
		msg = msg[:maxErrorMessage]
	}
	b := make([]byte, 0, 3+binary.MaxVarintLen64+len(msg))
	b = append(b, resultCodecVersion, resultError, code)
	return appendString(b, msg)
}

// isErrorResult reports whether data is an encoded error.
func isErrorResult(data []byte) bool {
	return len(data) >= 2 && data[0] == resultCodecVersion && data[1] == resultError
}

// decodedError is a command's error as decoded from a Result: the original
// message, matching the original sentinel with errors.Is (errs.Invalid for
// errors of no known class).
type decodedError struct {
	msg      string
	sentinel error
}

func (e *decodedError) Error() string { return e.msg }
func (e *decodedError) Unwrap() error { return e.sentinel }

var (
	errCorruptResult  = fmt.Errorf("corrupt result: %w", errs.Invalid)
	errNotTxnResult   = fmt.Errorf("result of a lease command read as a txn result: %w", errs.Invalid)
	errNotLeaseResult = fmt.Errorf("result of a txn read as a lease result: %w", errs.Invalid)
)

// DecodeResult returns the TxnResult carried by r (the result of a
// KindTxn), or the error the command produced (matching errs.Invalid,
// errs.TooLarge or errs.LeaseNotFound with errors.Is, with the original
// message). A malformed r, or the result of a lease command, gives an error
// wrapping errs.Invalid.
func DecodeResult(r Result) (*TxnResult, error) {
	d := decoder{b: r.Data}
	if d.byte() != resultCodecVersion {
		return nil, errCorruptResult
	}
	switch d.byte() {
	case resultTxn:
		res := &TxnResult{}
		switch d.byte() {
		case 0:
		case 1:
			res.Succeeded = true
		default:
			return nil, errCorruptResult
		}
		res.Revision = d.varint()
		n := d.uvarint()
		// Every op takes at least one byte: bound the allocation by the input.
		if n > MaxTxnOps || n > uint64(len(d.b)) {
			return nil, errCorruptResult
		}
		if n > 0 {
			res.Ops = make([]OpResult, n)
			for i := range res.Ops {
				res.Ops[i].Deleted = d.varint()
			}
		}
		if d.err != nil || len(d.b) != 0 {
			return nil, errCorruptResult
		}
		return res, nil
	case resultError:
		return nil, decodeErrorResult(&d)
	case resultLease, resultEpoch:
		return nil, errNotTxnResult
	default:
		return nil, errCorruptResult
	}
}

// DecodeLeaseResult returns the LeaseResult carried by r (the result of a
// KindLeaseGrant: Revision, ID, TTL; KindLeaseRevoke: Revision, Deleted;
// KindLeaseCheckpoint: Revision; KindLeaseEpoch: Revision, Epoch), or the error the command produced
// (matching errs.Conflict for a grant of an existing id, errs.LeaseNotFound
// for a revoke of an unknown one, errs.Invalid or errs.TooLarge for a bad
// command). A malformed r, or the result of a txn, gives an error wrapping
// errs.Invalid.
func DecodeLeaseResult(r Result) (*LeaseResult, error) {
	d := decoder{b: r.Data}
	if d.byte() != resultCodecVersion {
		return nil, errCorruptResult
	}
	switch d.byte() {
	case resultLease:
		res := &LeaseResult{Revision: d.varint(), ID: d.varint(), TTL: d.varint(), Deleted: d.varint()}
		if d.err != nil || len(d.b) != 0 {
			return nil, errCorruptResult
		}
		return res, nil
	case resultEpoch:
		res := &LeaseResult{Revision: d.varint(), Epoch: d.uvarint()}
		if d.err != nil || len(d.b) != 0 {
			return nil, errCorruptResult
		}
		return res, nil
	case resultError:
		return nil, decodeErrorResult(&d)
	case resultTxn:
		return nil, errNotLeaseResult
	default:
		return nil, errCorruptResult
	}
}

// decodeErrorResult decodes the rest of a resultError (d is past the tag).
func decodeErrorResult(d *decoder) error {
	code := d.byte()
	msg := d.string(maxErrorMessage)
	if d.err != nil || len(d.b) != 0 {
		return errCorruptResult
	}
	e := &decodedError{msg: msg, sentinel: errs.Invalid}
	switch code {
	case errCodeTooLarge:
		e.sentinel = errs.TooLarge
	case errCodeConflict:
		e.sentinel = errs.Conflict
	case errCodeLeaseNotFound:
		e.sentinel = errs.LeaseNotFound
	case errCodeNoQuorum:
		e.sentinel = errs.NoQuorum
	case errCodeStale:
		e.sentinel = errs.UnknownOutcome
	}
	return e
}
