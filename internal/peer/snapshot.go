package peer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"
)

// A snapshot (a backup of the whole cluster, for a client-role node) is a
// server stream of frames: chunks of the file, then one end frame with
// the snapshot's description as JSON, or a failure frame (as unary answers
// carry them) when the server could not finish.
const (
	frameChunk   byte = 0
	frameFailure byte = 1
	frameEnd     byte = 2
	// snapshotChunk is the size of a chunk frame's data.
	snapshotChunk = 1 << 20
)

var snapshotDesc = grpc.StreamDesc{StreamName: "Snapshot", ServerStreams: true, Handler: snapshotHandler}

func snapshotHandler(srv any, stream grpc.ServerStream) error {
	var in []byte
	if err := stream.RecvMsg(&in); err != nil {
		return err
	}
	ctx := stream.Context()
	cw := &chunkWriter{send: func(b []byte) error { return stream.SendMsg(&b) }}
	info, err := srv.(*handlerBox).h.Snapshot(ctx, cw)
	if err == nil {
		err = cw.flush()
	}
	var body []byte
	if err == nil {
		body, err = json.Marshal(info)
	}
	if err != nil {
		if ctx.Err() != nil || cw.sendErr != nil {
			return nil // the caller went away: nobody reads a failure frame
		}
		b := encodeFailure(err)
		return stream.SendMsg(&b)
	}
	b := append([]byte{frameEnd}, body...)
	return stream.SendMsg(&b)
}

// chunkWriter turns the snapshot's writes into chunk frames of up to
// snapshotChunk bytes. Each frame is a new buffer: gRPC may still hold a
// sent message after SendMsg returns.
type chunkWriter struct {
	send    func([]byte) error
	buf     []byte
	sendErr error
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if w.buf == nil {
			w.buf = append(make([]byte, 0, 1+snapshotChunk), frameChunk)
		}
		take := min(len(p), 1+snapshotChunk-len(w.buf))
		w.buf = append(w.buf, p[:take]...)
		p = p[take:]
		if len(w.buf) == 1+snapshotChunk {
			if err := w.flush(); err != nil {
				return n - len(p), err
			}
		}
	}
	return n, nil
}

func (w *chunkWriter) flush() error {
	if w.sendErr != nil || len(w.buf) <= 1 {
		return w.sendErr
	}
	b := w.buf
	w.buf = nil
	if err := w.send(b); err != nil {
		w.sendErr = fmt.Errorf("send a snapshot chunk: %w", err)
	}
	return w.sendErr
}

// Snapshot streams a snapshot of the whole cluster from the server at addr
// into w and returns the server's description of it (JSON). written counts
// the bytes w took: after a failure with written > 0, w holds an
// incomplete file.
func (c *Client) Snapshot(ctx context.Context, addr string, w io.Writer) (info json.RawMessage, written int64, err error) {
	cc, err := c.conn(addr)
	if err != nil {
		return nil, 0, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream when w fails
	s, err := cc.NewStream(ctx, &snapshotDesc, methodSnapshot)
	if err != nil {
		return nil, 0, transportError(ctx, addr, err)
	}
	in := []byte{}
	if err := s.SendMsg(&in); err != nil {
		return nil, 0, transportError(ctx, addr, err)
	}
	if err := s.CloseSend(); err != nil {
		return nil, 0, transportError(ctx, addr, err)
	}
	for {
		var b []byte
		if err := s.RecvMsg(&b); err != nil {
			if errors.Is(err, io.EOF) {
				return nil, written, fmt.Errorf("peer %s: snapshot stream ended without an end: %w", addr, ErrUnreachable)
			}
			return nil, written, transportError(ctx, addr, err)
		}
		if len(b) == 0 {
			return nil, written, fmt.Errorf("peer %s: %w", addr, errCorruptMessage)
		}
		switch b[0] {
		case frameChunk:
			n, err := w.Write(b[1:])
			written += int64(n)
			if err != nil {
				return nil, written, err
			}
		case frameEnd:
			return json.RawMessage(b[1:]), written, nil
		case frameFailure:
			_, err := decodeAnswer(b)
			return nil, written, fmt.Errorf("peer %s: %w", addr, err)
		default:
			return nil, written, fmt.Errorf("peer %s: %w", addr, errCorruptMessage)
		}
	}
}
