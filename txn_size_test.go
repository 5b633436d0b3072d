package dister_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// One Txn within the other limits could carry 128 values of 1 MiB in one
// Raft entry: 100 MiB of it took longer to replicate and sync than an
// election timeout, leaders lost their quorum over and over, the caller got
// "outcome unknown" after 10 s although the txn applied, and the group's
// other writes failed meanwhile (found by an adversarial review). Now a
// txn's keys and values together are at most MaxTxnBytes, through a server
// and through a client node alike.
func TestTxnSizeIsBounded(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	value := make([]byte, dister.MaxValueSize)
	txn := func(prefix string, n int) dister.Txn {
		var ops []dister.Op
		for i := range n {
			ops = append(ops, dister.Put(fmt.Sprintf("%s/%d", prefix, i), value))
		}
		return dister.Txn{Then: ops}
	}
	fits := dister.MaxTxnBytes/dister.MaxValueSize - 1 // values, and room for their keys
	for name, n := range map[string]*dister.Node{"server": c.Node(c.Leader()), "client": openClient(t, c, 100)} {
		kv := n.KV()
		if _, err := kv.Txn(ctx, txn(name+"/big", fits+2)); !errors.Is(err, dister.ErrTooLarge) {
			t.Fatalf("%s: a txn of %d values of 1 MiB: %v, want ErrTooLarge", name, fits+2, err)
		}
		if _, err := kv.Get(ctx, name+"/big/0", dister.Linearizable()); !errors.Is(err, dister.ErrNotFound) {
			t.Fatalf("%s: a key of the refused txn: %v, want ErrNotFound", name, err)
		}
		r, err := kv.Txn(ctx, txn(name+"/fits", fits))
		if err != nil || !r.Succeeded {
			t.Fatalf("%s: a txn of %d values of 1 MiB: %+v, %v", name, fits, r, err)
		}
	}
}
