package peer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dister/dister/internal/errs"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fakeHandler struct{ joinErr error }

func (f fakeHandler) Join(_ context.Context, req JoinRequest) (JoinResponse, error) {
	if f.joinErr != nil {
		return JoinResponse{}, f.joinErr
	}
	return JoinResponse{NodeID: req.NodeID + 10}, nil
}

func (f fakeHandler) KeepAlive(_ context.Context, req KeepAliveRequest) (KeepAliveResponse, error) {
	if req.Lease == 0 {
		return KeepAliveResponse{}, fmt.Errorf("lease 0: %w", errs.LeaseNotFound)
	}
	return KeepAliveResponse{TTLMillis: 1000}, nil
}

func (f fakeHandler) Status(context.Context) (Status, error) {
	return Status{NodeID: 7, Applied: map[uint64]uint64{1: 42}}, nil
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

func TestJoinAndStatus(t *testing.T) {
	s, c := serve(t, fakeHandler{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
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
}

// Sentinels cross the wire: the caller can tell a refusal from an outage.
func TestErrorsKeepTheirSentinel(t *testing.T) {
	for _, want := range []error{errs.Invalid, errs.Conflict, errs.NoQuorum, errs.Closed, context.DeadlineExceeded} {
		s, c := serve(t, fakeHandler{joinErr: fmt.Errorf("remote detail: %w", want)})
		_, err := c.Join(context.Background(), s.Addr(), JoinRequest{})
		if !errors.Is(err, want) || errors.Is(err, ErrUnreachable) {
			t.Errorf("remote %v arrived as %v", want, err)
		}
	}
}

func TestUnreachableAndBadInput(t *testing.T) {
	s, c := serve(t, fakeHandler{})
	addr := s.Addr()
	s.Close()
	if _, err := c.Status(context.Background(), addr); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("closed server: %v", err)
	}
	s2, _ := serve(t, fakeHandler{})
	if err := c.call(context.Background(), "POST", s2.Addr(), "/peer/v1/join", "not an object", &JoinResponse{}); !errors.Is(err, errs.Invalid) {
		t.Fatalf("malformed join body: %v", err)
	}
}
