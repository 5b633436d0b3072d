package cluster

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	grpcpeer "google.golang.org/grpc/peer"

	"github.com/dister/dister/internal/errs"
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
	p, ok := grpcpeer.FromContext(ctx)
	if !ok {
		return nil // an in-process call
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if ok && e.cfg.TLS.FromServer(info.State.VerifiedChains) {
		return nil
	}
	return fmt.Errorf("%s needs a server certificate (from the server CA), not a client one: %w", what, errs.Invalid)
}
