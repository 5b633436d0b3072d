package shard

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/raftio"
	pb "github.com/lni/dragonboat/v4/raftpb"
)

// The Raft transport. It speaks dragonboat's TCP wire format, so a server
// running it and one running dragonboat's built-in transport talk to each
// other (a rolling upgrade), but sizes its buffers by the traffic:
// dragonboat's keeps a 2 MiB send buffer and a 2.1 MiB receive buffer for
// every connection for the life of the process (its soft settings, a
// package global no embedding program can change), which was 48 of a 3-server
// process's 69 MB of live heap. It also writes a frame of up to 1 MiB with one system call
// instead of three and reads through a buffer instead of three reads a frame.
//
// A frame is the magic 0xAE 0x7D, an 18-byte header (method, payload size,
// the header's CRC-32, the payload's CRC-32, big-endian; the payload CRC is 0
// and unchecked under TLS, as dragonboat does) and the payload: a marshalled
// MessageBatch (method 100) or snapshot Chunk (method 200). Two zero bytes in
// place of the magic end a snapshot stream; the receiver answers two zero
// bytes once it has handled every chunk before them.

const (
	frameHeaderSize = 2 + 18
	methodRaft      = 100
	methodChunk     = 200

	// keptBufferSize bounds the buffers a connection keeps between frames;
	// a larger frame gets a buffer of its own that the GC takes back.
	keptBufferSize = 256 << 10
	readBufferSize = 16 << 10
	// maxFrameSize refuses a frame no dister server sends. dragonboat cuts
	// a message batch at 64 MiB and a chunk at 2 MiB, but never an entry: a
	// Replicate message carries at least one whole entry, and a txn of
	// MaxTxnOps puts of MaxValueSize values is one of over 128 MiB (a
	// follower forwarding proposals sends several in one message). A frame
	// the receiver refuses is sent again and again, so the limit is far
	// above those; what it costs is bounded by readPayload, which allocates
	// as the bytes arrive rather than what the header claims.
	maxFrameSize = 1 << 30
	// firstPayloadBuffer is what a payload larger than keptBufferSize gets
	// before any of it arrived: a whole snapshot chunk.
	firstPayloadBuffer = 4 << 20

	dialTimeout      = 5 * time.Second
	handshakeTimeout = 10 * time.Second
	writeTimeout     = 5 * time.Second
	writePiece       = 1 << 20 // of a frame, written within writeTimeout
	keepAlivePeriod  = 10 * time.Second
	// frameReadTimeout is how long a frame's sender may go without a
	// byte arriving (dragonboat's transport: 5 s per read of a frame).
	frameReadTimeout = 5 * time.Second
	streamEndTimeout = 10 * time.Second
)

var (
	frameMagic = [2]byte{0xAE, 0x7D}
	streamEnd  = [2]byte{0, 0}

	errBadFrame = errors.New("bad raft transport frame")
)

// transportFactory plugs the transport into a NodeHost; made, when set,
// keeps the transport it made (the Host's handle on it).
type transportFactory struct {
	log  *slog.Logger
	made *atomic.Pointer[transport]
}

func (f transportFactory) Create(nhc config.NodeHostConfig, onBatch raftio.MessageHandler, onChunk raftio.ChunkHandler) raftio.ITransport {
	t := &transport{nhc: nhc, onBatch: onBatch, onChunk: onChunk, log: f.log,
		encrypted: nhc.MutualTLS, frameReadTimeout: frameReadTimeout, conns: make(map[net.Conn]struct{}),
		closing: make(chan struct{})}
	if f.made != nil {
		f.made.Store(t)
	}
	return t
}

// Validate accepts the addresses dragonboat's own transport accepts.
func (transportFactory) Validate(addr string) bool { return config.IsValidAddress(addr) }

type transport struct {
	nhc       config.NodeHostConfig
	onBatch   raftio.MessageHandler
	onChunk   raftio.ChunkHandler
	log       *slog.Logger
	encrypted bool
	// frameReadTimeout: see the constant; tests shorten it.
	frameReadTimeout time.Duration

	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]struct{} // accepted, closed by Close
	closed bool
	// closing is closed by Close: it ends the accept loop's wait.
	closing chan struct{}
	wg      sync.WaitGroup // the accept loop and one goroutine per accepted conn
}

var _ raftio.ITransport = (*transport)(nil)

func (t *transport) Name() string { return "dister-tcp" }

func (t *transport) Start() error {
	tlsConfig, err := t.nhc.GetServerTLSConfig()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", t.nhc.GetListenAddress())
	if err != nil {
		return err
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		ln.Close()
		return errors.New("raft transport closed before it started")
	}
	t.ln = ln
	t.mu.Unlock()
	t.wg.Add(1)
	go t.accept(ln, tlsConfig)
	return nil
}

// The wait after a failed Accept (out of file descriptors and the like):
// it doubles from acceptRetryMin to acceptRetryMax and starts over after
// an Accept that works, so a lasting failure neither spins nor fills the
// log (one line per wait), and the loop never gives up on every peer.
const (
	acceptRetryMin = 5 * time.Millisecond
	acceptRetryMax = time.Second
)

func (t *transport) accept(ln net.Listener, tlsConfig *tls.Config) {
	defer t.wg.Done()
	var wait time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if t.isClosed() {
				return
			}
			wait = min(max(2*wait, acceptRetryMin), acceptRetryMax)
			t.log.Warn("raft transport accept", "err", err, "retry_in", wait)
			select {
			case <-time.After(wait):
			case <-t.closing:
				return
			}
			continue
		}
		wait = 0
		if tlsConfig != nil {
			conn = tls.Server(conn, tlsConfig)
		}
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			conn.Close()
			return
		}
		t.conns[conn] = struct{}{}
		t.wg.Add(1)
		t.mu.Unlock()
		go func() {
			defer t.wg.Done()
			t.serve(conn)
			t.mu.Lock()
			delete(t.conns, conn)
			t.mu.Unlock()
			conn.Close()
		}()
	}
}

func (t *transport) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

// Close stops accepting, closes the accepted connections and waits for
// their goroutines, so no handler runs after it returns.
func (t *transport) Close() error {
	t.mu.Lock()
	if !t.closed {
		close(t.closing)
	}
	t.closed = true
	if t.ln != nil {
		t.ln.Close()
	}
	for c := range t.conns {
		c.Close()
	}
	t.mu.Unlock()
	t.wg.Wait()
	return nil
}

// serve reads frames from one peer until it leaves, ends a snapshot
// stream or sends something that is not a frame.
func (t *transport) serve(conn net.Conn) {
	if tc, ok := conn.(*tls.Conn); ok {
		tc.SetDeadline(time.Now().Add(handshakeTimeout))
		if err := tc.Handshake(); err != nil {
			t.log.Debug("raft transport handshake", "remote", conn.RemoteAddr(), "err", err)
			return
		}
		tc.SetDeadline(time.Time{})
	}
	fr := &frameReader{conn: conn, timeout: t.frameReadTimeout}
	r := bufio.NewReaderSize(fr, readBufferSize)
	var header [frameHeaderSize]byte
	var kept []byte
	for {
		if _, err := io.ReadFull(r, header[:2]); err != nil {
			return
		}
		if header[0] == streamEnd[0] && header[1] == streamEnd[1] {
			conn.SetWriteDeadline(time.Now().Add(writeTimeout))
			conn.Write(streamEnd[:])
			return
		}
		if header[0] != frameMagic[0] || header[1] != frameMagic[1] {
			t.log.Warn("raft transport: dropping connection", "remote", conn.RemoteAddr(), "err", fmt.Errorf("%w: magic %x", errBadFrame, header[:2]))
			return
		}
		fr.inFrame = true
		if _, err := io.ReadFull(r, header[2:]); err != nil {
			return
		}
		method, size, sum, err := decodeFrameHeader(header[:])
		if err != nil {
			t.log.Warn("raft transport: dropping connection", "remote", conn.RemoteAddr(), "err", err)
			return
		}
		payload, err := readPayload(r, size, &kept)
		if err != nil {
			return
		}
		fr.inFrame = false
		if !t.encrypted && crc32.ChecksumIEEE(payload) != sum {
			t.log.Warn("raft transport: dropping connection", "remote", conn.RemoteAddr(), "err", "payload checksum mismatch")
			return
		}
		// Unmarshal copies what it keeps (entries' commands, chunks' data),
		// so the buffer is free for the next frame once the handler returns.
		if method == methodRaft {
			var batch pb.MessageBatch
			if err := unmarshalBatch(&batch, payload); err != nil {
				t.log.Warn("raft transport: dropping connection", "remote", conn.RemoteAddr(), "err", err)
				return
			}
			t.onBatch(batch)
			continue
		}
		var chunk pb.Chunk
		if err := safeUnmarshal(chunk.Unmarshal, payload); err != nil {
			t.log.Warn("raft transport: dropping connection", "remote", conn.RemoteAddr(), "err", err)
			return
		}
		if !t.onChunk(chunk) {
			return
		}
	}
}

// frameReader reads conn with a deadline while a frame is under way, so a
// sender that stalls in the middle of one (a stranger, or a peer behind a
// partition) loses the connection and what it sent; between frames a
// connection may stay idle. A frame that arrived whole in the buffer sets
// no deadline at all.
type frameReader struct {
	conn    net.Conn
	timeout time.Duration
	inFrame bool
	armed   bool // a deadline is set on conn
}

func (r *frameReader) Read(p []byte) (int, error) {
	if r.inFrame {
		r.conn.SetReadDeadline(time.Now().Add(r.timeout))
		r.armed = true
	} else if r.armed {
		r.conn.SetReadDeadline(time.Time{})
		r.armed = false
	}
	return r.conn.Read(p)
}

// readPayload reads a payload of size bytes. One within keptBufferSize
// goes into *kept, grown by doubling (a connection that carries only
// heartbeats keeps a few KiB). A larger one gets a buffer of its own that
// grows as its bytes arrive, so that a header claiming a large payload
// makes the connection allocate what was sent, not what was claimed.
func readPayload(r io.Reader, size int, kept *[]byte) ([]byte, error) {
	if size <= keptBufferSize {
		if cap(*kept) < size {
			*kept = make([]byte, min(keptBufferSize, max(size, 2*cap(*kept), 4<<10)))
		}
		payload := (*kept)[:size]
		_, err := io.ReadFull(r, payload)
		return payload, err
	}
	payload := make([]byte, 0, min(size, firstPayloadBuffer))
	for {
		n, err := io.ReadFull(r, payload[len(payload):cap(payload)])
		payload = payload[:len(payload)+n]
		if err != nil {
			return nil, err
		}
		if len(payload) == size {
			return payload, nil
		}
		grown := make([]byte, len(payload), min(size, 2*cap(payload)))
		copy(grown, payload)
		payload = grown
	}
}

// Protobuf field numbers dragonboat's Unmarshal counts ahead of decoding:
// MessageBatch.Requests and Message.Entries.
const (
	batchRequestsField  = 1
	messageEntriesField = 11
)

// unmarshalBatch decodes a MessageBatch from a peer, or fails, without
// trusting dragonboat's MessageBatch.Unmarshal with malformed input: before
// decoding the first request (the first entry of a message) it counts the
// ones that follow without bounds checks, so a truncated varint panics and a
// negative length sends the count back to where it started, forever. Only a
// payload whose fields, and those of every request in it, are well-formed
// reaches it; a panic from any other corner becomes an error.
func unmarshalBatch(b *pb.MessageBatch, payload []byte) error {
	err := walkWire(payload, batchRequestsField, func(request []byte) error {
		return walkWire(request, messageEntriesField, nil)
	})
	if err != nil {
		return err
	}
	return safeUnmarshal(b.Unmarshal, payload)
}

// walkWire checks that b is a sequence of well-formed protobuf fields:
// varints of at most 64 bits, lengths within b. Field nested must be
// length-delimited; its contents are passed to inner if it is set.
func walkWire(b []byte, nested uint64, inner func([]byte) error) error {
	for len(b) > 0 {
		tag, n := binary.Uvarint(b)
		if n <= 0 || tag>>3 == 0 {
			return fmt.Errorf("%w: malformed field tag", errBadFrame)
		}
		b = b[n:]
		field, wireType := tag>>3, tag&7
		if field == nested && wireType != 2 {
			return fmt.Errorf("%w: field %d of wire type %d", errBadFrame, field, wireType)
		}
		switch wireType {
		case 0:
			if _, n = binary.Uvarint(b); n <= 0 {
				return fmt.Errorf("%w: malformed varint", errBadFrame)
			}
			b = b[n:]
		case 1, 5:
			size := 8
			if wireType == 5 {
				size = 4
			}
			if len(b) < size {
				return fmt.Errorf("%w: truncated field %d", errBadFrame, field)
			}
			b = b[size:]
		case 2:
			l, n := binary.Uvarint(b)
			if n <= 0 || l > uint64(len(b)-n) {
				return fmt.Errorf("%w: field %d: bad length", errBadFrame, field)
			}
			v := b[n : n+int(l)]
			b = b[n+int(l):]
			if field == nested && inner != nil {
				if err := inner(v); err != nil {
					return err
				}
			}
		default:
			return fmt.Errorf("%w: field %d of wire type %d", errBadFrame, field, wireType)
		}
	}
	return nil
}

// safeUnmarshal runs unmarshal, turning a panic into an error: a peer's
// bytes must not take the process down.
func safeUnmarshal(unmarshal func([]byte) error, payload []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: unmarshal panicked: %v", errBadFrame, r)
		}
	}()
	return unmarshal(payload)
}

// decodeFrameHeader checks the header's checksum and returns the method,
// the payload size and the payload's checksum. serve checked the magic.
func decodeFrameHeader(h []byte) (method, size int, payloadSum uint32, err error) {
	b := h[2:]
	headerSum := binary.BigEndian.Uint32(b[10:])
	var zeroed [18]byte
	copy(zeroed[:], b)
	binary.BigEndian.PutUint32(zeroed[10:], 0)
	if crc32.ChecksumIEEE(zeroed[:]) != headerSum {
		return 0, 0, 0, fmt.Errorf("%w: header checksum mismatch", errBadFrame)
	}
	m := binary.BigEndian.Uint16(b)
	n := binary.BigEndian.Uint64(b[2:])
	if m != methodRaft && m != methodChunk {
		return 0, 0, 0, fmt.Errorf("%w: method %d", errBadFrame, m)
	}
	if n == 0 || n > maxFrameSize {
		return 0, 0, 0, fmt.Errorf("%w: payload of %d bytes", errBadFrame, n)
	}
	return int(m), int(n), binary.BigEndian.Uint32(b[14:]), nil
}

// encodeFrameHeader fills frame's first frameHeaderSize bytes for the
// payload that follows them.
func encodeFrameHeader(frame []byte, method uint16, encrypted bool) {
	payload := frame[frameHeaderSize:]
	copy(frame, frameMagic[:])
	b := frame[2:frameHeaderSize]
	binary.BigEndian.PutUint16(b, method)
	binary.BigEndian.PutUint64(b[2:], uint64(len(payload)))
	binary.BigEndian.PutUint32(b[10:], 0)
	var sum uint32
	if !encrypted {
		sum = crc32.ChecksumIEEE(payload)
	}
	binary.BigEndian.PutUint32(b[14:], sum)
	binary.BigEndian.PutUint32(b[10:], crc32.ChecksumIEEE(b))
}

func (t *transport) dial(ctx context.Context, target string) (net.Conn, error) {
	d := net.Dialer{Timeout: dialTimeout, KeepAlive: keepAlivePeriod}
	conn, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return nil, err
	}
	tlsConfig, err := t.nhc.GetClientTLSConfig(target)
	if err != nil || tlsConfig == nil {
		if err != nil {
			conn.Close()
		}
		return conn, err
	}
	tc := tls.Client(conn, tlsConfig)
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		conn.Close()
		return nil, err
	}
	return tc, nil
}

func (t *transport) GetConnection(ctx context.Context, target string) (raftio.IConnection, error) {
	conn, err := t.dial(ctx, target)
	if err != nil {
		return nil, err
	}
	return &frameConn{conn: conn, encrypted: t.encrypted}, nil
}

func (t *transport) GetSnapshotConnection(ctx context.Context, target string) (raftio.ISnapshotConnection, error) {
	conn, err := t.dial(ctx, target)
	if err != nil {
		return nil, err
	}
	return &snapshotConn{frameConn{conn: conn, encrypted: t.encrypted}}, nil
}

// frameConn sends frames to one peer; dragonboat uses each from one
// goroutine at a time.
type frameConn struct {
	conn      net.Conn
	encrypted bool
	buf       []byte
}

type sizedMarshaler interface {
	MarshalTo([]byte) (int, error)
}

// send marshals m (at most size bytes) behind a frame header and writes
// the frame, with one call unless it is over writePiece.
func (c *frameConn) send(method uint16, m sizedMarshaler, size int) error {
	need := frameHeaderSize + size
	frame := c.buf
	if cap(frame) < need {
		frame = make([]byte, max(need, 4<<10))
	}
	n, err := m.MarshalTo(frame[frameHeaderSize:need])
	if err != nil {
		return err
	}
	frame = frame[:frameHeaderSize+n]
	encodeFrameHeader(frame, method, c.encrypted)
	// Up to writePiece bytes at a time, each within writeTimeout: a peer
	// is dropped when it stops reading, not when it reads a large frame
	// slowly (dragonboat's transport allows 5 s per 2 MiB).
	for rest := frame; len(rest) > 0 && err == nil; {
		piece := rest[:min(len(rest), writePiece)]
		rest = rest[len(piece):]
		if err = c.conn.SetWriteDeadline(time.Now().Add(writeTimeout)); err == nil {
			_, err = c.conn.Write(piece)
		}
	}
	if cap(frame) <= keptBufferSize {
		c.buf = frame[:0]
	} else {
		c.buf = nil
	}
	return err
}

func (c *frameConn) SendMessageBatch(batch pb.MessageBatch) error {
	return c.send(methodRaft, &batch, batch.SizeUpperLimit())
}

func (c *frameConn) Close() { c.conn.Close() }

// snapshotConn streams one snapshot's chunks.
type snapshotConn struct{ frameConn }

func (c *snapshotConn) SendChunk(chunk pb.Chunk) error {
	return c.send(methodChunk, &chunk, chunk.Size())
}

// Close ends the stream and waits (bounded) until the receiver has handled
// every chunk, as dragonboat's own transport does.
func (c *snapshotConn) Close() {
	defer c.conn.Close()
	c.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := c.conn.Write(streamEnd[:]); err != nil {
		return
	}
	c.conn.SetReadDeadline(time.Now().Add(streamEndTimeout))
	var ack [2]byte
	io.ReadFull(c.conn, ack[:])
}
