package standalone_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"testing"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/benchrun"
	"github.com/dister/dister/internal/testcluster"
	"github.com/dister/dister/standalone"
)

// BenchmarkREST measures the REST API under 64 concurrent keep-alive HTTP
// clients (each its own connection), 256-byte values over 10,000 keys,
// on one server and on a 3-server cluster (one HTTP server per node, the
// clients spread over them; reads are session reads, served locally). It
// reports ops/s, p50 and p99; nothing is asserted about them:
//
//	go test -run '^$' -bench REST -benchtime 20000x ./standalone/
func BenchmarkREST(b *testing.B) {
	const (
		clients = 64
		keys    = 10000
	)
	value := bytes.Repeat([]byte("v"), 256)
	for _, servers := range []int{1, 3} {
		b.Run(fmt.Sprintf("servers=%d", servers), func(b *testing.B) {
			c := testcluster.New(b, servers)
			c.Leader()
			var urls []string
			for _, id := range c.IDs() {
				urls = append(urls, serve(b, c.Node(id), standalone.Options{}).URL)
			}
			b.Run("put", func(b *testing.B) {
				benchHTTP(b, clients, func(cl *http.Client, w, i int) error {
					u := fmt.Sprintf("%s/v1/kv/bench/%05d", urls[w%len(urls)], rand.IntN(keys))
					return send(cl, http.MethodPut, u, value)
				})
			})
			fillBench(b, c, keys, value)
			b.Run("get", func(b *testing.B) {
				benchHTTP(b, clients, func(cl *http.Client, w, i int) error {
					u := fmt.Sprintf("%s/v1/kv/bench/%05d", urls[w%len(urls)], rand.IntN(keys))
					return send(cl, http.MethodGet, u, nil)
				})
			})
		})
	}
}

// fillBench writes every key, then makes each server's session floor
// reach the fill, so that session reads on any server find every key.
func fillBench(b *testing.B, c *testcluster.Cluster, keys int, value []byte) {
	b.Helper()
	ctx := context.Background()
	kv := c.Node(c.Leader()).KV()
	for lo := 0; lo < keys; lo += dister.MaxTxnOps {
		var t dister.Txn
		for k := lo; k < min(lo+dister.MaxTxnOps, keys); k++ {
			t.Then = append(t.Then, dister.Put(fmt.Sprintf("bench/%05d", k), value))
		}
		if _, err := kv.Txn(ctx, t); err != nil {
			b.Fatal(err)
		}
	}
	for _, id := range c.IDs() {
		if _, err := c.Node(id).KV().Revision(ctx, dister.Linearizable()); err != nil {
			b.Fatal(err)
		}
	}
}

// send makes one request and drains the answer so the connection is
// reused; anything but 200 is an error.
func send(cl *http.Client, method, url string, body []byte) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return err
	}
	res, err := cl.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if _, err := io.Copy(io.Discard, res.Body); err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s", method, url, res.Status)
	}
	return nil
}

// benchHTTP runs b.N requests over `clients` goroutines, each with its own
// keep-alive client, and reports ops/s, p50 and p99.
func benchHTTP(b *testing.B, clients int, op func(cl *http.Client, w, i int) error) {
	cls := make([]*http.Client, clients)
	for w := range cls {
		cls[w] = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	}
	defer func() {
		for _, cl := range cls {
			cl.CloseIdleConnections()
		}
	}()
	benchrun.Run(b, benchrun.Spec{Workers: clients}, func(_ context.Context, w, i int) error { return op(cls[w], w, i) })
}
