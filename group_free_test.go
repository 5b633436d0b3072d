package dister_test

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/dister/dister/internal/testcluster"
)

// DeleteGroup frees what the group held on every server: its goroutines
// (pebble's, the checker's) as well as its data (see
// TestDeleteGroupRemovesDataOnceClosed). Not parallel: it counts the
// process's goroutines.
func TestDeleteGroupFreesGoroutines(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	n := c.Node(c.IDs()[0])
	cycle := func(prefix string) {
		for i := range 4 {
			name := fmt.Sprintf("%s%d", prefix, i)
			if err := n.CreateGroup(ctx, name); err != nil {
				t.Fatal(err)
			}
			if _, err := n.Group(name).KV().Put(ctx, "k", []byte("v")); err != nil {
				t.Fatal(err)
			}
		}
		grown := ownGoroutines()
		for i := range 4 {
			if err := n.DeleteGroup(ctx, fmt.Sprintf("%s%d", prefix, i)); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("%s: %d goroutines with the groups", prefix, grown)
	}
	cycle("warm")
	settle := func() int {
		last, stable := ownGoroutines(), 0
		for deadline := time.Now().Add(30 * time.Second); stable < 10 && time.Now().Before(deadline); {
			time.Sleep(100 * time.Millisecond)
			if now := ownGoroutines(); now == last {
				stable++
			} else {
				last, stable = now, 0
			}
		}
		return last
	}
	before := settle()
	cycle("g")
	after := settle()

	t.Logf("goroutines: %d before, %d after creating and deleting 4 groups", before, after)
	// 4 groups on 3 servers held 4 pebble goroutines each per replica before
	// they were shared (now 1) and a checker each: 16 or more.
	if after > before+4 {
		t.Fatalf("goroutines: %d before, %d after creating and deleting 4 groups", before, after)
	}
}

// ownGoroutines counts the goroutines of the process except those of
// dragonboat's transport: it spreads shards over up to 4 connections per
// pair of servers, opened and closed as shards come and go.
func ownGoroutines() int {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if !bytes.Contains(g, []byte("dragonboat/v4/internal/transport.")) {
			n++
		}
	}
	return n
}
