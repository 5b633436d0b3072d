package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"syscall"
	"testing"
	"time"
)

// put writes through d's REST API, retrying while the cluster has no
// leader (503/504 or the request timing out): the election after a crash.
// It returns the revision of the acknowledged write.
func putRetry(t *testing.T, d *daemon, key, value string) int64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body, err := d.do("PUT", "/v1/kv/"+url.PathEscape(key), []byte(value))
		if err == nil && code == http.StatusOK {
			var ans struct {
				Revision int64 `json:"revision"`
			}
			if err := json.Unmarshal(body, &ans); err != nil || ans.Revision == 0 {
				t.Fatalf("put %q on %s: answer %s: %v", key, d.name, body, err)
			}
			return ans.Revision
		}
		retryable := err != nil || code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout
		if !retryable || time.Now().After(deadline) {
			t.Fatalf("put %q on %s: %d %s %v", key, d.name, code, body, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// leaderOf asks d which server leads the default group, waiting for one.
func leaderOf(t *testing.T, d *daemon) uint64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, g := range d.status().Groups {
			if g.Name == "default" && g.Leader != 0 {
				return g.Leader
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s knows no leader of the default group", d.name)
	return 0
}

// TestEndToEndThreeDaemons runs a cluster of three real processes: writes
// go through one, the leader is killed with SIGKILL, writes go on through a
// survivor, and the killed server, restarted from its data dir alone,
// catches up with every acknowledged write.
func TestEndToEndThreeDaemons(t *testing.T) {
	ds := make([]*daemon, 3)
	for i := range ds {
		ds[i] = newDaemon(t, fmt.Sprintf("node%d", i+1))
	}
	var members []string
	for i, d := range ds {
		members = append(members, "--initial-member", fmt.Sprintf("%d=%s,%s", i+1, d.flag("raft-addr"), d.flag("peer-addr")))
	}
	for i, d := range ds {
		// The first start of node 3 finds its id in --initial-member by its
		// Raft address; the others name it.
		restart := d.args
		if i < 2 {
			d.args = append(d.args, "--node-id", fmt.Sprint(i+1))
		}
		d.args = append(d.args, members...)
		d.start()
		d.args = restart // a restart gives neither --node-id nor --initial-member
	}
	for _, d := range ds {
		d.waitReady()
	}
	for i, d := range ds {
		if id := d.status().NodeID; id != uint64(i+1) {
			t.Fatalf("%s reports node id %d", d.name, id)
		}
	}

	acked := map[string]string{}
	var lastKey string
	var lastRev int64
	write := func(d *daemon, i int) {
		key, value := fmt.Sprintf("e2e/k%03d", i), fmt.Sprintf("value %d via %s", i, d.name)
		rev := putRetry(t, d, key, value)
		if rev <= lastRev {
			t.Fatalf("write %d got revision %d after %d", i, rev, lastRev)
		}
		acked[key], lastKey, lastRev = value, key, rev
	}
	for i := 0; i < 10; i++ {
		write(ds[0], i)
	}

	leader := leaderOf(t, ds[0])
	killed := ds[leader-1]
	survivor := ds[leader%3]
	killed.signal(syscall.SIGKILL)
	killed.waitExit(10 * time.Second)
	t.Logf("killed the leader %s; writing through %s", killed.name, survivor.name)
	start := time.Now()
	write(survivor, 10)
	t.Logf("first write after the kill acknowledged in %v", time.Since(start).Round(time.Millisecond))
	for i := 11; i < 30; i++ {
		write(survivor, i)
	}
	if l := leaderOf(t, survivor); l == leader {
		t.Fatalf("the killed server %d is still reported as leader", l)
	}

	// The members list of a survivor shows the dead server.
	res := cli(t, survivor, "", nil, "member", "ls", "-o", "json")
	var ms struct {
		Members []member `json:"members"`
	}
	if err := json.Unmarshal([]byte(res.ok(t, "member ls")), &ms); err != nil || len(ms.Members) != 3 {
		t.Fatalf("member ls: %v %+v", err, ms)
	}
	for _, m := range ms.Members {
		if m.ID == leader && m.Alive {
			t.Errorf("killed server %d reported alive", m.ID)
		}
	}

	killed.start()
	killed.waitReady()
	if id := killed.status().NodeID; id != leader {
		t.Fatalf("restarted %s reports node id %d, want %d", killed.name, id, leader)
	}
	// A stale read that waits for the last revision sees the last write,
	// and so does a linearizable one.
	var e entry
	killed.mustJSONCall("GET", fmt.Sprintf("/v1/kv/%s?consistency=stale&min_revision=%d", url.PathEscape(lastKey), lastRev), nil, &e)
	if e.Value == nil || *e.Value != acked[lastKey] {
		t.Fatalf("stale read of %s with min_revision %d on the restarted server: %+v", lastKey, lastRev, e)
	}
	e = entry{}
	killed.mustJSONCall("GET", "/v1/kv/"+url.PathEscape(lastKey)+"?consistency=linearizable", nil, &e)
	if e.Value == nil || *e.Value != acked[lastKey] {
		t.Fatalf("linearizable read of %s on the restarted server: %+v", lastKey, e)
	}
	// Every acknowledged write, on every server.
	for _, d := range ds {
		var page listAnswer
		d.mustJSONCall("GET", fmt.Sprintf("/v1/kv?prefix=e2e/&consistency=stale&min_revision=%d", lastRev), nil, &page)
		got := map[string]string{}
		for _, e := range page.Entries {
			if e.Value != nil {
				got[e.Key] = *e.Value
			}
		}
		for k, v := range acked {
			if got[k] != v {
				t.Errorf("%s: %s = %q, want %q", d.name, k, got[k], v)
			}
		}
		if len(got) != len(acked) {
			t.Errorf("%s: %d keys, want %d", d.name, len(got), len(acked))
		}
	}
	for _, d := range ds {
		d.stop()
	}
}
