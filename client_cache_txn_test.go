package dister_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// A transaction that changes the same key twice (put then delete, delete
// then put, put then put) leaves the key in the state of its last op; a
// client node's cache, fed by the watch, must agree with the servers.
// Both feeds: filtered, and unfiltered. The cache took the first event of
// a revision and skipped the rest (found by an adversarial review: every
// read mode, Linearizable too, answered the wrong value from the cache
// until the key's next write).
func TestClientCacheTxnChangesKeyTwice(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	srv := c.Node(1).KV()
	clients := map[string]*dister.Node{"filtered": openClient(t, c, 100), "unfiltered": openClientUnfiltered(t, c, 100)}
	cases := []struct {
		name string
		ops  func(k string) []dister.Op
	}{
		{"put then delete", func(k string) []dister.Op { return []dister.Op{dister.Put(k, []byte("gone")), dister.Del(k)} }},
		{"delete then put", func(k string) []dister.Op { return []dister.Op{dister.Del(k), dister.Put(k, []byte("second"))} }},
		{"put then put", func(k string) []dister.Op {
			return []dister.Op{dister.Put(k, []byte("first")), dister.Put(k, []byte("second"))}
		}},
		{"put then prefix delete", func(k string) []dister.Op {
			return []dister.Op{dister.Put(k, []byte("gone")), dister.DelPrefix(k)}
		}},
	}
	for mode, cl := range clients {
		kv := cl.KV()
		for i, tc := range cases {
			k := fmt.Sprintf("%s/%d", mode, i)
			prev, err := srv.Put(ctx, k, []byte("before"))
			if err != nil {
				t.Fatal(err)
			}
			// The client caches the key.
			waitUntil(t, "a cache hit", func() bool {
				var hit bool
				e, err := kv.Get(ctx, k, dister.MinRevision(prev), dister.CacheInfo(&hit))
				if err != nil || string(e.Value) != "before" {
					t.Fatalf("%s: %v, %v", k, e, err)
				}
				return hit
			})
			r, err := srv.Txn(ctx, dister.Txn{Then: tc.ops(k)})
			if err != nil || !r.Succeeded {
				t.Fatalf("txn: %+v, %v", r, err)
			}
			want, err := srv.Get(ctx, k, dister.Linearizable())
			wantS := "absent"
			if err == nil {
				wantS = fmt.Sprintf("%q mod %d", want.Value, want.ModRevision)
			} else if !errors.Is(err, dister.ErrNotFound) {
				t.Fatal(err)
			}
			var hit bool
			e, err := kv.Get(ctx, k, dister.Linearizable(), dister.CacheInfo(&hit))
			gotS := "absent"
			if err == nil {
				gotS = fmt.Sprintf("%q mod %d", e.Value, e.ModRevision)
			} else if !errors.Is(err, dister.ErrNotFound) {
				t.Fatal(err)
			}
			if gotS != wantS {
				t.Errorf("%s feed, txn %s (revision %d): client reads %s (cache hit %v), the servers hold %s", mode, tc.name, r.Revision, gotS, hit, wantS)
			}
		}
	}
}
