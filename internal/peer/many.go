package peer

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dister/dister/internal/errs"
)

// ProposeMany carries several commands of one group in one call: a client
// node coalesces the writes its callers make while earlier ones are in
// flight, so one gRPC call (and one server goroutine waiting on it) serves
// many writes. Each command keeps its own dedup id and gets its own answer:
// one command's error does not fail the others. The server hands every
// command to the group's commit queue, as if each had come in a call of its
// own, and answers once all are done.

const methodProposeMany = "/" + serviceName + "/ProposeMany"

// MaxProposeMany bounds the commands of one ProposeMany call; a server
// refuses more.
const MaxProposeMany = 1024

// ProposeManyRequest carries commands encoded as in ProposeRequest, all for
// Group.
type ProposeManyRequest struct {
	Group string
	Cmds  [][]byte
}

// ProposeAnswer is one command's outcome: the state machine's result, or
// the error a Propose of it alone would have returned.
type ProposeAnswer struct {
	Data []byte
	Err  error
}

func (m *ProposeManyRequest) marshal() []byte {
	size := len(m.Group) + 8
	for _, c := range m.Cmds {
		size += len(c) + 4
	}
	e := encoder{b: make([]byte, 0, size)}
	e.string(m.Group)
	e.uvarint(uint64(len(m.Cmds)))
	for _, c := range m.Cmds {
		e.bytes(c)
	}
	return e.b
}

func (m *ProposeManyRequest) unmarshal(b []byte) error {
	d := decoder{b: b}
	m.Group = d.string(maxGroupName)
	n := d.count(MaxProposeMany)
	if d.err == nil && n == 0 {
		d.fail()
	}
	m.Cmds = make([][]byte, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		m.Cmds = append(m.Cmds, d.bytes(maxCommand))
	}
	return d.end()
}

func marshalAnswers(answers []ProposeAnswer) []byte {
	size := 8
	for _, a := range answers {
		size += len(a.Data) + 4
	}
	e := encoder{b: make([]byte, 0, size)}
	e.uvarint(uint64(len(answers)))
	for _, a := range answers {
		if a.Err != nil {
			code, msg := errorCode(a.Err)
			e.byte(1)
			e.string(code)
			e.string(truncate(msg))
			continue
		}
		e.byte(0)
		e.bytes(a.Data)
	}
	return e.b
}

// unmarshalAnswers decodes the answers to a call of want commands.
func unmarshalAnswers(b []byte, want int) ([]ProposeAnswer, error) {
	d := decoder{b: b}
	if n := d.count(MaxProposeMany); d.err == nil && n != want {
		d.fail()
	}
	answers := make([]ProposeAnswer, 0, want)
	for i := 0; i < want && d.err == nil; i++ {
		switch d.byte() {
		case 0:
			answers = append(answers, ProposeAnswer{Data: d.bytes(maxCommand)})
		case 1:
			code := d.string(64)
			msg := d.string(maxErrText)
			answers = append(answers, ProposeAnswer{Err: errorFromCode(code, msg)})
		default:
			d.fail()
		}
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	return answers, nil
}

// proposeManyDesc is the method's handler: a Handler's ErrUnimplemented
// goes back as gRPC's Unimplemented, as from a server without the method.
var proposeManyDesc = grpc.MethodDesc{MethodName: "ProposeMany", Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	var in []byte
	if err := dec(&in); err != nil {
		return nil, err
	}
	var req ProposeManyRequest
	var answers []ProposeAnswer
	err := req.unmarshal(in)
	if err == nil {
		answers, err = srv.(*handlerBox).h.ProposeMany(ctx, &req)
	}
	if errors.Is(err, ErrUnimplemented) {
		return nil, status.Error(codes.Unimplemented, err.Error())
	}
	if err == nil && len(answers) != len(req.Cmds) {
		err = fmt.Errorf("%d answers to %d commands", len(answers), len(req.Cmds))
	}
	if err != nil {
		b := encodeFailure(err)
		return &b, nil
	}
	b := append([]byte{0}, marshalAnswers(answers)...)
	return &b, nil
}}

// ProposeMany asks the server at addr to commit each of req's commands; an
// error is the call's (the transport's, or one for every command: a refusal
// of the caller, an unknown group), else each command has its answer.
// ErrUnimplemented: the server lacks the method; propose one by one.
func (c *Client) ProposeMany(ctx context.Context, addr string, req *ProposeManyRequest) ([]ProposeAnswer, error) {
	if len(req.Cmds) == 0 || len(req.Cmds) > MaxProposeMany {
		return nil, fmt.Errorf("propose many: %d commands, want 1 to %d: %w", len(req.Cmds), MaxProposeMany, errs.Invalid)
	}
	b, err := c.unary(ctx, addr, methodProposeMany, req.marshal())
	if errors.Is(err, errCorruptMessage) {
		// The server ran the call: its commands may have applied.
		return nil, fmt.Errorf("%w: %w", err, errs.UnknownOutcome)
	}
	if err != nil {
		return nil, err
	}
	answers, err := unmarshalAnswers(b, len(req.Cmds))
	if err != nil {
		// The server ran the call: its commands may have applied.
		return nil, fmt.Errorf("peer %s: answers: %v: %w", addr, err, errs.UnknownOutcome)
	}
	return answers, nil
}
