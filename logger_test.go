package dister_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestNilLoggerWarnOnly: a Node opened without a Logger writes WARN and
// above to slog.Default() and nothing below, even when the default handler
// takes everything; a healthy start writes nothing there at all.
func TestNilLoggerWarnOnly(t *testing.T) {
	var buf lockedBuffer
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	defer slog.SetDefault(old)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	raft, peer := testcluster.FreeAddr(t), testcluster.FreeAddr(t)
	n, err := dister.Open(ctx, dister.Options{NodeID: 1, DataDir: t.TempDir(), RaftAddr: raft, PeerAddr: peer,
		InitialMembers: map[uint64]dister.Peer{1: {RaftAddr: raft, PeerAddr: peer}}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if err := n.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := n.KV().Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if _, err := n.KV().Get(ctx, "k", dister.Stale()); err != nil {
		t.Fatal(err)
	}
	if out := buf.String(); strings.Contains(out, "level=WARN") || strings.Contains(out, "level=ERROR") {
		t.Errorf("a healthy start logged warnings:\n%s", out)
	}
	l := dister.NodeLogger(n)
	l.Debug("debug-line")
	l.Info("info-line")
	l.Warn("warn-line")
	l.Error("error-line")
	out := buf.String()
	for _, s := range []string{"debug-line", "info-line"} {
		if strings.Contains(out, s) {
			t.Errorf("%s reached slog.Default():\n%s", s, out)
		}
	}
	for _, s := range []string{"warn-line", "error-line"} {
		if !strings.Contains(out, s) {
			t.Errorf("%s did not reach slog.Default():\n%s", s, out)
		}
	}
}
