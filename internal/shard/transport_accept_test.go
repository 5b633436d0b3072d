package shard

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"
)

// failingListener fails every Accept until closed.
type failingListener struct {
	mu     sync.Mutex
	calls  int
	closed chan struct{}
}

func (l *failingListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	l.calls++
	l.mu.Unlock()
	select {
	case <-l.closed:
		return nil, net.ErrClosed
	default:
		return nil, errors.New("accept4: too many open files")
	}
}

func (l *failingListener) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.calls
}

func (l *failingListener) Close() error   { close(l.closed); return nil }
func (l *failingListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// TestTransportAcceptBacksOff: a listener that keeps failing is retried
// after waits that double (5 ms up to 1 s), not every 50 ms with a log
// line each time, and Close ends a wait at once.
func TestTransportAcceptBacksOff(t *testing.T) {
	ln := &failingListener{closed: make(chan struct{})}
	tr := &transport{log: slog.New(slog.NewTextHandler(io.Discard, nil)), conns: map[net.Conn]struct{}{},
		closing: make(chan struct{}), ln: ln}
	began := time.Now()
	tr.wg.Add(1)
	go tr.accept(ln, nil)
	// The waits 5, 10, ..., 640 ms add up to 1,275 ms: the 9th try comes
	// after them at the earliest (a fixed 50 ms wait made it at 400 ms),
	// and the 10th a second later.
	deadline := began.Add(10 * time.Second)
	for ln.count() < 9 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d accept tries in 10 s", ln.count())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if d := time.Since(began); d < 1275*time.Millisecond {
		t.Fatalf("9 accept tries in %v: the waits do not double", d)
	}
	start := time.Now()
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("Close took %v: it waited out the accept loop's 1 s wait", d)
	}
}
