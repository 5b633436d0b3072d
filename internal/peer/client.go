package peer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/dister/dister/internal/errs"
)

// ErrUnreachable wraps transport failures, so callers can try another server.
var ErrUnreachable = errors.New("peer unreachable")

// ErrUnimplemented is a server's answer to a method it does not have (an
// older version): the caller falls back to what that version offers.
var ErrUnimplemented = errors.New("peer method not implemented")

// ErrNotSent marks a call that failed before it reached the server, so a
// write was not applied: no connection could be made (with ErrUnreachable),
// or its ctx had ended before it was sent (with the ctx error).
var ErrNotSent = errors.New("not sent")

// Client calls other nodes' RPC. It keeps one connection per address, on
// which every call to that address is multiplexed.
type Client struct {
	dial   []grpc.DialOption
	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	closed bool
}

// NewClient returns a client; Close releases its connections. Options are
// added to every connection's (the place for transport credentials and
// per-call tokens: grpc.WithTransportCredentials replaces the default
// insecure one, grpc.WithPerRPCCredentials and interceptors add to it).
func NewClient(opts ...grpc.DialOption) *Client {
	return &Client{conns: map[string]*grpc.ClientConn{}, dial: opts}
}

// Close closes every connection; calls after it fail with errs.Closed.
func (c *Client) Close() {
	c.mu.Lock()
	conns := c.conns
	c.conns, c.closed = map[string]*grpc.ClientConn{}, true
	c.mu.Unlock()
	for _, cc := range conns {
		_ = cc.Close()
	}
}

func (c *Client) conn(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errs.Closed
	}
	if cc := c.conns[addr]; cc != nil {
		return cc, nil
	}
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{}),
			grpc.MaxCallRecvMsgSize(maxMessage), grpc.MaxCallSendMsgSize(maxMessage)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second}),
	}, c.dial...)
	cc, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("peer %s: %v: %w", addr, err, errs.Invalid)
	}
	c.conns[addr] = cc
	return cc, nil
}

// transportError maps a failed gRPC call: the caller's ctx error as it is,
// anything else the transport reports as ErrUnreachable.
func transportError(ctx context.Context, addr string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	// The server may notice the deadline it was sent (and reset the
	// stream) a moment before this side's ctx timer fires. Its timer is
	// due: wait for it, so that a caller asking ctx.Err() next (to tell
	// its own deadline from a failure) sees the end too.
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		<-ctx.Done()
		return ctx.Err()
	}
	if status.Code(err) == codes.Canceled && errors.Is(err, errs.Closed) {
		return errs.Closed
	}
	msg := status.Convert(err).Message()
	if status.Code(err) == codes.Unimplemented {
		return fmt.Errorf("peer %s: %v: %w", addr, msg, ErrUnimplemented)
	}
	// gRPC fails a call at once, before sending it, while the channel has
	// no connection (WaitForReady is off); its status then carries the
	// dial error. Its text is the only sign of that gRPC gives.
	if status.Code(err) == codes.Unavailable && strings.Contains(msg, "while dialing") {
		return fmt.Errorf("peer %s: %v: %w: %w", addr, msg, ErrNotSent, ErrUnreachable)
	}
	return fmt.Errorf("peer %s: %v: %w", addr, msg, ErrUnreachable)
}

func (c *Client) unary(ctx context.Context, addr, method string, in []byte) ([]byte, error) {
	cc, err := c.conn(addr)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		// gRPC would not send it either; saying so lets a write's caller
		// know it surely did not apply.
		return nil, fmt.Errorf("%w: %w", err, ErrNotSent)
	}
	var out []byte
	if err := cc.Invoke(ctx, method, &in, &out); err != nil {
		return nil, transportError(ctx, addr, err)
	}
	payload, err := decodeAnswer(out)
	if err != nil {
		return nil, fmt.Errorf("peer %s: %w", addr, err)
	}
	return payload, nil
}

// Propose asks the server at addr to commit an encoded command; it returns
// the state machine's result (fsm.Result.Data).
func (c *Client) Propose(ctx context.Context, addr string, req *ProposeRequest) ([]byte, error) {
	data, err := c.unary(ctx, addr, methodPropose, req.marshal())
	if errors.Is(err, errCorruptMessage) {
		// The server ran the call: the command may have applied.
		return nil, fmt.Errorf("%w: %w", err, errs.UnknownOutcome)
	}
	return data, err
}

// Read asks the server at addr for a read.
func (c *Client) Read(ctx context.Context, addr string, req *ReadRequest) (*ReadResponse, error) {
	b, err := c.unary(ctx, addr, methodRead, req.marshal())
	if err != nil {
		return nil, err
	}
	var resp ReadResponse
	if err := resp.unmarshal(b); err != nil {
		return nil, fmt.Errorf("peer %s: %w", addr, err)
	}
	return &resp, nil
}

// Call runs op at addr with in (JSON-encoded; nil = none) and decodes the
// answer into out (nil = ignore it).
func (c *Client) Call(ctx context.Context, addr, op string, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("peer %s: encode %s: %v: %w", addr, op, err, errs.Invalid)
		}
	}
	e := encoder{b: make([]byte, 0, len(op)+len(body)+8)}
	e.string(op)
	e.bytes(body)
	b, err := c.unary(ctx, addr, methodCall, e.b)
	if err != nil {
		return err
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("peer %s: decode %s answer: %v: %w", addr, op, err, ErrUnreachable)
	}
	return nil
}

// Join asks the server at addr to add the sender.
func (c *Client) Join(ctx context.Context, addr string, req JoinRequest) (JoinResponse, error) {
	var resp JoinResponse
	err := c.Call(ctx, addr, OpJoin, req, &resp)
	return resp, err
}

// KeepAlive asks the server at addr, the leader of the lease's group, to
// renew a lease.
func (c *Client) KeepAlive(ctx context.Context, addr string, req KeepAliveRequest) (KeepAliveResponse, error) {
	var resp KeepAliveResponse
	err := c.Call(ctx, addr, OpKeepAlive, req, &resp)
	return resp, err
}

// KeepAlives asks the server at addr, the leader of the leases' group, to
// renew them.
func (c *Client) KeepAlives(ctx context.Context, addr string, req KeepAliveBatchRequest) (KeepAliveBatchResponse, error) {
	var resp KeepAliveBatchResponse
	err := c.Call(ctx, addr, OpKeepAlives, req, &resp)
	return resp, err
}

// Status asks the server at addr for its status.
func (c *Client) Status(ctx context.Context, addr string) (Status, error) {
	var st Status
	err := c.Call(ctx, addr, OpStatus, nil, &st)
	return st, err
}

// WatchStream receives the frames of one watch.
type WatchStream struct {
	addr   string
	ctx    context.Context
	stream grpc.ClientStream
}

// Watch starts a watch at addr; the stream ends with a frame whose Err is
// set, or with an error of Recv (the transport, or ctx).
func (c *Client) Watch(ctx context.Context, addr string, req *WatchRequest) (*WatchStream, error) {
	desc := &grpc.StreamDesc{StreamName: "Watch", ServerStreams: true}
	w, err := c.openStream(ctx, addr, desc, methodWatch, req.marshal())
	if err != nil {
		return nil, err
	}
	if err := w.stream.CloseSend(); err != nil {
		return nil, transportError(ctx, addr, err)
	}
	return w, nil
}

// openStream opens a stream of method at addr and sends its first
// message, in.
func (c *Client) openStream(ctx context.Context, addr string, desc *grpc.StreamDesc, method string, in []byte) (*WatchStream, error) {
	cc, err := c.conn(addr)
	if err != nil {
		return nil, err
	}
	s, err := cc.NewStream(ctx, desc, method)
	if err != nil {
		return nil, transportError(ctx, addr, err)
	}
	if err := s.SendMsg(&in); err != nil {
		return nil, transportError(ctx, addr, err)
	}
	return &WatchStream{addr: addr, ctx: ctx, stream: s}, nil
}

// Recv returns the next frame; a frame with Err set is the last.
func (w *WatchStream) Recv() (*WatchFrame, error) {
	var b []byte
	if err := w.stream.RecvMsg(&b); err != nil {
		if errors.Is(err, io.EOF) {
			// A server ends a stream without a last frame when the call's
			// ctx ended there: its copy of the caller's deadline can fire a
			// moment before the caller's own (seen on a loaded machine).
			if _, ok := w.ctx.Deadline(); ok {
				grace := time.NewTimer(time.Second)
				select {
				case <-w.ctx.Done():
					grace.Stop()
					return nil, w.ctx.Err()
				case <-grace.C:
				}
			}
			return nil, fmt.Errorf("peer %s: watch stream ended without a reason: %w", w.addr, ErrUnreachable)
		}
		return nil, transportError(w.ctx, w.addr, err)
	}
	var f WatchFrame
	if err := f.unmarshal(b); err != nil {
		return nil, fmt.Errorf("peer %s: %w", w.addr, err)
	}
	return &f, nil
}
