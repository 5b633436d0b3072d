// Package dister is a lightweight distributed cluster manager: a
// configuration key-value centre and a service registry with health checks
// and load balancing, kept consistent by Raft (dragonboat), with isolated
// groups, run-time membership and per-call read consistency.
//
// A Go program embeds a server with Open:
//
//	n, err := dister.Open(ctx, dister.Options{
//		NodeID: 1, DataDir: "data", RaftAddr: "127.0.0.1:4166", PeerAddr: "127.0.0.1:4167",
//	})
//	rev, err := n.KV().Put(ctx, "app/config", []byte("v1"))
//	e, err := n.KV().Get(ctx, "app/config")
//
// Services().Register stores service instances (kept apart from the keys),
// the group leader health-checks them, and Balancer().Pick chooses a usable
// one from a local, watch-fed view:
//
//	err = n.Services().Register(ctx, dister.Instance{Service: "api", ID: "a1",
//		Address: "10.0.0.5:8080", Priority: 2,
//		Check: dister.Check{Type: dister.CheckHTTP, Target: "http://10.0.0.5:8080/health"}})
//	in, err := n.Balancer().Pick(ctx, "api")
//
// A write returns only after a majority of the group's servers committed it.
// Reads are SessionRead by default (a Node sees its own writes and never
// goes back in revision); Linearizable() and Stale() choose otherwise.
//
// Limits: keys are UTF-8 without NUL, 1 byte to 4 KiB (MaxKeySize); values
// up to 1 MiB (MaxValueSize); a Txn has at most 128 compares and ops
// (MaxTxnOps) and 4 MiB of keys and values together (MaxTxnBytes); a List returns at most 10,000 entries (MaxListLimit).
// Breaking one gives ErrInvalid or ErrTooLarge and changes nothing.
package dister
