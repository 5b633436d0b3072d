package dister_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/fsm"
	"github.com/dister/dister/internal/peer"
	"github.com/dister/dister/internal/testcluster"
)

// A client node's command carries its clock, which the group's session
// table used to take as it was: the group's clock is the newest command
// time, and a session whose last command is more than the horizon behind
// it is forgotten at the next sweep (every 1,024 entries). So one command
// stamped in the future (a forged one, or a client whose clock runs an
// hour fast) made every other session look idle and forgot them all, and a
// client whose clock runs an hour slow was forgotten itself: either way a
// retry applied again. The server that takes a client's command now stamps
// it with its own clock. Found in review.
func TestClientCommandTimeIsTheServers(t *testing.T) {
	now := time.Now().UnixMilli()
	for _, tc := range []struct {
		name                  string
		honestTime, otherTime int64
	}{
		{"another-client-at-max-time", now, math.MaxInt64},
		{"another-client-61-min-fast", now, time.Now().Add(61 * time.Minute).UnixMilli()},
		{"this-client-61-min-slow", time.Now().Add(-61 * time.Minute).UnixMilli(), now},
		{"this-client-at-time-1", 1, now},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testcluster.New(t, 1)
			ctx := ctxT(t)
			addr := c.Options(c.Leader()).PeerAddr
			pc := peer.NewClient()
			defer pc.Close()
			propose := func(cmd *fsm.Command) *fsm.TxnResult {
				resp, err := pc.Propose(ctx, addr, &peer.ProposeRequest{Cmd: mustEncode(t, cmd)})
				if err != nil {
					t.Fatal(err)
				}
				r, err := fsm.DecodeResult(fsm.Result{Data: resp})
				if err != nil {
					t.Fatal(err)
				}
				return r
			}
			put := func(key string) *fsm.Txn {
				return &fsm.Txn{Then: []fsm.Op{{Type: fsm.OpPut, Key: key, Value: []byte("v")}}}
			}
			honest := &fsm.Command{Session: 0x1111, Seq: 1, Mark: 1, Time: tc.honestTime, Kind: fsm.KindTxn, Txn: put("honest")}
			first := propose(honest)
			// Another session's commands, past a sweep.
			propose(&fsm.Command{Session: 0x2222, Seq: 1, Mark: 1, Time: tc.otherTime, Kind: fsm.KindTxn, Txn: put("other")})
			for i := uint64(2); i <= 1100; i++ { // one entry each: the sweep goes by index
				propose(&fsm.Command{Session: 0x2222, Seq: i, Mark: i, Time: tc.otherTime, Kind: fsm.KindTxn, Txn: put("filler")})
			}
			again := propose(honest) // the client's retry of its answered command
			if again.Revision != first.Revision {
				t.Fatalf("a retry of an answered command applied again at revision %d (first at %d)", again.Revision, first.Revision)
			}
			e, err := c.Node(1).KV().Get(ctx, "honest")
			if err != nil || e == nil || e.Version != 1 {
				t.Fatalf("honest key: %+v, %v; want version 1", e, err)
			}
		})
	}
}

// A list from a client node through the peer API is bounded as the public
// List is: Limit 1..MaxListLimit. Limit 0 listed every key of the group in
// the server's memory before the answer was cut at the wire's size (found
// in review: 88 MB for 150,000 small keys, and an answer the client's own
// decoder then refused).
func TestPeerListLimitIsBounded(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	addr := c.Options(c.Leader()).PeerAddr
	pc := peer.NewClient()
	defer pc.Close()
	const keys = dister.MaxListLimit + 1
	var cmds [][]byte
	for i, seq := 0, uint64(1); i < keys; i, seq = i+100, seq+1 {
		txn := &fsm.Txn{}
		for j := i; j < min(i+100, keys); j++ {
			txn.Then = append(txn.Then, fsm.Op{Type: fsm.OpPut, Key: fmt.Sprintf("k/%05d", j), Value: []byte("v")})
		}
		cmds = append(cmds, mustEncode(t, &fsm.Command{Session: 0x3333, Seq: seq, Mark: 1, Kind: fsm.KindTxn, Txn: txn}))
	}
	answers, err := pc.ProposeMany(ctx, addr, &peer.ProposeManyRequest{Cmds: cmds})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range answers {
		if a.Err != nil {
			t.Fatal(a.Err)
		}
	}
	list := func(limit int) (*peer.ReadResponse, error) {
		return pc.Read(ctx, addr, &peer.ReadRequest{Consistency: peer.Linearizable, Query: peer.QueryList, Key: "k/", Limit: limit})
	}
	for _, limit := range []int{0, dister.MaxListLimit + 1, 100_000} {
		if r, err := list(limit); !errors.Is(err, dister.ErrInvalid) {
			n := -1
			if r != nil {
				n = len(r.KVs)
			}
			t.Errorf("list with Limit %d: %d entries, %v; want ErrInvalid", limit, n, err)
		}
	}
	r, err := list(dister.MaxListLimit)
	if err != nil || len(r.KVs) != dister.MaxListLimit || !r.More {
		t.Fatalf("list with Limit %d: %v; want %d entries and More", dister.MaxListLimit, err, dister.MaxListLimit)
	}
	// The public List through a client node pages as before.
	cl, err := dister.Open(ctx, dister.Options{Role: dister.RoleClient, Servers: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, _, err := cl.KV().List(lctx, "k/"); !errors.Is(err, dister.ErrTooLarge) {
		t.Fatalf("List of %d keys from a client node: %v; want ErrTooLarge", keys, err)
	}
	p, err := cl.KV().ListPage(lctx, "k/", dister.Limit(10), dister.After("k/09995"))
	if err != nil || len(p.Entries) != 5 || p.More {
		t.Fatalf("last page: %+v, %v", p, err)
	}
}

// The services' instances call refuses a consistency it does not know, as
// the binary read does (it was served as a stale read).
func TestPeerInstancesConsistencyIsChecked(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	addr := c.Options(c.Leader()).PeerAddr
	pc := peer.NewClient()
	defer pc.Close()
	var resp peer.InstancesResponse
	if err := pc.Call(ctx, addr, peer.OpInstances, peer.InstancesRequest{Service: "s", Consistency: peer.Stale + 1}, &resp); !errors.Is(err, dister.ErrInvalid) {
		t.Fatalf("consistency %d: %v; want ErrInvalid", peer.Stale+1, err)
	}
	if err := pc.Call(ctx, addr, peer.OpInstances, peer.InstancesRequest{Service: "s", Consistency: peer.Linearizable}, &resp); err != nil {
		t.Fatalf("a linearizable read of no instances: %v", err)
	}
}

func mustEncode(t *testing.T, cmd *fsm.Command) []byte {
	t.Helper()
	b, err := fsm.EncodeCommand(cmd)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
