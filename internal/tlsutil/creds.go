package tlsutil

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"google.golang.org/grpc/credentials"
)

// ServerCredentials are the peer API server's transport credentials: each
// handshake takes the Source's current configuration, so rotated files
// apply to the next connection, and a refused handshake is logged once per
// remote host and reason (gRPC clients reconnect with backoff forever).
func (s *Source) ServerCredentials() credentials.TransportCredentials {
	return &creds{s: s, server: true}
}

// ClientCredentials dial servers' peer APIs with the Source's current
// configuration.
func (s *Source) ClientCredentials() credentials.TransportCredentials {
	return &creds{s: s}
}

type creds struct {
	s          *Source
	server     bool
	serverName string // OverrideServerName
}

func (c *creds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	cfg := c.s.ClientConfig()
	if c.serverName != "" {
		cfg.ServerName = c.serverName
	}
	conn, info, err := credentials.NewTLS(cfg).ClientHandshake(ctx, authority, raw)
	if err != nil {
		c.s.refused.note(c.s.log, "TLS handshake with a server failed", authority, err)
		return nil, nil, err
	}
	c.s.refused.clear(authority)
	return conn, info, nil
}

func (c *creds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	remote := raw.RemoteAddr().String()
	if h, _, err := net.SplitHostPort(remote); err == nil {
		remote = h
	}
	cfg, err := c.s.ServerConfig()
	if err != nil {
		c.s.refused.note(c.s.log, "peer API has no usable TLS configuration", remote, err)
		return nil, nil, err
	}
	watched := &watchedConn{Conn: raw}
	conn, info, err := credentials.NewTLS(cfg).ServerHandshake(watched)
	if err != nil && watched.hungUp.Load() && hangUpError(err) {
		// The client hung up (its process stopped, its dial timed out, a
		// port probe): no refusal, it says nothing of the client's
		// configuration. Logged at debug and not remembered: a client
		// refused and then stopped would otherwise alternate between two
		// reasons, each logged anew. (A client keeps logging an EOF:
		// there it can mean a server that does not speak TLS.)
		c.s.log.Debug("a peer API client hung up during the TLS handshake", "remote", remote, "err", err)
		return nil, nil, err
	}
	if err != nil {
		c.s.refused.note(c.s.log, "refused a peer API connection", remote, err)
		return nil, nil, err
	}
	c.s.refused.clear(remote)
	return conn, info, nil
}

func (c *creds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls", SecurityVersion: "1.2", ServerName: c.serverName}
}

func (c *creds) Clone() credentials.TransportCredentials {
	cp := *c
	return &cp
}

func (c *creds) OverrideServerName(name string) error { //nolint:staticcheck // part of the interface
	c.serverName = name
	return nil
}

// refusals remembers, per remote host, the last refusal reason logged, so
// each distinct refusal is logged once; a successful handshake forgets it.
type refusals struct {
	mu   sync.Mutex
	last map[string]string
}

// maxRemembered bounds the memory a scan of many hosts could take.
const maxRemembered = 4096

// reason is what makes two refusals the same: the kind of verification
// failure, since the text of some (an expired certificate) carries the time.
func reason(err error) string {
	var invalid x509.CertificateInvalidError
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		// gRPC's handshake deadline: the text names the client's port.
		return "handshake timed out"
	case errors.As(err, &invalid):
		return fmt.Sprintf("certificate invalid (%d)", invalid.Reason)
	case errors.As(err, &unknown):
		return "unknown authority"
	case errors.As(err, &host):
		return "hostname " + host.Host
	}
	return err.Error()
}

// hangUpError tells the errors of a connection the remote side closed
// or reset.
func hangUpError(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// watchedConn is the connection under a server handshake: it notes
// whether the remote side hung up on it. Only then is a handshake's
// EOF or reset the client's doing: an error of this server's own (a
// GetCertificate or VerifyConnection of an embedder's tls.Config that
// fetched over the network) may wrap the same sentinels.
type watchedConn struct {
	net.Conn
	hungUp atomic.Bool
}

func (c *watchedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil && hangUpError(err) {
		c.hungUp.Store(true)
	}
	return n, err
}

func (c *watchedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err != nil && hangUpError(err) {
		c.hungUp.Store(true)
	}
	return n, err
}

func (r *refusals) note(log *slog.Logger, msg, remote string, err error) {
	reason := reason(err)
	r.mu.Lock()
	if r.last == nil || len(r.last) >= maxRemembered {
		r.last = map[string]string{}
	}
	seen := r.last[remote] == reason
	r.last[remote] = reason
	r.mu.Unlock()
	if !seen {
		log.Warn(msg+" (logged once until it succeeds)", "remote", remote, "err", err)
	}
}

func (r *refusals) clear(remote string) {
	r.mu.Lock()
	delete(r.last, remote)
	r.mu.Unlock()
}
