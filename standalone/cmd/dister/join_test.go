package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"testing"
	"time"
)

// TestJoin grows a one-server cluster with --join: a server without an id
// gets the next free one, and a server added beforehand with "member add
// --id" finds its id by its Raft address.
func TestJoin(t *testing.T) {
	a := newDaemon(t, "a")
	a.start()
	a.waitReady()

	b := newDaemon(t, "b", "--join", a.flag("peer-addr"))
	b.start()
	b.waitReady()
	if id := b.status().NodeID; id != 2 {
		t.Fatalf("joined server got id %d, want 2", id)
	}

	c := newDaemon(t, "c", "--join", a.flag("peer-addr"))
	cli(t, a, "", nil, "member", "add", "--id", "5", c.flag("raft-addr"), c.flag("peer-addr")).ok(t, "member add")
	c.start()
	c.waitReady()
	if id := c.status().NodeID; id != 5 {
		t.Fatalf("pre-added server got id %d, want 5", id)
	}

	// Every server ends up a live voter.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var ms struct {
			Members []member `json:"members"`
		}
		out := cli(t, b, "", nil, "member", "ls", "-o", "json").ok(t, "member ls")
		if err := json.Unmarshal([]byte(out), &ms); err != nil {
			t.Fatal(err)
		}
		ready := len(ms.Members) == 3
		for _, m := range ms.Members {
			ready = ready && m.Voter && m.Alive
		}
		if ready {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("members never all live voters: %s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}

	rev := putRetry(t, c, "joined", "yes")
	var e entry
	b.mustJSONCall("GET", fmt.Sprintf("/v1/kv/%s?consistency=stale&min_revision=%d", url.PathEscape("joined"), rev), nil, &e)
	if e.Value == nil || *e.Value != "yes" {
		t.Fatalf("read on b of a write through c: %+v", e)
	}
	for _, d := range []*daemon{c, b, a} {
		d.stop()
	}
}
