// Command cluster runs three dister servers in one process, closes the
// leader, and shows that writes go on through the two others and that
// nothing acknowledged is lost.
//
//	go run ./examples/cluster
package main

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/dister/dister"
)

func main() {
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

func run() error {
	dir, err := os.MkdirTemp("", "dister-cluster")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// Every server lists the same members, itself included. In production
	// these are three machines; here, three ports.
	members := map[uint64]dister.Peer{}
	addrs := freeAddrs(6)
	for id := uint64(1); id <= 3; id++ {
		members[id] = dister.Peer{RaftAddr: addrs[2*id-2], PeerAddr: addrs[2*id-1]}
	}
	nodes := map[uint64]*dister.Node{}
	defer func() {
		for _, n := range nodes {
			n.Close()
		}
	}()
	for id, p := range members {
		// Open does not wait for a leader, so one goroutine can open all.
		n, err := dister.Open(ctx, dister.Options{
			NodeID:         id,
			DataDir:        filepath.Join(dir, fmt.Sprint(id)),
			RaftAddr:       p.RaftAddr,
			PeerAddr:       p.PeerAddr,
			InitialMembers: members,
			Logger:         quietLogger(),
		})
		if err != nil {
			return err
		}
		nodes[id] = n
	}
	for _, n := range nodes {
		if err := n.WaitReady(ctx); err != nil {
			return err
		}
	}

	leader, err := nodes[1].Group("default").Leader(ctx)
	if err != nil {
		return err
	}
	if _, err := nodes[leader].KV().Put(ctx, "feature/new-ui", []byte("on")); err != nil {
		return err
	}
	fmt.Printf("3 servers up; server %d leads; wrote feature/new-ui\n", leader)

	// Close the leader: the two others elect a new one and carry on.
	if err := nodes[leader].Close(); err != nil {
		return err
	}
	delete(nodes, leader)
	fmt.Printf("closed server %d (the leader)\n", leader)

	var survivor *dister.Node
	for _, n := range nodes {
		survivor = n
		break
	}
	start := time.Now()
	// The call waits for the new leader within ctx.
	rev, err := survivor.KV().Put(ctx, "feature/dark-mode", []byte("on"))
	if err != nil {
		return err
	}
	fmt.Printf("write through server %d acknowledged at revision %d, %v after the leader went away\n",
		survivor.ID(), rev, time.Since(start).Round(time.Millisecond))
	newLeader, err := survivor.Group("default").Leader(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("server %d leads now\n", newLeader)

	// Both writes are there, read linearizably from the other survivor.
	for id, n := range nodes {
		entries, _, err := n.KV().List(ctx, "feature/", dister.Linearizable())
		if err != nil {
			return err
		}
		if len(entries) != 2 {
			return fmt.Errorf("server %d sees %d keys, want 2", id, len(entries))
		}
		fmt.Printf("server %d sees %d keys: %s, %s\n", id, len(entries), entries[0].Key, entries[1].Key)
	}
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

// quietLogger hides the Raft engine's routine messages: closing the leader
// makes the others log the broken connections as errors on purpose.
func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError + 4}))
}
