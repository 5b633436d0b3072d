package peer

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
)

// maxMessage bounds every message on the wire (a read answer is cut to
// maxAnswer before that).
const maxMessage = 64 << 20

// MaxAnswer is the size at which a server cuts a list answer short (More
// set): the client reads the rest with the next page.
const MaxAnswer = 32 << 20

// Server serves a Handler on a listener.
type Server struct {
	srv  *grpc.Server
	ln   net.Listener
	box  *handlerBox
	done chan struct{}
}

// Listen binds addr and serves h until Close. Options are added to the
// server's (credentials, interceptors for tokens).
func Listen(addr string, h Handler, log *slog.Logger, opts ...grpc.ServerOption) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, errs.Mark(fmt.Errorf("listen on peer address %s: %w", addr, err), errs.Invalid)
	}
	srv := grpc.NewServer(append([]grpc.ServerOption{
		grpc.ForceServerCodec(rawCodec{}),
		grpc.MaxRecvMsgSize(maxMessage),
		grpc.MaxSendMsgSize(maxMessage),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	}, opts...)...)
	box := &handlerBox{h: h}
	srv.RegisterService(&serviceDesc, box)
	s := &Server{srv: srv, ln: ln, box: box, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			log.Warn("peer RPC server stopped", "err", err)
		}
	}()
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the server: calls in flight end (their streams with them) and
// its goroutines are gone when it returns.
func (s *Server) Close() error {
	s.srv.Stop()
	<-s.done
	s.box.close()
	return nil
}

// watchEnd is the last frame of a watch that err ended.
func watchEnd(err error) *WatchFrame {
	f := &WatchFrame{Err: err}
	var ce *fsm.CompactedError
	if errors.As(err, &ce) {
		f.CompactRevision = ce.CompactRevision
	}
	return f
}
