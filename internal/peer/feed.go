package peer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/cespare/xxhash/v2"
	"google.golang.org/grpc"

	"github.com/dister/dister/internal/errs"
)

// A feed is a client node's cache watch of one group, filtered to the keys
// the client caches: the events of other keys stay on the server, and the
// client learns only that their revisions went by (progress notes), which
// is all its linearizable and session reads need of them.
//
// It is a bidirectional stream. The client's first message is a
// FeedRequest: the watch, and the hashes of the keys to follow from its
// start. Each later message is a FeedChange that adds or removes hashes.
// The server answers with WatchFrames, as a watch does; for each change
// it sends, in the stream's order, a frame with Ack set to the change's
// Seq: every event of an added key after the ack's Revision follows it, and
// none of a removed key does. That order is what lets a client cache a
// value it read at revision R only when R is not older than the ack
// (nothing of the key can have gone by unseen since).
//
// A hash that two keys share only brings the client events it ignores.
// A server that does not have the method answers codes.Unimplemented: the
// client then follows the group through an unfiltered Watch.

const methodFeed = "/" + serviceName + "/Feed"

// Bounds of a feed's filter.
const (
	// MaxFeedKeys is how many key hashes one feed may follow; a client
	// whose cache is larger follows the group unfiltered.
	MaxFeedKeys = 1 << 18
	// MaxFeedChange is how many hashes one message may add or remove.
	MaxFeedChange = 1 << 14
)

// KeyHash is the hash a feed's filter holds for key.
func KeyHash(key string) uint64 { return xxhash.Sum64String(key) }

// FeedRequest opens a feed: Watch as a watch would be, following only the
// keys whose hashes are in Keys (and those changes add).
type FeedRequest struct {
	Watch WatchRequest
	Keys  []uint64
}

// FeedChange adds and removes key hashes of a feed's filter; Seq (> 0,
// rising) is what the server's ack names.
type FeedChange struct {
	Seq    uint64
	Add    []uint64
	Remove []uint64
}

func (m *FeedRequest) marshal() []byte {
	e := encoder{}
	e.bytes(m.Watch.marshal())
	appendHashes(&e, m.Keys)
	return e.b
}

func (m *FeedRequest) unmarshal(b []byte) error {
	d := decoder{b: b}
	w := d.raw(len(b))
	m.Keys = readHashes(&d, MaxFeedKeys)
	if err := d.end(); err != nil {
		return err
	}
	return m.Watch.unmarshal(w)
}

func (m *FeedChange) marshal() []byte {
	e := encoder{b: make([]byte, 0, 16+8*(len(m.Add)+len(m.Remove)))}
	e.uvarint(m.Seq)
	appendHashes(&e, m.Add)
	appendHashes(&e, m.Remove)
	return e.b
}

func (m *FeedChange) unmarshal(b []byte) error {
	d := decoder{b: b}
	m.Seq = d.uvarint()
	m.Add = readHashes(&d, MaxFeedChange)
	m.Remove = readHashes(&d, MaxFeedChange)
	if err := d.end(); err != nil {
		return err
	}
	if m.Seq == 0 {
		return errCorruptMessage
	}
	return nil
}

func appendHashes(e *encoder, hs []uint64) {
	e.uvarint(uint64(len(hs)))
	for _, h := range hs {
		e.b = binary.LittleEndian.AppendUint64(e.b, h)
	}
}

func readHashes(d *decoder, max int) []uint64 {
	n := d.uvarint()
	if d.err != nil || n > uint64(max) || n*8 > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	if n == 0 {
		return nil
	}
	hs := make([]uint64, n)
	for i := range hs {
		hs[i] = binary.LittleEndian.Uint64(d.b[8*i:])
	}
	d.b = d.b[8*n:]
	return hs
}

var feedDesc = grpc.StreamDesc{StreamName: "Feed", ServerStreams: true, ClientStreams: true, Handler: feedHandler}

func feedHandler(srv any, stream grpc.ServerStream) error {
	var in []byte
	if err := stream.RecvMsg(&in); err != nil {
		return err
	}
	send := func(f *WatchFrame) error {
		b := f.marshal()
		return stream.SendMsg(&b)
	}
	var req FeedRequest
	if err := req.unmarshal(in); err != nil {
		return send(&WatchFrame{Err: err})
	}
	box := srv.(*handlerBox)
	ctx := stream.Context()
	inputs := make(chan FeedInput, 16)
	// The receiver ends with the stream (gRPC cancels its ctx once the
	// handler returned, or when the server stops); the server's Close
	// waits for it.
	if !box.goRecv(func() { receiveChanges(ctx, stream, inputs) }) {
		return send(watchEnd(errs.Closed))
	}
	err := box.h.Feed(ctx, &req, inputs, send)
	if err == nil || ctx.Err() != nil {
		return nil
	}
	return send(watchEnd(err))
}

// FeedInput is what a feed's client sent: a change, or (Change nil) the
// error that broke its side of the stream, after which nothing comes.
type FeedInput struct {
	Change *FeedChange
	Err    error
}

// receiveChanges hands the client's changes to the handler until the
// stream ends. A client that closed its side (io.EOF) sends no more
// changes, and its stream goes on.
func receiveChanges(ctx context.Context, stream grpc.ServerStream, out chan<- FeedInput) {
	for {
		var b []byte
		in := FeedInput{}
		if err := stream.RecvMsg(&b); errors.Is(err, io.EOF) {
			return
		} else if err != nil {
			in.Err = err
		} else {
			in.Change = &FeedChange{}
			if err := in.Change.unmarshal(b); err != nil {
				in = FeedInput{Err: err}
			}
		}
		select {
		case out <- in:
		case <-ctx.Done():
			return
		}
		if in.Err != nil {
			return
		}
	}
}

// FeedStream is the client's end of a feed: Recv as a WatchStream's, and
// Change to send filter changes (safe for concurrent use).
type FeedStream struct {
	*WatchStream
	mu sync.Mutex
}

// Feed opens a feed at addr. A server without the method fails it with an
// error matching ErrUnimplemented, at once or at the first Recv.
func (c *Client) Feed(ctx context.Context, addr string, req *FeedRequest) (*FeedStream, error) {
	desc := &grpc.StreamDesc{StreamName: "Feed", ServerStreams: true, ClientStreams: true}
	w, err := c.openStream(ctx, addr, desc, methodFeed, req.marshal())
	if err != nil {
		return nil, err
	}
	return &FeedStream{WatchStream: w}, nil
}

// Change sends c to the server.
func (f *FeedStream) Change(c *FeedChange) error {
	if len(c.Add) > MaxFeedChange || len(c.Remove) > MaxFeedChange {
		return fmt.Errorf("feed change of %d and %d keys, more than %d: %w", len(c.Add), len(c.Remove), MaxFeedChange, errs.TooLarge)
	}
	b := c.marshal()
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.stream.SendMsg(&b); err != nil {
		return transportError(f.ctx, f.addr, err)
	}
	return nil
}
