// Command client shows the client role: three servers that vote and store,
// and a client node beside the app that stores nothing. Writes go to the
// group's leader, reads are spread over the servers, and Gets are answered
// from a cache that a watch keeps current.
//
//	go run ./examples/client
package main

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/dister/dister"
)

func main() {
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// Three servers bootstrapping one cluster (in one process here; in
	// production one per machine, e.g. `dister server`).
	members := map[uint64]dister.Peer{}
	addrs := freeAddrs(6)
	for id := uint64(1); id <= 3; id++ {
		members[id] = dister.Peer{RaftAddr: addrs[2*id-2], PeerAddr: addrs[2*id-1]}
	}
	var seeds []string
	for id := uint64(1); id <= 3; id++ {
		dir, err := os.MkdirTemp("", "dister-client-example")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		s, err := dister.Open(ctx, dister.Options{NodeID: id, DataDir: dir, RaftAddr: members[id].RaftAddr,
			PeerAddr: members[id].PeerAddr, InitialMembers: members, Logger: quietLogger()})
		if err != nil {
			return err
		}
		defer s.Close()
		seeds = append(seeds, members[id].PeerAddr)
	}

	// The app's client node: only the servers' peer addresses (one is
	// enough; it discovers the others). No data dir, no node id.
	app, err := dister.Open(ctx, dister.Options{Role: dister.RoleClient, Servers: seeds[:1], Logger: quietLogger()})
	if err != nil {
		return err
	}
	defer app.Close()
	if err := app.WaitReady(ctx); err != nil {
		return err
	}
	st := app.Status()
	fmt.Printf("client node: role %s, node id %d\n", st.Role, st.NodeID)

	kv := app.KV()
	rev, err := kv.Put(ctx, "config/feature", []byte("on"))
	if err != nil {
		return err
	}
	fmt.Printf("put config/feature at revision %d (through the leader)\n", rev)

	// The app reads its own write at once; repeated reads come from the
	// cache once its watch has delivered the write.
	for i := range 50 {
		var hit bool
		e, err := kv.Get(ctx, "config/feature", dister.CacheInfo(&hit))
		if err != nil {
			return err
		}
		if hit {
			fmt.Printf("get %d: %s from cache\n", i+1, e.Value)
			break
		}
		fmt.Printf("get %d: %s from a server\n", i+1, e.Value)
		time.Sleep(10 * time.Millisecond)
	}

	// A linearizable read from cache: the leader's committed revision (one
	// small call), then the cache once its watch has reached it.
	var hit bool
	e, err := kv.Get(ctx, "config/feature", dister.Linearizable(), dister.CacheInfo(&hit))
	if err != nil {
		return err
	}
	fmt.Printf("linearizable get: %s (from cache: %v)\n", e.Value, hit)

	// Services work as on a server; the client keeps the ttl lease alive.
	if err := app.Services().Register(ctx, dister.Instance{Service: "web", ID: "web-1", Address: "127.0.0.1:8080",
		Check: dister.Check{Type: dister.CheckTTL, TTL: 5 * time.Second}}); err != nil {
		return err
	}
	if err := app.Services().Heartbeat(ctx, "web", "web-1"); err != nil {
		return err
	}
	inst, err := app.Balancer().Pick(ctx, "web")
	if err != nil {
		return err
	}
	fmt.Printf("picked %s at %s\n", inst.ID, inst.Address)

	ms, err := app.Members(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("%d servers; the client is not one of them\n", len(ms))
	return nil
}

// freeAddrs picks n distinct free loopback ports: every listener stays open
// until all are picked, so the system cannot hand one port out twice.
func freeAddrs(n int) []string {
	addrs := make([]string, n)
	for i := range addrs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			log.Fatal(err)
		}
		defer ln.Close()
		addrs[i] = ln.Addr().String()
	}
	return addrs
}

// quietLogger hides the Raft engine's routine warnings (elections).
func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}
