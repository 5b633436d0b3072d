package fsm

import (
	"encoding/binary"
	"fmt"

	"github.com/dister/dister/internal/errs"
)

// Group commit: a proposer that has several txn commands for one group
// waiting while the engine is busy sends them as one batch, so that one
// Raft entry (one log write, one apply batch) carries many writes. Each
// command in a batch keeps its own dedup id and gets its own result; the
// commands apply in batch order, each at the next revision if it changes
// anything, exactly as if they had been consecutive entries.
//
// Batch encoding (codec version 2):
//
//	byte    codec version (2)
//	byte    KindBatch
//	uvarint n (1..MaxBatchCommands), n × (uvarint len + an encoded KindTxn command)
//
// A batch's result (Result.Data): byte result version (1), byte resultBatch,
// uvarint n, n × (uvarint Value, uvarint len + Data): the result each
// command would have had as an entry of its own.

// KindBatch is a Raft entry carrying several KindTxn commands; see
// EncodeBatch. Servers older than group commit cannot apply it: a proposer
// sends batches only once every server records that it can (the catalog's
// server flags).
const KindBatch CmdKind = 6

const (
	// MaxBatchCommands bounds the commands of one batch.
	MaxBatchCommands = 1024
	// MaxBatchBytes bounds the encoded commands of one batch; a command
	// larger than this goes alone.
	MaxBatchBytes = 2 << 20

	resultBatch = 5
)

// Batchable tells whether an encoded command may go into a batch: a valid
// KindTxn command of the current codec (lease commands take their id from
// the entry's index and go alone).
func Batchable(cmd []byte) bool {
	return len(cmd) > 2 && cmd[0] == cmdCodecVersion && CmdKind(cmd[1]) == KindTxn
}

// EncodeBatch returns the batch entry carrying cmds, each an encoded
// Batchable command, in order.
func EncodeBatch(cmds [][]byte) ([]byte, error) {
	if len(cmds) == 0 || len(cmds) > MaxBatchCommands {
		return nil, fmt.Errorf("batch of %d commands (1 to %d): %w", len(cmds), MaxBatchCommands, errs.Invalid)
	}
	n := 2 + binary.MaxVarintLen64
	for _, c := range cmds {
		if !Batchable(c) {
			return nil, fmt.Errorf("batch: not a txn command: %w", errs.Invalid)
		}
		n += binary.MaxVarintLen64 + len(c)
	}
	b := make([]byte, 0, n)
	b = append(b, cmdCodecVersion, byte(KindBatch))
	b = binary.AppendUvarint(b, uint64(len(cmds)))
	for _, c := range cmds {
		b = appendBytes(b, c)
	}
	return b, nil
}

// isBatch tells whether an entry's command is a batch.
func isBatch(cmd []byte) bool {
	return len(cmd) >= 2 && cmd[0] == cmdCodecVersion && CmdKind(cmd[1]) == KindBatch
}

// splitBatch returns the commands of a batch entry (aliasing b), or an
// error wrapping errs.Invalid when it is malformed.
func splitBatch(b []byte) ([][]byte, error) {
	d := decoder{b: b[2:], alias: true}
	n := d.uvarint()
	if d.err != nil || n == 0 || n > MaxBatchCommands || n > uint64(len(d.b)) {
		return nil, fmt.Errorf("corrupt batch: %w", errs.Invalid)
	}
	out := make([][]byte, n)
	for i := range out {
		out[i] = d.raw(len(d.b))
		if d.err != nil || !Batchable(out[i]) {
			return nil, fmt.Errorf("corrupt batch: %w", errs.Invalid)
		}
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("corrupt batch: %w", errs.Invalid)
	}
	return out, nil
}

// encodeBatchResult encodes the results of a batch's commands.
func encodeBatchResult(rs []Result) []byte {
	n := 3 + binary.MaxVarintLen64
	for i := range rs {
		n += 2*binary.MaxVarintLen64 + len(rs[i].Data)
	}
	b := make([]byte, 0, n)
	b = append(b, resultCodecVersion, resultBatch)
	b = binary.AppendUvarint(b, uint64(len(rs)))
	for i := range rs {
		b = binary.AppendUvarint(b, rs[i].Value)
		b = appendBytes(b, rs[i].Data)
	}
	return b
}

// SplitBatchResult returns the result of each command of a batch of n
// commands, in batch order; the results alias r.Data. A result that is not
// one of a batch of n, such as the error result of a malformed entry, is
// an error.
func SplitBatchResult(r Result, n int) ([]Result, error) {
	d := decoder{b: r.Data, alias: true}
	if d.byte() != resultCodecVersion {
		return nil, errCorruptResult
	}
	switch d.byte() {
	case resultBatch:
	case resultError:
		return nil, decodeErrorResult(&d)
	default:
		return nil, errCorruptResult
	}
	if got := d.uvarint(); d.err != nil || got != uint64(n) {
		return nil, errCorruptResult
	}
	out := make([]Result, n)
	for i := range out {
		out[i].Value = d.uvarint()
		out[i].Data = d.raw(len(d.b))
	}
	if d.err != nil || len(d.b) != 0 {
		return nil, errCorruptResult
	}
	return out, nil
}
