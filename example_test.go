package dister_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"os"

	"github.com/dister/dister"
)

// freeAddr picks a free loopback port for the examples.
func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

// A single embedded server: a cluster of one.
func ExampleOpen() {
	dir, _ := os.MkdirTemp("", "dister-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()

	n, err := dister.Open(ctx, dister.Options{
		NodeID:   1,
		DataDir:  dir,
		RaftAddr: freeAddr(),
		PeerAddr: freeAddr(),
		Logger:   quietLogger(),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer n.Close()

	if _, err := n.KV().Put(ctx, "app/greeting", []byte("hello")); err != nil {
		log.Fatal(err)
	}
	e, err := n.KV().Get(ctx, "app/greeting")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s version %d\n", e.Value, e.Version)
	// Output: hello version 1
}

// Compare-and-swap with IfModRevision, and a multi-key transaction.
func ExampleKV_Txn() {
	dir, _ := os.MkdirTemp("", "dister-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	n, err := dister.Open(ctx, dister.Options{NodeID: 1, DataDir: dir,
		RaftAddr: freeAddr(), PeerAddr: freeAddr(), Logger: quietLogger()})
	if err != nil {
		log.Fatal(err)
	}
	defer n.Close()
	kv := n.KV()

	rev, _ := kv.Put(ctx, "config/mode", []byte("blue"))
	// Only one of two writers that read revision rev wins.
	_, err = kv.Put(ctx, "config/mode", []byte("green"), dister.IfModRevision(rev))
	fmt.Println("first CAS:", err)
	_, err = kv.Put(ctx, "config/mode", []byte("red"), dister.IfModRevision(rev))
	fmt.Println("second CAS conflicts:", errors.Is(err, dister.ErrConflict))

	// Move a flag from one key to another atomically.
	r, err := kv.Txn(ctx, dister.Txn{
		If:   []dister.Compare{{Key: "config/mode", Target: dister.CompareValue, Op: dister.Equal, Value: []byte("green")}},
		Then: []dister.Op{dister.Put("config/previous", []byte("green")), dister.Put("config/mode", []byte("yellow"))},
		Else: []dister.Op{dister.Put("config/alarm", []byte("1"))},
	})
	if err != nil {
		log.Fatal(err)
	}
	list, _, _ := kv.List(ctx, "config/")
	fmt.Println("txn succeeded:", r.Succeeded, "keys:", len(list))
	// Output:
	// first CAS: <nil>
	// second CAS conflicts: true
	// txn succeeded: true keys: 2
}

// Groups are isolated data spaces.
func ExampleNode_CreateGroup() {
	dir, _ := os.MkdirTemp("", "dister-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	n, err := dister.Open(ctx, dister.Options{NodeID: 1, DataDir: dir,
		RaftAddr: freeAddr(), PeerAddr: freeAddr(), Logger: quietLogger()})
	if err != nil {
		log.Fatal(err)
	}
	defer n.Close()

	if err := n.CreateGroup(ctx, "payments"); err != nil {
		log.Fatal(err)
	}
	n.Group("payments").KV().Put(ctx, "limit", []byte("100"))
	_, err = n.KV().Get(ctx, "limit") // group "default" does not see it
	fmt.Println(errors.Is(err, dister.ErrNotFound))
	groups, _ := n.Groups(ctx)
	fmt.Println(groups)
	// Output:
	// true
	// [default payments]
}
