package shard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/lni/dragonboat/v4"
	"go.uber.org/goleak"

	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestTranslate(t *testing.T) {
	cases := []struct {
		in   error
		want error
	}{
		{dragonboat.ErrClosed, errs.Closed},
		{dragonboat.ErrShardClosed, errs.Closed},
		{dragonboat.ErrShardNotFound, errs.GroupNotFound},
		{dragonboat.ErrPayloadTooBig, errs.TooLarge},
		{dragonboat.ErrTimeout, context.DeadlineExceeded},
		{dragonboat.ErrCanceled, context.Canceled},
		{dragonboat.ErrInvalidAddress, errs.Invalid},
		{dragonboat.ErrShardNotReady, errs.NoQuorum},
		{dragonboat.ErrSystemBusy, errs.NoQuorum},
		{errors.New("something new"), errs.NoQuorum},
	}
	for _, c := range cases {
		if got := translate(fmt.Errorf("wrapped: %w", c.in)); !errors.Is(got, c.want) {
			t.Errorf("translate(%v) = %v, want %v", c.in, got, c.want)
		}
	}
	if translate(nil) != nil {
		t.Error("translate(nil) != nil")
	}
}

func TestCtxError(t *testing.T) {
	err := ctxError(context.DeadlineExceeded, dragonboat.ErrShardNotReady)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, errs.NoQuorum) {
		t.Fatalf("no leader at the deadline: %v", err)
	}
	// A try that merely timed out with a leader known is slowness, not a
	// missing quorum.
	if err := ctxError(context.DeadlineExceeded, dragonboat.ErrTimeout); err != context.DeadlineExceeded {
		t.Fatalf("slow try: %v", err)
	}
}

// TestSingleReplicaHost drives one host with one replica through the
// calls the engine uses.
func TestSingleReplicaHost(t *testing.T) {
	addr := freeAddr(t)
	h, err := NewHost(Config{NodeID: 1, DataDir: t.TempDir(), RaftAddr: addr,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.StartShard(7, map[uint64]string{1: addr}, false); err != nil {
		t.Fatal(err)
	}
	if err := h.StartShard(7, map[uint64]string{1: addr}, false); err != nil {
		t.Fatalf("starting a running shard again: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.WaitLeader(ctx, 7); err != nil {
		t.Fatal(err)
	}
	cmd, err := fsm.EncodeCommand(&fsm.Command{Session: 9, Seq: 1, Kind: fsm.KindTxn,
		Txn: &fsm.Txn{Then: []fsm.Op{{Type: fsm.OpPut, Key: "k", Value: []byte("v")}}}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := h.Propose(ctx, 7, cmd)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := fsm.DecodeResult(res)
	if err != nil || !tr.Succeeded {
		t.Fatalf("result %+v %v", tr, err)
	}
	if err := h.WaitRevision(ctx, 7, tr.Revision); err != nil {
		t.Fatal(err)
	}
	for _, read := range []func(context.Context, uint64, any) (any, error){h.Read, h.StaleRead} {
		v, err := read(ctx, 7, fsm.GetQuery{Key: "k"})
		if err != nil || !v.(*fsm.GetResult).Found {
			t.Fatalf("read: %+v %v", v, err)
		}
	}
	m, err := h.Membership(ctx, 7)
	if err != nil || m.Voters[1] != addr {
		t.Fatalf("membership %+v %v", m, err)
	}
	if _, err := h.Propose(ctx, 8, cmd); !errors.Is(err, errs.GroupNotFound) {
		t.Fatalf("propose to a shard not running here: %v", err)
	}
	if err := h.RemoveShardData(7); err != nil {
		t.Fatal(err)
	}
	if h.Running(7) {
		t.Fatal("shard still running after RemoveShardData")
	}
	h.Close()
	h.Close()
	if _, err := h.Propose(ctx, 7, cmd); !errors.Is(err, errs.Closed) {
		t.Fatalf("propose after close: %v", err)
	}
}

func freeAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
