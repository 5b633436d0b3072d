// Command embedded runs one dister server inside this program (a cluster of
// one) and uses its KV: put, get, list and compare-and-swap.
//
//	go run ./examples/embedded
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
	dir, err := os.MkdirTemp("", "dister-embedded")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// A real program keeps DataDir and the addresses from one start to
	// the next; free ports keep this example runnable anywhere.
	addrs := freeAddrs(2)
	n, err := dister.Open(ctx, dister.Options{
		NodeID:   1,
		DataDir:  dir,
		RaftAddr: addrs[0],
		PeerAddr: addrs[1],
		Logger:   quietLogger(),
	})
	if err != nil {
		return err
	}
	defer n.Close()
	kv := n.KV()

	// Put returns once a majority (here: this server) committed the write.
	rev, err := kv.Put(ctx, "app/db/url", []byte("postgres://db:5432/app"))
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, "app/db/pool", []byte("10")); err != nil {
		return err
	}
	fmt.Printf("put app/db/url at revision %d\n", rev)

	e, err := kv.Get(ctx, "app/db/url")
	if err != nil {
		return err
	}
	fmt.Printf("get %s = %s (version %d)\n", e.Key, e.Value, e.Version)

	entries, listRev, err := kv.List(ctx, "app/db/")
	if err != nil {
		return err
	}
	fmt.Printf("list app/db/ at revision %d:\n", listRev)
	for _, e := range entries {
		fmt.Printf("  %s = %s\n", e.Key, e.Value)
	}

	// Compare-and-swap: the write applies only if nobody changed the key
	// since we read it.
	pool, err := kv.Get(ctx, "app/db/pool")
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, "app/db/pool", []byte("20"), dister.IfModRevision(pool.ModRevision)); err != nil {
		return err
	}
	fmt.Println("CAS with the current mod revision: applied")
	_, err = kv.Put(ctx, "app/db/pool", []byte("30"), dister.IfModRevision(pool.ModRevision))
	if !errors.Is(err, dister.ErrConflict) {
		return fmt.Errorf("CAS with a stale mod revision: got %v, want ErrConflict", err)
	}
	fmt.Println("CAS with a stale mod revision: ErrConflict")

	// IfModRevision(0): create only if absent, e.g. to take a name.
	if _, err := kv.Put(ctx, "app/owner", []byte("me"), dister.IfModRevision(0)); err != nil {
		return err
	}
	e, err = kv.Get(ctx, "app/db/pool")
	if err != nil {
		return err
	}
	fmt.Printf("app/db/pool = %s (version %d)\n", e.Value, e.Version)
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
