package dister_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// TestErrorsCutKeys: an error message quotes at most 200 bytes of a key,
// whatever its length, and still matches its sentinel.
func TestErrorsCutKeys(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	raft, peer := testcluster.FreeAddr(t), testcluster.FreeAddr(t)
	n, err := dister.Open(ctx, dister.Options{NodeID: 1, DataDir: t.TempDir(), RaftAddr: raft, PeerAddr: peer,
		InitialMembers: map[uint64]dister.Peer{1: {RaftAddr: raft, PeerAddr: peer}}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	long := strings.Repeat("k", 4000)
	_, err = n.KV().Get(ctx, long)
	if !errors.Is(err, dister.ErrNotFound) {
		t.Fatalf("get a missing long key: %v", err)
	}
	if want := `get "` + strings.Repeat("k", 200) + `"...: `; !strings.HasPrefix(err.Error(), want) || len(err.Error()) > 300 {
		t.Errorf("get a missing long key: %q, want it to start with %q", err, want)
	}
	_, err = n.KV().Put(ctx, long+long, []byte("v"))
	if !errors.Is(err, dister.ErrTooLarge) && !errors.Is(err, dister.ErrInvalid) || len(err.Error()) > 400 {
		t.Errorf("put a key over the limit: %d bytes of message: %.300q", len(err.Error()), err)
	}
	if _, err := n.KV().Get(ctx, "short"); err == nil || !strings.HasPrefix(err.Error(), `get "short": `) {
		t.Errorf("get a missing short key: %v", err)
	}
}

// Service calls cut what they echo of names, tags, meta keys and addresses
// to 200 bytes too: a 100 KB tag is not sent back whole.
func TestServiceErrorsCutEchoes(t *testing.T) {
	// (Bound: a few cut echoes and the text around them.)
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	svcs := c.Node(1).Services()
	huge := strings.Repeat("x", 100_000)
	ok := dister.Instance{Service: "api", ID: "i1", Address: "127.0.0.1:80", Check: dister.Check{Type: dister.CheckNever}}
	cases := map[string]func(in *dister.Instance){
		"service":  func(in *dister.Instance) { in.Service = huge },
		"id":       func(in *dister.Instance) { in.ID = huge },
		"tag":      func(in *dister.Instance) { in.Tags = []string{huge} },
		"meta key": func(in *dister.Instance) { in.Meta = map[string]string{huge: "v"} },
		"address":  func(in *dister.Instance) { in.Address = huge },
		"target": func(in *dister.Instance) {
			in.Check = dister.Check{Type: dister.CheckTCP, Target: huge, Interval: time.Second}
		},
		"check type": func(in *dister.Instance) { in.Check = dister.Check{Type: dister.CheckType(huge)} },
	}
	for name, spoil := range cases {
		in := ok
		spoil(&in)
		err := svcs.Register(ctx, in)
		if err == nil {
			t.Errorf("%s: registered", name)
			continue
		}
		if len(err.Error()) > 1000 {
			t.Errorf("%s: %d bytes of message: %.300q", name, len(err.Error()), err)
		}
	}
	for name, call := range map[string]func() error{
		"get":     func() error { _, err := svcs.Get(ctx, huge); return err },
		"replace": func() error { return svcs.Replace(ctx, []string{huge, huge}, nil) },
	} {
		if err := call(); err == nil || len(err.Error()) > 1000 {
			t.Errorf("%s: %d bytes of message: %.300q", name, len(fmt.Sprint(err)), err)
		}
	}
}

// A put is a one-op transaction inside, but its errors say so in a put's
// words: no "then op 0".
func TestPutErrorsNameNoTxnOp(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	kv := c.Node(1).KV()
	_, err := kv.Put(ctx, "k", []byte("v"), dister.WithLease(99))
	if !errors.Is(err, dister.ErrLeaseNotFound) || err.Error() != `put "k": lease 99: dister: lease not found` {
		t.Errorf("put with a missing lease: %v", err)
	}
	_, err = kv.Put(ctx, "k", make([]byte, 2<<20))
	if !errors.Is(err, dister.ErrTooLarge) || strings.Contains(err.Error(), "op 0") {
		t.Errorf("put of a value over the limit: %v", err)
	}
}

// A Pick's errors cut the service name they echo as the other service
// calls do: before, "pick %q" repeated a 100 KB name whole (and REST
// /v1/balance/{name} sent it back), in every mode of Pick.
func TestPickErrorsCutEchoes(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	b := c.Node(1).Balancer()
	huge := strings.Repeat("x", 100_000)
	for name, opts := range map[string][]dister.PickOption{
		"view":  nil,
		"fresh": {dister.Fresh()},
	} {
		_, err := b.Pick(ctx, huge, opts...)
		if !errors.Is(err, dister.ErrInvalid) || len(err.Error()) > 1000 {
			t.Errorf("%s: %d bytes of message: %.300q", name, len(fmt.Sprint(err)), err)
		}
	}
}
