package dister_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// BenchmarkTLS compares the same workloads with mutual TLS off and on
// (Raft and the peer API): 64 writers and 64 linearizable readers through
// the leader, and through a client node without a cache (every call
// crosses the peer API):
//
//	go test -run '^$' -bench BenchmarkTLS -benchtime 5s -count 3 .
func BenchmarkTLS(b *testing.B) {
	for _, mode := range []string{"off", "on"} {
		setup := func(b *testing.B) (*testcluster.Cluster, *pki) {
			if mode == "off" {
				return benchCluster(b), nil
			}
			p := newPKI(b, 3)
			c := testcluster.New(b, 3, p.serverTLS)
			c.Leader()
			return c, p
		}
		client := func(b *testing.B, c *testcluster.Cluster, p *pki) *dister.KV {
			var tl *dister.TLS
			if p != nil {
				tl = &dister.TLS{CAFile: p.ca.File, CertFile: p.client[0], KeyFile: p.client[1]}
			}
			return openTLSClient(b, c, tl, -1).KV()
		}
		put := func(kv *dister.KV) func(ctx context.Context, w, i int) error {
			return func(ctx context.Context, w, i int) error {
				_, err := kv.Put(ctx, fmt.Sprintf("bench/%05d", rand.IntN(benchKeys)), benchValue)
				return err
			}
		}
		get := func(kv *dister.KV) func(ctx context.Context, w, i int) error {
			return func(ctx context.Context, w, i int) error {
				_, err := kv.Get(ctx, fmt.Sprintf("bench/%05d", rand.IntN(benchKeys)), dister.Linearizable())
				return err
			}
		}
		b.Run("tls="+mode+"/leader/put/writers=64", func(b *testing.B) {
			c, _ := setup(b)
			runParallel(b, 64, put(c.Node(c.Leader()).KV()))
		})
		b.Run("tls="+mode+"/leader/get-linearizable/readers=64", func(b *testing.B) {
			c, _ := setup(b)
			kv := c.Node(c.Leader()).KV()
			fill(b, kv)
			runParallel(b, 64, get(kv))
		})
		b.Run("tls="+mode+"/client/put/writers=64", func(b *testing.B) {
			c, p := setup(b)
			runParallel(b, 64, put(client(b, c, p)))
		})
		b.Run("tls="+mode+"/client/get-linearizable/readers=64", func(b *testing.B) {
			c, p := setup(b)
			fill(b, c.Node(c.Leader()).KV())
			runParallel(b, 64, get(client(b, c, p)))
		})
	}
}
