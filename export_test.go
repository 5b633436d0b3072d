package dister

import (
	"context"
	"time"

	"github.com/dister/dister/internal/cluster"
)

// SetProposeHook exposes the engine's test hook: h runs after every
// committed proposal with its encoded bytes.
func SetProposeHook(n *Node, h func(ctx context.Context, shardID uint64, cmd []byte)) {
	server(n).SetTxnHook(h)
}

// SetSubmitHook runs h each time n hands a proposal to the Raft engine.
func SetSubmitHook(n *Node, h func(shardID uint64)) { server(n).SetSubmitHook(h) }

// ProposeAgain re-sends an encoded proposal, as a retry after a lost reply.
func ProposeAgain(ctx context.Context, n *Node, shardID uint64, cmd []byte) (revision int64, succeeded bool, err error) {
	r, err := server(n).ProposeAgain(ctx, shardID, cmd)
	if err != nil {
		return 0, false, err
	}
	return r.Revision, r.Succeeded, nil
}

// SetViewIdle shortens a Balancer's sweep period; call it before its first
// Pick.
func SetViewIdle(b *Balancer, d time.Duration) { b.idle = d }

// ViewCount is how many services a Balancer keeps a view of.
func ViewCount(b *Balancer) int64 { return b.count.Load() }

// SetHubHook makes every watch hub of n run h (shard id of its group)
// before it reads what the local replica applied; nil removes it. A test
// blocks in h to make a hub fall behind.
func SetHubHook(n *Node, h func(shardID uint64)) { server(n).SetHubHook(h) }

// server is n's server engine (tests of the server role only).
func server(n *Node) *cluster.Engine { return n.e.(*cluster.Engine) }
