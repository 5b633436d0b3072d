// Package peer is the node-to-node RPC that runs on each server's PeerAddr:
// a joining server asks a running one to add it, and the membership
// reconciler asks a learner how far it has applied. It is plain HTTP with
// JSON bodies so that operators can poke it with curl.
package peer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/dister/dister/internal/errs"
)

// maxBody bounds every request and response body.
const maxBody = 1 << 20

// JoinRequest asks a running server to add the sender to the cluster.
type JoinRequest struct {
	NodeID   uint64 `json:"node_id"` // 0 = assign the next free id
	RaftAddr string `json:"raft_addr"`
	PeerAddr string `json:"peer_addr"`
}

// JoinResponse carries the id the sender was added with.
type JoinResponse struct {
	NodeID uint64 `json:"node_id"`
}

// Status is what a server reports about itself.
type Status struct {
	NodeID  uint64            `json:"node_id"`
	Applied map[uint64]uint64 `json:"applied"` // shard id -> last applied index
	// Left: the server has learned that it was removed from the cluster and
	// stopped its group replicas; the system shard may drop it now.
	Left bool `json:"left,omitempty"`
}

// KeepAliveRequest renews a lease on the leader of its group's shard.
type KeepAliveRequest struct {
	Shard uint64 `json:"shard"`
	Lease int64  `json:"lease"`
}

// KeepAliveResponse carries the lease's TTL, the time it now has.
type KeepAliveResponse struct {
	TTLMillis int64 `json:"ttl_ms"`
}

// Handler serves the RPCs; internal/cluster implements it.
type Handler interface {
	Join(ctx context.Context, req JoinRequest) (JoinResponse, error)
	Status(ctx context.Context) (Status, error)
	KeepAlive(ctx context.Context, req KeepAliveRequest) (KeepAliveResponse, error)
}

// Server serves Handler on a listener.
type Server struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

// Listen binds addr and serves h until Close.
func Listen(addr string, h Handler, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on peer address %s: %v: %w", addr, err, errs.Invalid)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /peer/v1/join", func(w http.ResponseWriter, r *http.Request) {
		var req JoinRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, maxBody)).Decode(&req); err != nil {
			writeError(w, fmt.Errorf("decode join request: %v: %w", err, errs.Invalid))
			return
		}
		resp, err := h.Join(r.Context(), req)
		reply(w, resp, err)
	})
	mux.HandleFunc("POST /peer/v1/keepalive", func(w http.ResponseWriter, r *http.Request) {
		var req KeepAliveRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, maxBody)).Decode(&req); err != nil {
			writeError(w, fmt.Errorf("decode keepalive request: %v: %w", err, errs.Invalid))
			return
		}
		resp, err := h.KeepAlive(r.Context(), req)
		reply(w, resp, err)
	})
	mux.HandleFunc("GET /peer/v1/status", func(w http.ResponseWriter, r *http.Request) {
		st, err := h.Status(r.Context())
		reply(w, st, err)
	})
	s := &Server{
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 5 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
		ln:   ln,
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln) // returns http.ErrServerClosed after Close
	}()
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the server and waits for its goroutine.
func (s *Server) Close() error {
	err := s.srv.Close()
	<-s.done
	return err
}

type wireError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// codes maps sentinels to wire codes and back; the order is the lookup order.
var codes = []struct {
	code string
	err  error
}{
	{"invalid", errs.Invalid}, {"conflict", errs.Conflict}, {"not_found", errs.NotFound},
	{"group_not_found", errs.GroupNotFound}, {"lease_not_found", errs.LeaseNotFound},
	{"too_large", errs.TooLarge},
	{"no_quorum", errs.NoQuorum}, {"closed", errs.Closed},
	{"timeout", context.DeadlineExceeded}, {"canceled", context.Canceled},
}

func writeError(w http.ResponseWriter, err error) {
	code := "internal"
	for _, c := range codes {
		if errors.Is(err, c.err) {
			code = c.code
			break
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	_ = json.NewEncoder(w).Encode(struct {
		Error wireError `json:"error"`
	}{wireError{code, err.Error()}})
}

func reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// Client calls other servers' peer RPC.
type Client struct {
	hc *http.Client
}

// NewClient returns a client; Close releases its idle connections.
func NewClient() *Client {
	return &Client{hc: &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     30 * time.Second,
	}}}
}

// Close drops idle connections (their goroutines end with them).
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// Join asks the server at addr to add the sender.
func (c *Client) Join(ctx context.Context, addr string, req JoinRequest) (JoinResponse, error) {
	var resp JoinResponse
	err := c.call(ctx, http.MethodPost, addr, "/peer/v1/join", req, &resp)
	return resp, err
}

// KeepAlive asks the server at addr, the leader of req.Shard, to renew a lease.
func (c *Client) KeepAlive(ctx context.Context, addr string, req KeepAliveRequest) (KeepAliveResponse, error) {
	var resp KeepAliveResponse
	err := c.call(ctx, http.MethodPost, addr, "/peer/v1/keepalive", req, &resp)
	return resp, err
}

// Status asks the server at addr for its status.
func (c *Client) Status(ctx context.Context, addr string) (Status, error) {
	var st Status
	err := c.call(ctx, http.MethodGet, addr, "/peer/v1/status", nil, &st)
	return st, err
}

// ErrUnreachable wraps transport failures, so callers can try another server.
var ErrUnreachable = errors.New("peer unreachable")

func (c *Client) call(ctx context.Context, method, addr, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, body)
	if err != nil {
		return fmt.Errorf("peer %s: %v: %w", addr, err, errs.Invalid)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("peer %s: %v: %w", addr, err, ErrUnreachable)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return fmt.Errorf("peer %s: read reply: %v: %w", addr, err, ErrUnreachable)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error wireError `json:"error"`
		}
		if json.Unmarshal(data, &e) != nil {
			return fmt.Errorf("peer %s: HTTP %d: %w", addr, resp.StatusCode, ErrUnreachable)
		}
		for _, c := range codes {
			if c.code == e.Error.Code {
				return fmt.Errorf("peer %s: %s: %w", addr, e.Error.Message, c.err)
			}
		}
		return fmt.Errorf("peer %s: %s: %w", addr, e.Error.Message, errs.NoQuorum)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("peer %s: decode reply: %v: %w", addr, err, ErrUnreachable)
	}
	return nil
}
