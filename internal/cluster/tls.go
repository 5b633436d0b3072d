package cluster

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	grpcpeer "google.golang.org/grpc/peer"

	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/peer"
	"github.com/dister/dister/internal/svc"
	"github.com/dister/dister/internal/tlsutil"
)

// peerDial is how this server dials other servers' peer APIs.
func peerDial(src *tlsutil.Source) []grpc.DialOption {
	if src == nil {
		return nil
	}
	return []grpc.DialOption{grpc.WithTransportCredentials(src.ClientCredentials())}
}

// peerServe secures this server's peer API.
func peerServe(src *tlsutil.Source) []grpc.ServerOption {
	if src == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.Creds(src.ServerCredentials())}
}

// requireServerCert refuses a call that came with a certificate of the
// client CA: a client-role node may read and write, but never add itself
// as a server (its certificate could not speak Raft anyway, so the cluster
// would only carry a member that never catches up).
func (e *Engine) requireServerCert(ctx context.Context, what string) error {
	if e.cfg.TLS == nil {
		return nil
	}
	if _, ok := grpcpeer.FromContext(ctx); !ok {
		return nil // an in-process call
	}
	if e.fromServerCert(ctx) {
		return nil
	}
	return fmt.Errorf("%s needs a server certificate (from the server CA), not a client one: %w", what, errs.Invalid)
}

// fromServerCert tells whether a peer call came with a certificate of the
// server CA, verified in the handshake: a server of this cluster, which
// may run every peer operation.
func (e *Engine) fromServerCert(ctx context.Context) bool {
	if e.cfg.TLS == nil {
		return false
	}
	p, ok := grpcpeer.FromContext(ctx)
	if !ok {
		return false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	return ok && e.cfg.TLS.FromServer(info.State.VerifiedChains)
}

// peerAuthorizer checks peer calls when cfg.PeerAuth is set: a caller
// with a server certificate may do anything; any other (a client-role
// node, with a client certificate when TLS is on) needs what PeerAuth
// grants its token. Without PeerAuth every caller that got through the
// handshake is allowed (nil: no check at all).
func (e *Engine) peerAuthorizer() peer.Authorizer {
	if e.cfg.PeerAuth == nil {
		return nil
	}
	return func(ctx context.Context, op, group string) error {
		if e.fromServerCert(ctx) {
			return nil
		}
		return e.cfg.PeerAuth(ctx, op, group)
	}
}

// authorizeCommands checks a peer call registering r: a script or custom
// check runs a command on the servers, so beyond the op's own role it
// needs what peer.OpScriptCheck needs (an admin token for the whole
// cluster), unless the caller is a server or no token set is checked.
func (e *Engine) authorizeCommands(ctx context.Context, r *svc.Record) error {
	if !r.Check.Probe().IsScript() || e.cfg.PeerAuth == nil || e.fromServerCert(ctx) {
		return nil
	}
	return e.cfg.PeerAuth(ctx, peer.OpScriptCheck, "")
}
