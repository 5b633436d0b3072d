package dister_test

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

// Register instances of a service, then pick one. Instances without a
// check pass at once; a checked one passes after its first probe, run by
// the group's leader.
func ExampleServices_Register() {
	ctx := context.Background()
	n, done := oneServer(ctx)
	defer done()

	s := n.Services()
	for _, in := range []dister.Instance{
		{Service: "api", ID: "api-1", Address: "127.0.0.1:8081", Priority: 3},
		{Service: "api", ID: "api-2", Address: "127.0.0.1:8082", Priority: 1},
		{Service: "api", ID: "api-3", Address: "127.0.0.1:8083", Priority: 1,
			Check: dister.Check{Type: dister.CheckHTTP, Target: "http://127.0.0.1:8083/health", Interval: 5 * time.Second}},
	} {
		if err := s.Register(ctx, in); err != nil {
			log.Fatal(err)
		}
	}
	passing, err := s.Get(ctx, "api", dister.Passing())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(passing), "of 3 passing")

	// The same key goes to the same instance while the set is stable.
	a, err := n.Balancer().Pick(ctx, "api", dister.HashKey("user-42"))
	if err != nil {
		log.Fatal(err)
	}
	b, _ := n.Balancer().Pick(ctx, "api", dister.HashKey("user-42"))
	fmt.Println(a.ID == b.ID)
	// Output:
	// 2 of 3 passing
	// true
}

// A ttl instance is kept alive by the Node that registered it: when that
// process stops, the instance turns critical and, after
// DeregisterCriticalAfter, disappears.
func ExampleServices_Register_ttl() {
	ctx := context.Background()
	n, done := oneServer(ctx)
	defer done()

	err := n.Services().Register(ctx, dister.Instance{Service: "worker", ID: "w1", Address: "10.0.0.7:9000",
		Check: dister.Check{Type: dister.CheckTTL, TTL: 10 * time.Second, DeregisterCriticalAfter: time.Minute}})
	if err != nil {
		log.Fatal(err)
	}
	in, err := n.Balancer().Pick(ctx, "worker")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(in.ID, in.Status)
	// Output: w1 passing
}

// oneServer opens a one-server cluster in a temporary directory; done
// closes it and removes the directory.
func oneServer(ctx context.Context) (n *dister.Node, done func()) {
	dir, err := os.MkdirTemp("", "dister-example")
	if err != nil {
		log.Fatal(err)
	}
	n, err = dister.Open(ctx, dister.Options{NodeID: 1, DataDir: dir, RaftAddr: freeAddr(),
		PeerAddr: freeAddr(), Logger: quietLogger()})
	if err != nil {
		log.Fatal(err)
	}
	return n, func() { n.Close(); os.RemoveAll(dir) }
}
