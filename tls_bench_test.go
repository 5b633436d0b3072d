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
	// Off and on alternate per workload, so that both of a pair run under
	// the same load of the machine.
	setup := func(b *testing.B, on bool) (*testcluster.Cluster, *pki) {
		if !on {
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
	workloads := []struct {
		name string
		run  func(b *testing.B, on bool)
	}{
		{"leader/put/writers=64", func(b *testing.B, on bool) {
			c, _ := setup(b, on)
			runParallel(b, 64, put(c.Node(c.Leader()).KV()))
		}},
		{"leader/get-linearizable/readers=64", func(b *testing.B, on bool) {
			c, _ := setup(b, on)
			kv := c.Node(c.Leader()).KV()
			fill(b, kv)
			runParallel(b, 64, get(kv))
		}},
		{"client/put/writers=64", func(b *testing.B, on bool) {
			c, p := setup(b, on)
			runParallel(b, 64, put(client(b, c, p)))
		}},
		{"client/get-linearizable/readers=64", func(b *testing.B, on bool) {
			c, p := setup(b, on)
			fill(b, c.Node(c.Leader()).KV())
			runParallel(b, 64, get(client(b, c, p)))
		}},
	}
	for _, w := range workloads {
		for _, on := range []bool{false, true} {
			mode := "off"
			if on {
				mode = "on"
			}
			b.Run(w.name+"/tls="+mode, func(b *testing.B) { w.run(b, on) })
		}
	}
}
