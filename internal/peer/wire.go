package peer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
)

// The messages of the hot path (propose, read, watch) travel in a compact
// binary encoding: uvarint lengths before strings and byte strings, varints
// for numbers, no field tags. A message decodes only from the exact bytes
// its encoder wrote (trailing bytes are an error); lengths are checked
// against the bytes left before anything is allocated, so a forged message
// costs the receiver nothing much.

// Bounds on what one message may carry.
const (
	maxGroupName = 64
	maxKey       = fsm.MaxKeySize
	maxValue     = fsm.MaxValueSize
	// maxCommand bounds an encoded command: a txn of MaxTxnOps ops with
	// keys and values at their limits would be larger, but a proposal is
	// capped by the Raft entry size anyway.
	maxCommand  = 16 << 20
	maxListSize = 100_000 // entries of one read answer
	maxEvents   = 1 << 20 // events of one watch frame
	maxErrText  = 4 << 10
)

var errCorruptMessage = fmt.Errorf("corrupt peer message: %w", errs.Invalid)

type encoder struct{ b []byte }

func (e *encoder) byte(v byte)      { e.b = append(e.b, v) }
func (e *encoder) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) varint(v int64)   { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) bytes(v []byte)   { e.uvarint(uint64(len(v))); e.b = append(e.b, v...) }
func (e *encoder) string(v string)  { e.uvarint(uint64(len(v))); e.b = append(e.b, v...) }
func (e *encoder) bool(v bool) {
	if v {
		e.byte(1)
	} else {
		e.byte(0)
	}
}

// decoder reads what encoder wrote; the first failure sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errCorruptMessage
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

func (d *decoder) bool() bool {
	switch d.byte() {
	case 0:
		return false
	case 1:
		return true
	}
	d.fail()
	return false
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

// raw returns the next length-prefixed bytes (at most max) without copying.
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

func (d *decoder) string(max int) string { return string(d.raw(max)) }

// bytes returns a copy: the message buffer is not kept.
func (d *decoder) bytes(max int) []byte {
	v := d.raw(max)
	if d.err != nil {
		return nil
	}
	return append(make([]byte, 0, len(v)), v...)
}

// count reads a list length: at most max, and no more than the bytes left
// (every element takes at least one).
func (d *decoder) count(max int) int {
	n := d.uvarint()
	if n > uint64(max) || n > uint64(len(d.b)) {
		d.fail()
		return 0
	}
	return int(n)
}

func (d *decoder) end() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail()
	}
	return d.err
}

func (e *encoder) kv(kv *fsm.KV) {
	e.string(kv.Key)
	e.record(&kv.Record)
}

func (e *encoder) record(r *fsm.Record) {
	e.bytes(r.Value)
	e.varint(r.CreateRevision)
	e.varint(r.ModRevision)
	e.varint(r.Version)
	e.varint(r.Lease)
}

func (d *decoder) kv() fsm.KV {
	kv := fsm.KV{Key: d.string(maxKey)}
	kv.Record = d.record()
	return kv
}

func (d *decoder) record() fsm.Record {
	var r fsm.Record
	r.Value = d.bytes(maxValue)
	r.CreateRevision = d.varint()
	r.ModRevision = d.varint()
	r.Version = d.varint()
	r.Lease = d.varint()
	return r
}

// ProposeRequest carries a command encoded by fsm.EncodeCommand with the
// proposer's own dedup id (session, seq, mark, time), so that a client's
// retry through another server is still applied once.
type ProposeRequest struct {
	Group string
	Cmd   []byte
}

func (m *ProposeRequest) marshal() []byte {
	e := encoder{b: make([]byte, 0, len(m.Group)+len(m.Cmd)+8)}
	e.string(m.Group)
	e.bytes(m.Cmd)
	return e.b
}

func (m *ProposeRequest) unmarshal(b []byte) error {
	d := decoder{b: b}
	m.Group = d.string(maxGroupName)
	m.Cmd = d.bytes(maxCommand)
	return d.end()
}

// ProposeResponse is the state machine's result (fsm.Result.Data).
type ProposeResponse struct{ Data []byte }

// Consistency of a read, as the engines name it.
type Consistency uint8

const (
	Session Consistency = iota // wait for MinRevision, then the local replica
	Linearizable
	Stale
)

// Query is what a ReadRequest asks for.
type Query uint8

const (
	QueryGet      Query = 1 + iota // Key
	QueryList                      // Key = prefix, After, Limit
	QueryRevision                  // the group's revision
	QueryLease                     // Lease: TTL and keys
)

// ReadRequest is a read of one group at a consistency.
type ReadRequest struct {
	Group       string
	Consistency Consistency
	MinRevision int64
	Query       Query
	Key         string
	After       string
	Limit       int
	Lease       int64
}

func (m *ReadRequest) marshal() []byte {
	e := encoder{b: make([]byte, 0, 16+len(m.Group)+len(m.Key)+len(m.After))}
	e.string(m.Group)
	e.byte(byte(m.Consistency))
	e.varint(m.MinRevision)
	e.byte(byte(m.Query))
	e.string(m.Key)
	e.string(m.After)
	e.varint(int64(m.Limit))
	e.varint(m.Lease)
	return e.b
}

func (m *ReadRequest) unmarshal(b []byte) error {
	d := decoder{b: b}
	m.Group = d.string(maxGroupName)
	m.Consistency = Consistency(d.byte())
	m.MinRevision = d.varint()
	m.Query = Query(d.byte())
	m.Key = d.string(maxKey)
	m.After = d.string(maxKey)
	m.Limit = int(d.varint())
	m.Lease = d.varint()
	if err := d.end(); err != nil {
		return err
	}
	if m.Consistency > Stale || m.Query < QueryGet || m.Query > QueryLease || m.Limit < 0 || m.Limit > maxListSize {
		return errCorruptMessage
	}
	return nil
}

// ReadResponse answers a ReadRequest: Revision is the revision the read was
// served at; for QueryGet, Found and KVs[0]; for QueryList, KVs and More;
// for QueryLease, TTLMs and Keys.
type ReadResponse struct {
	Revision int64
	Found    bool
	More     bool
	KVs      []fsm.KV
	TTLMs    int64
	Keys     []string
}

func (m *ReadResponse) marshal() []byte {
	n := 16
	for i := range m.KVs {
		n += len(m.KVs[i].Key) + len(m.KVs[i].Value) + 24
	}
	e := encoder{b: make([]byte, 0, n)}
	e.varint(m.Revision)
	e.bool(m.Found)
	e.bool(m.More)
	e.uvarint(uint64(len(m.KVs)))
	for i := range m.KVs {
		e.kv(&m.KVs[i])
	}
	e.varint(m.TTLMs)
	e.uvarint(uint64(len(m.Keys)))
	for _, k := range m.Keys {
		e.string(k)
	}
	return e.b
}

func (m *ReadResponse) unmarshal(b []byte) error {
	d := decoder{b: b}
	m.Revision = d.varint()
	m.Found = d.bool()
	m.More = d.bool()
	if n := d.count(maxListSize); n > 0 {
		m.KVs = make([]fsm.KV, n)
		for i := range m.KVs {
			m.KVs[i] = d.kv()
		}
	}
	m.TTLMs = d.varint()
	if n := d.count(maxListSize); n > 0 {
		m.Keys = make([]string, n)
		for i := range m.Keys {
			m.Keys[i] = d.string(maxKey)
		}
	}
	return d.end()
}

// WatchRequest starts a stream of the group's changes under Prefix from
// revision From (0 = the next one). A prefix in the reserved namespace
// (services) is allowed here: the client node's own service watches use it.
type WatchRequest struct {
	Group  string
	Prefix string
	From   int64
	PrevKV bool // include each event's previous entry
}

func (m *WatchRequest) marshal() []byte {
	e := encoder{}
	e.string(m.Group)
	e.string(m.Prefix)
	e.varint(m.From)
	e.bool(m.PrevKV)
	return e.b
}

func (m *WatchRequest) unmarshal(b []byte) error {
	d := decoder{b: b}
	m.Group = d.string(maxGroupName)
	m.Prefix = d.string(maxKey)
	m.From = d.varint()
	m.PrevKV = d.bool()
	if err := d.end(); err != nil {
		return err
	}
	if m.From < 0 {
		return errCorruptMessage
	}
	return nil
}

// WatchFrame is one message of a watch stream: the events of one revision,
// a progress note (no events: every event up to Revision was sent), or the
// end of the stream (Err set; CompactRevision with errs.Compacted). On a
// feed, a frame with Ack set acknowledges that filter change (see
// feed.go); it is a progress note at Revision as well.
type WatchFrame struct {
	Revision        int64
	Events          []fsm.Event
	Err             error
	CompactRevision int64
	Ack             uint64
}

func (m *WatchFrame) marshal() []byte {
	n := 16
	for i := range m.Events {
		n += len(m.Events[i].KV.Key) + len(m.Events[i].KV.Value) + 32
		if p := m.Events[i].Prev; p != nil {
			n += len(p.Value) + 24
		}
	}
	e := encoder{b: make([]byte, 0, n)}
	e.varint(m.Revision)
	if m.Ack != 0 && m.Err == nil {
		e.byte(2)
		e.uvarint(m.Ack)
		return e.b
	}
	if m.Err != nil {
		e.byte(1)
		code, msg := errorCode(m.Err)
		e.string(code)
		e.string(truncate(msg))
		e.varint(m.CompactRevision)
		return e.b
	}
	e.byte(0)
	e.uvarint(uint64(len(m.Events)))
	for i := range m.Events {
		ev := &m.Events[i]
		e.byte(byte(ev.Type))
		e.string(ev.KV.Key)
		if ev.Type == fsm.EventPut {
			e.record(&ev.KV.Record)
		}
		if ev.Prev != nil {
			e.byte(1)
			e.record(&ev.Prev.Record)
		} else {
			e.byte(0)
		}
	}
	return e.b
}

func (m *WatchFrame) unmarshal(b []byte) error {
	d := decoder{b: b}
	m.Revision = d.varint()
	switch d.byte() {
	case 1:
		code := d.string(64)
		msg := d.string(maxErrText)
		m.CompactRevision = d.varint()
		if err := d.end(); err != nil {
			return err
		}
		m.Err = errorFromCode(code, msg)
		return nil
	case 2:
		m.Ack = d.uvarint()
		if err := d.end(); err != nil {
			return err
		}
		if m.Ack == 0 {
			return errCorruptMessage
		}
		return nil
	case 0:
	default:
		d.fail()
	}
	if n := d.count(maxEvents); n > 0 {
		m.Events = make([]fsm.Event, n)
		for i := range m.Events {
			ev := &m.Events[i]
			ev.Type = fsm.EventType(d.byte())
			ev.Revision = m.Revision
			ev.KV.Key = d.string(maxKey)
			switch ev.Type {
			case fsm.EventPut:
				ev.KV.Record = d.record()
			case fsm.EventDelete:
				ev.KV.ModRevision = m.Revision
			default:
				d.fail()
			}
			if d.bool() {
				ev.Prev = &fsm.KV{Key: ev.KV.Key, Record: d.record()}
			}
		}
	}
	return d.end()
}

// KeepAliveRequest renews a lease at the leader of its group: servers name
// the group's shard, client nodes its name.
type KeepAliveRequest struct {
	Shard uint64 `json:"shard,omitempty"`
	Group string `json:"group,omitempty"`
	Lease int64  `json:"lease"`
}

// KeepAliveResponse carries the lease's TTL, the time it now has.
type KeepAliveResponse struct {
	TTLMillis int64 `json:"ttl_ms"`
}

// KeepAliveBatchRequest renews several leases of one group at its leader:
// servers name the group's shard, client nodes its name.
type KeepAliveBatchRequest struct {
	Shard  uint64  `json:"shard,omitempty"`
	Group  string  `json:"group,omitempty"`
	Leases []int64 `json:"leases"`
}

// KeepAliveBatchResponse has, per lease in order, its TTL, or 0 when the
// lease does not exist.
type KeepAliveBatchResponse struct {
	TTLMillis []int64 `json:"ttl_ms"`
}

func truncate(s string) string {
	if len(s) > maxErrText {
		return s[:maxErrText]
	}
	return s
}

// codes maps sentinels to wire codes and back; the order is the lookup
// order (ErrUnknownOutcome first: it must never read as "not applied").
var errorCodes = []struct {
	code string
	err  error
}{
	{"unknown_outcome", errs.UnknownOutcome}, {"forbidden", errs.Forbidden},
	// group_not_found before invalid, as the REST API orders them: a
	// malformed group name is both, and reads as a group not found.
	{"group_not_found", errs.GroupNotFound},
	{"invalid", errs.Invalid}, {"conflict", errs.Conflict}, {"not_found", errs.NotFound},
	{"lease_not_found", errs.LeaseNotFound},
	{"too_large", errs.TooLarge}, {"compacted", errs.Compacted},
	{"watch_overflow", errs.WatchOverflow}, {"no_instance", errs.NoInstance},
	{"no_quorum", errs.NoQuorum}, {"closed", errs.Closed},
}

// errorCode is err's wire code and message.
func errorCode(err error) (string, string) {
	for _, c := range errorCodes {
		if errors.Is(err, c.err) {
			return c.code, err.Error()
		}
	}
	// The server's ctx ended (the caller's deadline, carried over): the
	// caller reports its own ctx error; if that has not ended, the server
	// gave up waiting (for a leader, say), which is no quorum to it.
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return "timeout", err.Error()
	}
	return "internal", err.Error()
}

// errorFromCode rebuilds an error that matches the sentinel of code.
func errorFromCode(code, msg string) error {
	if code == "timeout" {
		return fmt.Errorf("%s: %w", msg, errs.NoQuorum)
	}
	for _, c := range errorCodes {
		if c.code == code {
			return &remoteError{msg: msg, sentinel: c.err}
		}
	}
	return fmt.Errorf("%s: %w", msg, errs.NoQuorum)
}

// remoteError is an error the other side reported: its text, matching its
// sentinel with errors.Is.
type remoteError struct {
	msg      string
	sentinel error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }
