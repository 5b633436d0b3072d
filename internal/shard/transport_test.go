package shard

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/lni/dragonboat/v4/config"
	pb "github.com/lni/dragonboat/v4/raftpb"

	"github.com/dister/dister/internal/fsm"
)

// TestTransportTalksToEngineTransport: servers on this transport and on
// dragonboat's built-in one form one group, replicate, and send a
// snapshot each way. This is what a rolling upgrade from a release that ran
// dragonboat's transport goes through.
func TestTransportTalksToEngineTransport(t *testing.T) {
	for _, lateOnEngine := range []bool{true, false} {
		t.Run(fmt.Sprintf("late-replica-on-engine-transport=%v", lateOnEngine), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			addrs := map[uint64]string{1: freeAddr(t), 2: freeAddr(t), 3: freeAddr(t)}
			hosts := map[uint64]*Host{}
			for id := uint64(1); id <= 3; id++ {
				// Replicas 1 and 2 start first and compact their log; 3
				// starts late and can only catch up from a snapshot.
				onEngine := (id == 3) == lateOnEngine
				h, err := NewHost(Config{NodeID: id, DataDir: t.TempDir(), RaftAddr: addrs[id],
					SnapshotEntries: 20, CompactionOverhead: 5, engineTransport: onEngine,
					Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
				if err != nil {
					t.Fatal(err)
				}
				defer h.Close()
				hosts[id] = h
			}
			for _, id := range []uint64{1, 2} {
				if err := hosts[id].StartShard(5, addrs, false); err != nil {
					t.Fatal(err)
				}
			}
			if err := hosts[1].WaitLeader(ctx, 5); err != nil {
				t.Fatal(err)
			}
			var last int64
			for i := range 100 {
				cmd, err := fsm.EncodeCommand(&fsm.Command{Session: 3, Seq: uint64(i + 1), Kind: fsm.KindTxn,
					Txn: &fsm.Txn{Then: []fsm.Op{{Type: fsm.OpPut, Key: fmt.Sprintf("k%d", i), Value: []byte("v")}}}})
				if err != nil {
					t.Fatal(err)
				}
				h := hosts[uint64(i%2+1)] // through both servers, so both transports forward
				res, err := h.Propose(ctx, 5, cmd)
				if err != nil {
					t.Fatalf("put %d: %v", i, err)
				}
				r, err := fsm.DecodeResult(res)
				if err != nil {
					t.Fatal(err)
				}
				last = r.Revision
			}
			// A snapshot dragonboat is taking on its own (every 20
			// entries here) makes a request for one fail: ask until one
			// at the last index was taken on both.
			for _, id := range []uint64{1, 2} {
				for {
					err := hosts[id].CompactLog(ctx, 5)
					if err == nil {
						break
					}
					if ctx.Err() != nil {
						t.Fatalf("compact on %d: %v", id, err)
					}
					time.Sleep(10 * time.Millisecond)
				}
				// The log is compacted after the snapshot, in the
				// background: wait until its first entries are gone, or
				// the late replica may get them instead of a snapshot.
				for {
					lr, err := hosts[id].nh.GetLogReader(5)
					if err != nil {
						t.Fatal(err)
					}
					if first, _ := lr.GetRange(); first > 2 {
						break
					}
					if ctx.Err() != nil {
						t.Fatalf("the log of replica %d was never compacted", id)
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
			if err := hosts[3].StartShard(5, addrs, false); err != nil {
				t.Fatal(err)
			}
			if err := hosts[3].WaitRevision(ctx, 5, last); err != nil {
				t.Fatalf("late replica never reached revision %d: %v", last, err)
			}
			if n := hosts[3].snapshotsReceived.Load(); n == 0 {
				t.Fatalf("the late replica caught up without a snapshot (generation %d): the test proves nothing", hosts[3].ReservedGeneration(5))
			}
			v, err := hosts[3].StaleRead(ctx, 5, fsm.GetQuery{Key: "k0"})
			if err != nil || !v.(*fsm.GetResult).Found {
				t.Fatalf("late replica reads k0: %+v %v", v, err)
			}
		})
	}
}

// loopback runs a transport that records what it receives.
type loopback struct {
	*transport
	mu      sync.Mutex
	batches []pb.MessageBatch
	chunks  []pb.Chunk
	reject  bool
}

// newLoopback starts a loopback transport; configure, if given, runs
// before Start (fields the serving goroutines read).
func newLoopback(t *testing.T, configure ...func(*transport)) *loopback {
	t.Helper()
	lb := startLoopback(t, configure...)
	t.Cleanup(func() { lb.Close() })
	return lb
}

// startLoopback is newLoopback without closing it at the end of the test.
func startLoopback(t *testing.T, configure ...func(*transport)) *loopback {
	t.Helper()
	lb := &loopback{}
	nhc := config.NodeHostConfig{RaftAddress: freeAddr(t)}
	lb.transport = transportFactory{log: slog.New(slog.NewTextHandler(io.Discard, nil))}.Create(nhc,
		func(b pb.MessageBatch) {
			lb.mu.Lock()
			lb.batches = append(lb.batches, b)
			lb.mu.Unlock()
		},
		func(c pb.Chunk) bool {
			lb.mu.Lock()
			defer lb.mu.Unlock()
			lb.chunks = append(lb.chunks, c)
			return !lb.reject
		}).(*transport)
	for _, c := range configure {
		c(lb.transport)
	}
	if err := lb.Start(); err != nil {
		t.Fatal(err)
	}
	return lb
}

func (lb *loopback) received() (int, int) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	return len(lb.batches), len(lb.chunks)
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestTransportFramesRoundTrip: batches small and larger than the kept
// buffer arrive intact and in order, the sender keeps no large buffer, and
// a snapshot stream's Close returns only after every chunk was handled.
func TestTransportFramesRoundTrip(t *testing.T) {
	rx := newLoopback(t)
	tx := newLoopback(t)
	ctx := context.Background()
	conn, err := tx.GetConnection(ctx, rx.nhc.RaftAddress)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	big := bytes.Repeat([]byte("x"), 3*keptBufferSize)
	sent := []pb.MessageBatch{
		{SourceAddress: "a", Requests: []pb.Message{{ShardID: 1, To: 2, Entries: []pb.Entry{{Index: 1, Cmd: []byte("small")}}}}},
		{SourceAddress: "a", Requests: []pb.Message{{ShardID: 1, To: 2, Entries: []pb.Entry{{Index: 2, Cmd: big}}}}},
		{SourceAddress: "a", Requests: []pb.Message{{ShardID: 1, To: 2, Entries: []pb.Entry{{Index: 3, Cmd: []byte("after")}}}}},
	}
	for i, b := range sent {
		if err := conn.SendMessageBatch(b); err != nil {
			t.Fatal(err)
		}
		if c := cap(conn.(*frameConn).buf); c > keptBufferSize {
			t.Fatalf("after batch %d the connection keeps a %d-byte buffer", i, c)
		}
	}
	waitUntil(t, "3 batches", func() bool { n, _ := rx.received(); return n == 3 })
	rx.mu.Lock()
	for i, b := range rx.batches {
		got := b.Requests[0].Entries[0]
		want := sent[i].Requests[0].Entries[0]
		if got.Index != want.Index || !bytes.Equal(got.Cmd, want.Cmd) {
			t.Fatalf("batch %d: entry %d of %d bytes, want %d of %d", i, got.Index, len(got.Cmd), want.Index, len(want.Cmd))
		}
	}
	rx.mu.Unlock()

	sc, err := tx.GetSnapshotConnection(ctx, rx.nhc.RaftAddress)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := sc.SendChunk(pb.Chunk{ShardID: 1, ChunkId: uint64(i), ChunkCount: 5, Data: big[:512<<10]}); err != nil {
			t.Fatal(err)
		}
	}
	sc.Close()
	if _, n := rx.received(); n != 5 {
		t.Fatalf("%d of 5 chunks handled when the stream's Close returned", n)
	}
}

// TestTransportDropsBadFrames: whatever a stranger writes to the Raft port
// (a wrong magic, a forged header, an absurd size, a corrupt payload) closes
// that connection without reaching the engine or allocating the size it
// claims, and the port keeps serving peers.
func TestTransportDropsBadFrames(t *testing.T) {
	rx := newLoopback(t)
	good := func() []byte {
		var batch pb.MessageBatch
		batch.Requests = []pb.Message{{ShardID: 1, To: 2}}
		frame := make([]byte, frameHeaderSize+batch.SizeUpperLimit())
		n, err := batch.MarshalTo(frame[frameHeaderSize:])
		if err != nil {
			t.Fatal(err)
		}
		frame = frame[:frameHeaderSize+n]
		encodeFrameHeader(frame, methodRaft, false)
		return frame
	}
	cases := map[string]func([]byte) []byte{
		"magic":           func(f []byte) []byte { f[0] = 0x11; return f },
		"header checksum": func(f []byte) []byte { f[5] ^= 1; return f },
		"payload checksum": func(f []byte) []byte {
			f[len(f)-1] ^= 0xff
			return f
		},
		"size beyond the limit": func(f []byte) []byte {
			// Re-signed, so the size check and not the checksum refuses it.
			binary.BigEndian.PutUint64(f[4:], 1<<40)
			binary.BigEndian.PutUint32(f[12:], 0)
			binary.BigEndian.PutUint32(f[12:], crc32.ChecksumIEEE(f[2:frameHeaderSize]))
			return f
		},
		"method":  func(f []byte) []byte { f[2], f[3] = 0, 7; return f },
		"garbage": func([]byte) []byte { return []byte("GET / HTTP/1.1\r\n\r\n") },
	}
	for name, corrupt := range cases {
		c, err := net.Dial("tcp", rx.nhc.RaftAddress)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(corrupt(good())); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("%s: the connection was not closed: %v", name, err)
		}
		c.Close()
	}
	if n, _ := rx.received(); n != 0 {
		t.Fatalf("%d corrupt frames reached the engine", n)
	}
	c, err := net.Dial("tcp", rx.nhc.RaftAddress)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(good()); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a good frame after bad ones", func() bool { n, _ := rx.received(); return n == 1 })
}

// maxTxnCommand is as large as the largest entry a log may hold: a txn of
// MaxTxnOps puts with keys and values at their limits, which the API took
// before MaxTxnBytes bounded a txn (such an entry still replicates to a
// follower that catches up). The transport carries it as bytes.
func maxTxnCommand(t *testing.T) []byte {
	t.Helper()
	return bytes.Repeat([]byte("v"), fsm.MaxTxnOps*(fsm.MaxKeySize+fsm.MaxValueSize))
}

// TestTransportCarriesLargestTxn: dragonboat puts no byte limit on an
// entry (MaxInMemLogSize is unset) and a Replicate message always carries
// at least one entry, so the leader sends a txn of MaxTxnOps puts of
// MaxValueSize values as one frame of over 128 MiB. The receiver must take
// it, as dragonboat's own transport does: refusing it drops the connection,
// the leader sends it again and again, and the txn never commits (with
// three hosts on this transport: 112 refusals in 60 s, no commit; on
// dragonboat's, committed).
func TestTransportCarriesLargestTxn(t *testing.T) {
	cmd := maxTxnCommand(t)
	rx := newLoopback(t)
	tx := newLoopback(t)
	conn, err := tx.GetConnection(context.Background(), rx.nhc.RaftAddress)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	batch := pb.MessageBatch{SourceAddress: tx.nhc.RaftAddress, Requests: []pb.Message{
		{Type: pb.Replicate, ShardID: 1, From: 1, To: 2, Entries: []pb.Entry{{Term: 1, Index: 7, Cmd: cmd}}}}}
	t.Logf("command of %d bytes, frame of %d bytes, frame limit %d", len(cmd), frameHeaderSize+batch.Size(), maxFrameSize)
	if err := conn.SendMessageBatch(batch); err != nil {
		t.Fatalf("send: %v", err)
	}
	cmd = nil
	deadline := time.Now().Add(30 * time.Second)
	for {
		if n, _ := rx.received(); n >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the receiver never handled the batch")
		}
		// A connection the receiver dropped fails the next send.
		if err := conn.SendMessageBatch(pb.MessageBatch{SourceAddress: "probe"}); err != nil {
			t.Fatalf("the receiver dropped the connection: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	rx.mu.Lock()
	got := rx.batches[0].Requests[0].Entries[0]
	rx.batches = nil
	rx.mu.Unlock()
	if got.Index != 7 || len(got.Cmd) != len(maxTxnCommand(t)) {
		t.Fatalf("received entry %d of %d bytes", got.Index, len(got.Cmd))
	}
}

// TestTransportHeaderAloneAllocatesLittle: a header claiming a large
// payload, followed by a few bytes and then nothing, does not make the
// receiver allocate the payload it claims (it would hold it until the
// frame read timeout, 5 s, dropped the connection).
func TestTransportHeaderAloneAllocatesLittle(t *testing.T) {
	rx := newLoopback(t)
	const claimed = 100 << 20
	frame := make([]byte, frameHeaderSize+claimed)
	encodeFrameHeader(frame, methodRaft, false)
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	c, err := net.Dial("tcp", rx.nhc.RaftAddress)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(frame[:frameHeaderSize+1024]); err != nil {
		t.Fatal(err)
	}
	frame = nil
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		var now runtime.MemStats
		runtime.ReadMemStats(&now)
		if d := now.TotalAlloc - before.TotalAlloc; d > 16<<20 {
			t.Fatalf("a %d-byte header and 1 KiB of payload made the process allocate %d MiB", frameHeaderSize, d>>20)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTransportSurvivesHostilePayloads: a frame with valid checksums whose
// payload is not a well-formed MessageBatch closes its connection; it does
// not crash the process, spin, or keep Close from returning. dragonboat's
// MessageBatch.Unmarshal counts the requests after the first one (and
// Message.Unmarshal the entries after the first) without bounds checks: a
// truncated varint indexes past the end, and a negative length sends the
// count back to where it started, forever.
func TestTransportSurvivesHostilePayloads(t *testing.T) {
	negative11 := []byte{0xf5, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01} // varint of int(-11)
	cases := []struct {
		name    string
		payload []byte
	}{
		// Found by fuzzing MessageBatch.Unmarshal: index out of range.
		{"truncated varint after the first request", []byte("\n\f000000000000\x97")},
		// An empty request, then a request whose length takes the count
		// back 11 bytes to the start of the same field.
		{"negative request length", append([]byte{0x0a, 0x00, 0x0a}, negative11...)},
		// One request holding an empty entry, then an entry whose length
		// does the same.
		{"negative entry length", append([]byte{0x0a, 13, 0x5a, 0x00, 0x5a}, negative11...)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rx := startLoopback(t)
			frame := append(make([]byte, frameHeaderSize), tc.payload...)
			encodeFrameHeader(frame, methodRaft, false)
			c, err := net.Dial("tcp", rx.nhc.RaftAddress)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write(frame); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Read(make([]byte, 1)); err != io.EOF {
				t.Errorf("the connection was not closed: %v", err)
			}
			closed := make(chan struct{})
			go func() { rx.Close(); close(closed) }()
			select {
			case <-closed:
			case <-time.After(5 * time.Second):
				t.Fatal("Close did not return: the goroutine serving the connection never ended")
			}
		})
	}
}

// TestTransportSlowPeerGetsLargeFrame: a peer that reads steadily at
// 0.5 MiB/s gets an 8 MiB batch. dragonboat's transport gives every 2 MiB
// of a frame 5 s (a floor of 0.4 MiB/s); a deadline for the whole frame of
// 5 s plus 1 s per MiB is a floor of 1 MiB/s, so the send failed, and Raft
// sends the same entries again, failing the same way.
func TestTransportSlowPeerGetsLargeFrame(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	read := make(chan int64)
	go func() {
		var n int64
		buf := make([]byte, 64<<10)
		tick := time.NewTicker(125 * time.Millisecond) // 64 KiB each: 0.5 MiB/s
		defer tick.Stop()
		for range tick.C {
			m, err := io.ReadFull(b, buf)
			n += int64(m)
			if err != nil {
				break
			}
		}
		read <- n
	}()
	fc := &frameConn{conn: a}
	batch := pb.MessageBatch{Requests: []pb.Message{{Type: pb.Replicate,
		Entries: []pb.Entry{{Index: 1, Cmd: make([]byte, 8<<20)}}}}}
	start := time.Now()
	err := fc.send(methodRaft, &batch, batch.SizeUpperLimit())
	a.Close()
	if err != nil {
		t.Fatalf("sending 8 MiB to a peer reading 0.5 MiB/s failed after %v (%d bytes read): %v",
			time.Since(start).Round(time.Second), <-read, err)
	}
	<-read
}

// TestTransportDropsStalledFrame: a sender that stops in the middle of a
// frame (half a header, or a payload cut short) loses its connection once
// frameReadTimeout passes without a byte, as dragonboat's transport drops
// it; an idle connection between frames stays open.
func TestTransportDropsStalledFrame(t *testing.T) {
	rx := newLoopback(t, func(tr *transport) { tr.frameReadTimeout = 300 * time.Millisecond })
	idle, err := net.Dial("tcp", rx.nhc.RaftAddress)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	var batch pb.MessageBatch
	batch.Requests = []pb.Message{{ShardID: 1, To: 2, Entries: []pb.Entry{{Cmd: make([]byte, 1000)}}}}
	frame := make([]byte, frameHeaderSize+batch.SizeUpperLimit())
	n, err := batch.MarshalTo(frame[frameHeaderSize:])
	if err != nil {
		t.Fatal(err)
	}
	frame = frame[:frameHeaderSize+n]
	encodeFrameHeader(frame, methodRaft, false)
	for name, part := range map[string][]byte{"half a header": frame[:10], "a payload cut short": frame[:frameHeaderSize+100]} {
		c, err := net.Dial("tcp", rx.nhc.RaftAddress)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(part); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("%s: the stalled connection was not dropped: %v", name, err)
		}
		c.Close()
	}
	// The idle connection, quiet for longer than frameReadTimeout, still
	// carries a frame.
	if _, err := idle.Write(frame); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a frame on a connection idle for a while", func() bool { n, _ := rx.received(); return n == 1 })
}
