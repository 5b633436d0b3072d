package peer

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"reflect"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeHandler answers from fixed data; err, when set, is every call's error.
type fakeHandler struct {
	err    error
	frames []*WatchFrame
	end    error
}

func (f fakeHandler) Propose(_ context.Context, req *ProposeRequest) (*ProposeResponse, error) {
	if f.err != nil {
		return nil, f.err
	}
	return &ProposeResponse{Data: append([]byte(req.Group+":"), req.Cmd...)}, nil
}

// ProposeMany answers each command as Propose would; a command "fail"
// gets a conflict of its own.
func (f fakeHandler) ProposeMany(_ context.Context, req *ProposeManyRequest) ([]ProposeAnswer, error) {
	if f.err != nil {
		return nil, f.err
	}
	answers := make([]ProposeAnswer, len(req.Cmds))
	for i, c := range req.Cmds {
		if string(c) == "fail" {
			answers[i].Err = fmt.Errorf("command %d: %w", i, errs.Conflict)
			continue
		}
		answers[i].Data = append([]byte(req.Group+":"), c...)
	}
	return answers, nil
}

func (f fakeHandler) Read(_ context.Context, req *ReadRequest) (*ReadResponse, error) {
	if f.err != nil {
		return nil, f.err
	}
	return &ReadResponse{Revision: req.MinRevision + 1, Found: true, KVs: []fsm.KV{{Key: req.Key,
		Record: fsm.Record{Value: []byte("v"), CreateRevision: 1, ModRevision: 2, Version: 3, Lease: 4}}}}, nil
}

func (f fakeHandler) Watch(ctx context.Context, _ *WatchRequest, send func(*WatchFrame) error) error {
	for _, fr := range f.frames {
		if err := send(fr); err != nil {
			return err
		}
	}
	if f.end == nil {
		<-ctx.Done()
	}
	return f.end
}

// Feed sends f's frames, then acks each change with its count of added
// keys as the revision (and the count of initial keys first, as Ack 1<<40).
func (f fakeHandler) Feed(ctx context.Context, req *FeedRequest, in <-chan FeedInput, send func(*WatchFrame) error) error {
	for _, fr := range f.frames {
		if err := send(fr); err != nil {
			return err
		}
	}
	if err := send(&WatchFrame{Revision: int64(len(req.Keys)), Ack: 1 << 40}); err != nil {
		return err
	}
	for {
		var c *FeedChange
		select {
		case i := <-in:
			if i.Err != nil {
				return i.Err
			}
			c = i.Change
		case <-ctx.Done():
			return nil
		}
		if err := send(&WatchFrame{Revision: int64(len(c.Add)*1000 + len(c.Remove)), Ack: c.Seq}); err != nil {
			return err
		}
	}
}

func (f fakeHandler) Snapshot(_ context.Context, w io.Writer) (any, error) {
	if f.err != nil {
		return nil, f.err
	}
	_, err := w.Write([]byte("snapshot"))
	return map[string]int{"bytes": 8}, err
}

func (f fakeHandler) Call(_ context.Context, op string, body []byte) (any, error) {
	if f.err != nil {
		return nil, f.err
	}
	switch op {
	case OpJoin:
		var req JoinRequest
		if err := json.Unmarshal(body, &req); err != nil {
			return nil, fmt.Errorf("join: %v: %w", err, errs.Invalid)
		}
		return JoinResponse{NodeID: req.NodeID + 10}, nil
	case OpStatus:
		return Status{NodeID: 7, Applied: map[uint64]uint64{1: 42}}, nil
	case OpKeepAlive:
		var req KeepAliveRequest
		if err := json.Unmarshal(body, &req); err != nil {
			return nil, err
		}
		if req.Lease == 0 {
			return nil, fmt.Errorf("lease 0: %w", errs.LeaseNotFound)
		}
		return KeepAliveResponse{TTLMillis: 1000}, nil
	}
	return nil, fmt.Errorf("op %q: %w", op, errs.Invalid)
}

func serve(t *testing.T, h Handler) (*Server, *Client) {
	t.Helper()
	s, err := Listen("127.0.0.1:0", h, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	c := NewClient()
	t.Cleanup(func() {
		c.Close()
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s, c
}

func ctx5(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestCalls(t *testing.T) {
	s, c := serve(t, fakeHandler{})
	ctx := ctx5(t)
	resp, err := c.Join(ctx, s.Addr(), JoinRequest{NodeID: 1, RaftAddr: "a:1", PeerAddr: "a:2"})
	if err != nil || resp.NodeID != 11 {
		t.Fatalf("join: %+v %v", resp, err)
	}
	ka, err := c.KeepAlive(ctx, s.Addr(), KeepAliveRequest{Shard: 2, Lease: 5})
	if err != nil || ka.TTLMillis != 1000 {
		t.Fatalf("keepalive: %+v %v", ka, err)
	}
	if _, err := c.KeepAlive(ctx, s.Addr(), KeepAliveRequest{Shard: 2}); !errors.Is(err, errs.LeaseNotFound) {
		t.Fatalf("keepalive of an unknown lease: %v", err)
	}
	st, err := c.Status(ctx, s.Addr())
	if err != nil || st.NodeID != 7 || st.Applied[1] != 42 {
		t.Fatalf("status: %+v %v", st, err)
	}
	if err := c.Call(ctx, s.Addr(), "no-such-op", nil, nil); !errors.Is(err, errs.Invalid) {
		t.Fatalf("unknown op: %v", err)
	}
	data, err := c.Propose(ctx, s.Addr(), &ProposeRequest{Group: "g", Cmd: []byte{1, 2}})
	if err != nil || string(data) != "g:\x01\x02" {
		t.Fatalf("propose: %q %v", data, err)
	}
	r, err := c.Read(ctx, s.Addr(), &ReadRequest{Group: "g", Query: QueryGet, Key: "k", MinRevision: 9})
	want := &ReadResponse{Revision: 10, Found: true, KVs: []fsm.KV{{Key: "k",
		Record: fsm.Record{Value: []byte("v"), CreateRevision: 1, ModRevision: 2, Version: 3, Lease: 4}}}}
	if err != nil || !reflect.DeepEqual(r, want) {
		t.Fatalf("read: %+v %v", r, err)
	}
}

// Sentinels cross the wire: the caller can tell a refusal from an outage,
// and an unknown outcome never reads as "not applied".
func TestErrorsKeepTheirSentinel(t *testing.T) {
	for _, want := range []error{errs.Invalid, errs.Conflict, errs.NoQuorum, errs.Closed, errs.GroupNotFound,
		errs.LeaseNotFound, errs.TooLarge, errs.Compacted, errs.UnknownOutcome} {
		s, c := serve(t, fakeHandler{err: fmt.Errorf("remote detail: %w", want)})
		_, err := c.Propose(ctx5(t), s.Addr(), &ProposeRequest{})
		if !errors.Is(err, want) || errors.Is(err, ErrUnreachable) {
			t.Errorf("remote %v arrived as %v", want, err)
		}
	}
	// An unknown outcome joined with "no quorum" is an unknown outcome only.
	s, c := serve(t, fakeHandler{err: fmt.Errorf("%w: %w", errs.NoQuorum, errs.UnknownOutcome)})
	if _, err := c.Propose(ctx5(t), s.Addr(), &ProposeRequest{}); !errors.Is(err, errs.UnknownOutcome) || errors.Is(err, errs.NoQuorum) {
		t.Errorf("unknown outcome arrived as %v", err)
	}
	// The server's own deadline is no quorum to a caller whose ctx goes on.
	s, c = serve(t, fakeHandler{err: context.DeadlineExceeded})
	if _, err := c.Propose(ctx5(t), s.Addr(), &ProposeRequest{}); !errors.Is(err, errs.NoQuorum) {
		t.Errorf("server deadline arrived as %v", err)
	}
}

func TestUnreachable(t *testing.T) {
	s, c := serve(t, fakeHandler{})
	addr := s.Addr()
	s.Close()
	if _, err := c.Status(ctx5(t), addr); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("closed server: %v", err)
	}
	c.Close()
	if _, err := c.Status(ctx5(t), addr); !errors.Is(err, errs.Closed) {
		t.Fatalf("closed client: %v", err)
	}
}

// The caller's deadline reaches the handler, and ends the call at the caller.
func TestDeadlineCarried(t *testing.T) {
	s, c := serve(t, fakeHandler{})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	w, err := c.Watch(ctx, s.Addr(), &WatchRequest{Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("watch past its deadline: %v", err)
	}
}

func TestWatchStream(t *testing.T) {
	frames := []*WatchFrame{
		{Revision: 5, Events: []fsm.Event{
			{Type: fsm.EventPut, Revision: 5, KV: fsm.KV{Key: "a", Record: fsm.Record{Value: []byte("1"), CreateRevision: 5, ModRevision: 5, Version: 1}}},
			{Type: fsm.EventDelete, Revision: 5, KV: fsm.KV{Key: "b", Record: fsm.Record{ModRevision: 5}},
				Prev: &fsm.KV{Key: "b", Record: fsm.Record{Value: []byte("old"), CreateRevision: 2, ModRevision: 3, Version: 2}}},
		}},
		{Revision: 9}, // progress
	}
	s, c := serve(t, fakeHandler{frames: frames, end: &fsm.CompactedError{From: 1, CompactRevision: 77}})
	w, err := c.Watch(ctx5(t), s.Addr(), &WatchRequest{Group: "g", Prefix: "a", From: 3, PrevKV: true})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range frames {
		got, err := w.Recv()
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("frame %d: %+v %v, want %+v", i, got, err, want)
		}
	}
	last, err := w.Recv()
	if err != nil || !errors.Is(last.Err, errs.Compacted) || last.CompactRevision != 77 {
		t.Fatalf("end frame: %+v %v", last, err)
	}
}

// TestFeedStream: a feed's request, its changes and the acks cross the wire
// intact and in order, on a stream whose frames go on meanwhile; a change
// over the bound is refused before it is sent.
func TestFeedStream(t *testing.T) {
	frames := []*WatchFrame{{Revision: 4}, {Revision: 5, Events: []fsm.Event{
		{Type: fsm.EventPut, Revision: 5, KV: fsm.KV{Key: "a", Record: fsm.Record{Value: []byte("1"), CreateRevision: 5, ModRevision: 5, Version: 1}}}}}}
	s, c := serve(t, fakeHandler{frames: frames})
	ctx := ctx5(t)
	f, err := c.Feed(ctx, s.Addr(), &FeedRequest{Watch: WatchRequest{Group: "g", From: 5}, Keys: []uint64{KeyHash("a"), KeyHash("b"), 3}})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range frames {
		got, err := f.Recv()
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("frame %d: %+v %v, want %+v", i, got, err, want)
		}
	}
	if got, err := f.Recv(); err != nil || got.Ack != 1<<40 || got.Revision != 3 {
		t.Fatalf("the request's keys: %+v %v, want 3 keys acked", got, err)
	}
	for seq := uint64(1); seq <= 3; seq++ {
		add := make([]uint64, seq*100)
		if err := f.Change(&FeedChange{Seq: seq, Add: add, Remove: []uint64{7}}); err != nil {
			t.Fatal(err)
		}
	}
	for seq := uint64(1); seq <= 3; seq++ {
		got, err := f.Recv()
		if err != nil || got.Ack != seq || got.Revision != int64(seq*100*1000+1) || len(got.Events) != 0 {
			t.Fatalf("ack %d: %+v %v", seq, got, err)
		}
	}
	if err := f.Change(&FeedChange{Seq: 4, Add: make([]uint64, MaxFeedChange+1)}); !errors.Is(err, errs.TooLarge) {
		t.Fatalf("change over the bound: %v, want ErrTooLarge", err)
	}
}

// A hash count beyond the bytes there are, or beyond the bound, is refused
// before anything is allocated for it.
func TestFeedDecodeBounds(t *testing.T) {
	var c FeedChange
	if err := c.unmarshal([]byte{1, 0xff, 0xff, 0xff, 0x7f}); !errors.Is(err, errs.Invalid) {
		t.Fatalf("huge count: %v", err)
	}
	if err := c.unmarshal((&FeedChange{Seq: 0}).marshal()); !errors.Is(err, errs.Invalid) {
		t.Fatalf("seq 0: %v", err)
	}
	var r FeedRequest
	b := (&FeedRequest{Watch: WatchRequest{Group: "g", From: 1}, Keys: []uint64{9}}).marshal()
	if err := r.unmarshal(b[:len(b)-1]); !errors.Is(err, errs.Invalid) {
		t.Fatalf("cut request: %v", err)
	}
	if err := r.unmarshal(b); err != nil || r.Watch.Group != "g" || len(r.Keys) != 1 || r.Keys[0] != 9 {
		t.Fatalf("request: %+v %v", r, err)
	}
	var w WatchFrame
	if err := w.unmarshal((&WatchFrame{Revision: 1, Ack: 0}).marshal()); err != nil || w.Ack != 0 {
		t.Fatalf("a frame without ack: %+v %v", w, err)
	}
	if err := w.unmarshal([]byte{2, 2, 0}); !errors.Is(err, errs.Invalid) {
		t.Fatalf("ack 0: %v", err)
	}
}

// Every decoder refuses what its encoder did not write, without panicking
// or allocating much.
func FuzzDecodeMessages(f *testing.F) {
	f.Add((&ProposeRequest{Group: "g", Cmd: []byte{1, 2, 3}}).marshal())
	f.Add((&ReadRequest{Group: "g", Query: QueryList, Key: "p", Limit: 10}).marshal())
	f.Add((&ReadResponse{Revision: 3, KVs: []fsm.KV{{Key: "k"}}, Keys: []string{"x"}}).marshal())
	f.Add((&WatchRequest{Group: "g", Prefix: "p", From: 4}).marshal())
	f.Add((&WatchFrame{Revision: 2, Events: []fsm.Event{{Type: fsm.EventPut, KV: fsm.KV{Key: "k"}}}}).marshal())
	f.Add((&WatchFrame{Err: errs.Compacted, CompactRevision: 9}).marshal())
	f.Add((&WatchFrame{Revision: 7, Ack: 3}).marshal())
	f.Add((&FeedRequest{Watch: WatchRequest{Group: "g", From: 4}, Keys: []uint64{1, 2}}).marshal())
	f.Add((&FeedChange{Seq: 1, Add: []uint64{5}, Remove: []uint64{6}}).marshal())
	f.Add((&ProposeManyRequest{Group: "g", Cmds: [][]byte{{1}, {2, 3}}}).marshal())
	f.Add(marshalAnswers([]ProposeAnswer{{Data: []byte{1}}, {Err: errs.Conflict}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		var fr FeedRequest
		var fc FeedChange
		_ = fr.unmarshal(b)
		_ = fc.unmarshal(b)
		var p ProposeRequest
		var r ReadRequest
		var rr ReadResponse
		var w WatchRequest
		var wf WatchFrame
		_ = p.unmarshal(b)
		_ = r.unmarshal(b)
		_ = rr.unmarshal(b)
		_ = w.unmarshal(b)
		_ = wf.unmarshal(b)
		_, _ = decodeAnswer(b)
		var pm ProposeManyRequest
		_ = pm.unmarshal(b)
		for _, want := range []int{1, 2, MaxProposeMany} {
			_, _ = unmarshalAnswers(b, want)
		}
	})
}

// lateCtx has a deadline in the past whose timer has not fired yet, as a
// context.WithDeadline's may not on a loaded machine.
type lateCtx struct {
	context.Context
	deadline time.Time
	done     chan struct{}
}

func (c *lateCtx) Deadline() (time.Time, bool) { return c.deadline, true }
func (c *lateCtx) Done() <-chan struct{}       { return c.done }
func (c *lateCtx) Err() error {
	select {
	case <-c.done:
		return context.DeadlineExceeded
	default:
		return nil
	}
}

// TestDeadlineErrorOnlyOnceCtxEnded: when the server resets a call at the
// deadline it was sent before this side's timer fired, the call reports
// the deadline only once ctx has ended too, so a caller that then asks
// ctx.Err() (to tell its own end from a failure) sees it. The client-role
// REST suite's ?timeout= watch stream ended with an error event before.
func TestDeadlineErrorOnlyOnceCtxEnded(t *testing.T) {
	ctx := &lateCtx{Context: context.Background(), deadline: time.Now().Add(-time.Millisecond), done: make(chan struct{})}
	go func() {
		time.Sleep(50 * time.Millisecond)
		close(ctx.done)
	}()
	err := transportError(ctx, "127.0.0.1:1", errors.New("stream reset"))
	if !errors.Is(err, context.DeadlineExceeded) || ctx.Err() == nil {
		t.Fatalf("got %v with ctx.Err() = %v: want the deadline, and ctx ended", err, ctx.Err())
	}
}

// serveDesc serves desc (a variant of the service: an earlier version, or
// a broken one) over fakeHandler until the test ends; its address.
func serveDesc(t *testing.T, desc *grpc.ServiceDesc) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}))
	srv.RegisterService(desc, &handlerBox{h: fakeHandler{}})
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return ln.Addr().String()
}

// A server of an earlier version has no Feed: the client's stream fails
// with ErrUnimplemented (not ErrUnreachable, which would send it to the
// next server), so it can fall back to a watch.
func TestFeedUnimplemented(t *testing.T) {
	old := serviceDesc
	old.Streams = slices.DeleteFunc(slices.Clone(old.Streams), func(d grpc.StreamDesc) bool { return d.StreamName == "Feed" })
	addr := serveDesc(t, &old)
	c := NewClient()
	defer c.Close()
	ctx := ctx5(t)
	f, err := c.Feed(ctx, addr, &FeedRequest{Watch: WatchRequest{Group: "g", From: 1}})
	if err == nil {
		_, err = f.Recv()
	}
	if !errors.Is(err, ErrUnimplemented) || errors.Is(err, ErrUnreachable) {
		t.Fatalf("feed on a server without it: %v, want ErrUnimplemented alone", err)
	}
	// The watch it falls back to works there.
	if _, err := c.Watch(ctx, addr, &WatchRequest{Group: "g", From: 1}); err != nil {
		t.Fatal(err)
	}
}

// ProposeMany answers each command on its own: one command's error (a
// conflict here) leaves the others' results, and keeps its sentinel.
func TestProposeMany(t *testing.T) {
	s, c := serve(t, fakeHandler{})
	ctx := ctx5(t)
	got, err := c.ProposeMany(ctx, s.Addr(), &ProposeManyRequest{Group: "g", Cmds: [][]byte{[]byte("a"), []byte("fail"), []byte("c")}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || string(got[0].Data) != "g:a" || got[0].Err != nil || !errors.Is(got[1].Err, errs.Conflict) ||
		string(got[2].Data) != "g:c" || got[2].Err != nil {
		t.Fatalf("answers %+v", got)
	}
	// A refusal of the whole call is the call's error.
	s2, c2 := serve(t, fakeHandler{err: fmt.Errorf("no: %w", errs.Forbidden)})
	if _, err := c2.ProposeMany(ctx, s2.Addr(), &ProposeManyRequest{Group: "g", Cmds: [][]byte{{1}, {2}}}); !errors.Is(err, errs.Forbidden) {
		t.Fatalf("refused call: %v, want ErrForbidden", err)
	}
	// A handler without it answers as a server without the method.
	s3, c3 := serve(t, fakeHandler{err: fmt.Errorf("old: %w", ErrUnimplemented)})
	if _, err := c3.ProposeMany(ctx, s3.Addr(), &ProposeManyRequest{Group: "g", Cmds: [][]byte{{1}, {2}}}); !errors.Is(err, ErrUnimplemented) || errors.Is(err, ErrUnreachable) {
		t.Fatalf("call to a handler without it: %v, want ErrUnimplemented alone", err)
	}
	// The client sends 1 to MaxProposeMany commands; a server refuses
	// other counts, and anything else malformed, as invalid.
	for _, n := range []int{0, MaxProposeMany + 1} {
		if _, err := c.ProposeMany(ctx, s.Addr(), &ProposeManyRequest{Group: "g", Cmds: make([][]byte, n)}); !errors.Is(err, errs.Invalid) {
			t.Fatalf("%d commands: %v, want ErrInvalid", n, err)
		}
	}
	for name, b := range map[string][]byte{
		"no commands":   (&ProposeManyRequest{Group: "g"}).marshal(),
		"too many":      append([]byte{1, 'g'}, binary.AppendUvarint(nil, MaxProposeMany+1)...),
		"count too big": {1, 'g', 5, 1, 'x'},
		"trailing":      append((&ProposeManyRequest{Group: "g", Cmds: [][]byte{{1}}}).marshal(), 0),
	} {
		out, err := c.unary(ctx, s.Addr(), methodProposeMany, b)
		if !errors.Is(err, errs.Invalid) {
			t.Fatalf("%s: %v, %v; want ErrInvalid", name, out, err)
		}
	}
	// Answers that do not match the call are refused.
	for _, want := range []int{1, 3} {
		if _, err := unmarshalAnswers(marshalAnswers([]ProposeAnswer{{Data: []byte{1}}, {Data: []byte{2}}}), want); err == nil {
			t.Fatalf("2 answers decoded as %d", want)
		}
	}
}

// An answer to a write that cannot be decoded is an unknown outcome (the
// server ran the call), not a final ErrInvalid: for Propose as for
// ProposeMany.
func TestCorruptWriteAnswerIsUnknownOutcome(t *testing.T) {
	garbage := func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
		var in []byte
		if err := dec(&in); err != nil {
			return nil, err
		}
		b := []byte{7, 7}
		return &b, nil
	}
	desc := serviceDesc
	desc.Methods = []grpc.MethodDesc{{MethodName: "Propose", Handler: garbage}, {MethodName: "ProposeMany", Handler: garbage}}
	desc.Streams = nil
	addr := serveDesc(t, &desc)
	c := NewClient()
	defer c.Close()
	ctx := ctx5(t)
	if _, err := c.Propose(ctx, addr, &ProposeRequest{Group: "g", Cmd: []byte{1}}); !errors.Is(err, errs.UnknownOutcome) {
		t.Fatalf("propose with a corrupt answer: %v, want ErrUnknownOutcome", err)
	}
	if _, err := c.ProposeMany(ctx, addr, &ProposeManyRequest{Group: "g", Cmds: [][]byte{{1}, {2}}}); !errors.Is(err, errs.UnknownOutcome) {
		t.Fatalf("propose many with a corrupt answer: %v, want ErrUnknownOutcome", err)
	}
}
