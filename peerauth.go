package dister

import (
	"context"
	"fmt"

	"google.golang.org/grpc"

	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/peer"
)

// peerScope says which group a peer operation is checked against.
type peerScope int

const (
	peerGroup   peerScope = iota // the group the request names ("" = cluster-wide)
	peerCluster                  // the whole cluster: tokens limited to groups are refused
	peerAny                      // no group: any token with the role (what a client node needs to route)
)

type peerNeed struct {
	need  Access
	scope peerScope
}

// peerAccess is what each peer operation needs, with the REST API's roles:
// reads, watches and discovery are read; writes, leases and service
// registration write; groups, members, settings and the server-to-server
// operations (join, lease handover to a backup) admin. An operation
// missing here is refused (TestPeerAccessCoversEveryOp).
var peerAccess = map[string]peerNeed{
	peer.OpPropose: {AccessWrite, peerGroup},
	peer.OpRead:    {AccessRead, peerGroup},
	peer.OpWatch:   {AccessRead, peerGroup},

	peer.OpTopology:      {AccessRead, peerAny},
	peer.OpGroups:        {AccessRead, peerAny},
	peer.OpProgress:      {AccessRead, peerGroup},
	peer.OpGroupRevision: {AccessRead, peerGroup},
	peer.OpInstances:     {AccessRead, peerGroup},
	peer.OpLeaseGet:      {AccessRead, peerGroup},
	peer.OpStatus:        {AccessRead, peerCluster},

	// A keepalive naming no group renews by shard: a server's call.
	peer.OpKeepAlive:  {AccessWrite, peerGroup},
	peer.OpKeepAlives: {AccessWrite, peerGroup},
	peer.OpRegister:   {AccessWrite, peerGroup},
	peer.OpDeregister: {AccessWrite, peerGroup},
	peer.OpHeartbeat:  {AccessWrite, peerGroup},
	peer.OpReplace:    {AccessWrite, peerGroup},

	peer.OpCreateGroup:  {AccessAdmin, peerGroup},
	peer.OpDeleteGroup:  {AccessAdmin, peerGroup},
	peer.OpMembers:      {AccessAdmin, peerCluster},
	peer.OpAddServer:    {AccessAdmin, peerCluster},
	peer.OpRemoveServer: {AccessAdmin, peerCluster},
	peer.OpSettings:     {AccessAdmin, peerCluster},
	peer.OpSetSettings:  {AccessAdmin, peerCluster},
	peer.OpJoin:         {AccessAdmin, peerCluster},
	peer.OpLeaseLeft:    {AccessAdmin, peerCluster},
	peer.OpSnapshot:     {AccessAdmin, peerCluster},
	// Registering a script or custom check runs commands on the servers.
	peer.OpScriptCheck: {AccessAdmin, peerCluster},
}

// peerAuthorizer checks peer calls against tokens (nil = no check).
func peerAuthorizer(tokens *Tokens) peer.Authorizer {
	if tokens == nil {
		return nil
	}
	return func(ctx context.Context, op, group string) error {
		n, ok := peerAccess[op]
		if !ok {
			return fmt.Errorf("peer operation %q has no role assigned: %w", op, errs.Forbidden)
		}
		token := peer.TokenFrom(ctx)
		switch n.scope {
		case peerCluster:
			group = ""
		case peerAny:
			g, ok := tokens.Lookup(token)
			if ok && g.Access >= n.need {
				return nil
			}
			group = ""
		}
		if err := tokens.Authorize(token, n.need, group); err != nil {
			return fmt.Errorf("peer %s: %w", op, err)
		}
		return nil
	}
}

// peerDial is what this node adds to its own peer calls: its token.
func peerDial(o Options) []grpc.DialOption {
	if o.Token == "" {
		return nil
	}
	return []grpc.DialOption{peer.WithToken(o.Token)}
}
