// Command groups shows groups: isolated data spaces in one cluster, each
// with its own keys and revisions (each is its own Raft shard).
//
//	go run ./examples/groups
package main

import (
	"context"
	"errors"
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
	dir, err := os.MkdirTemp("", "dister-groups")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	addrs := freeAddrs(2)
	n, err := dister.Open(ctx, dister.Options{
		NodeID: 1, DataDir: dir, RaftAddr: addrs[0], PeerAddr: addrs[1], Logger: quietLogger(),
	})
	if err != nil {
		return err
	}
	defer n.Close()

	for _, g := range []string{"billing", "search"} {
		if err := n.CreateGroup(ctx, g); err != nil {
			return err
		}
	}
	groups, err := n.Groups(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("groups: %v\n", groups)

	// The same key in two groups: two independent values.
	billing, search := n.Group("billing").KV(), n.Group("search").KV()
	if _, err := billing.Put(ctx, "db/url", []byte("postgres://billing-db/app")); err != nil {
		return err
	}
	if _, err := search.Put(ctx, "db/url", []byte("http://search-es:9200")); err != nil {
		return err
	}
	for name, kv := range map[string]*dister.KV{"billing": billing, "search": search} {
		e, err := kv.Get(ctx, "db/url")
		if err != nil {
			return err
		}
		fmt.Printf("%s: db/url = %s\n", name, e.Value)
	}

	// A key written in one group does not exist in another, nor in
	// "default".
	if _, err := billing.Put(ctx, "invoice/next", []byte("1001")); err != nil {
		return err
	}
	for name, kv := range map[string]*dister.KV{"search": search, "default": n.KV()} {
		if _, err := kv.Get(ctx, "invoice/next"); !errors.Is(err, dister.ErrNotFound) {
			return fmt.Errorf("%s sees billing's key: %v", name, err)
		}
		fmt.Printf("%s: invoice/next not found (it lives in billing)\n", name)
	}

	// Removing a group removes its data only.
	if err := n.DeleteGroup(ctx, "billing"); err != nil {
		return err
	}
	if _, err := billing.Get(ctx, "db/url"); !errors.Is(err, dister.ErrGroupNotFound) {
		return fmt.Errorf("get in a deleted group: %v", err)
	}
	e, err := search.Get(ctx, "db/url")
	if err != nil {
		return err
	}
	fmt.Printf("deleted billing; search still has db/url = %s\n", e.Value)
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
