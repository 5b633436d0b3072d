package standalone_test

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dister/dister/internal/testcluster"
	"github.com/dister/dister/standalone"
)

// With two of three servers stopped, writes and linearizable reads answer
// 503 no_quorum (not 504 timeout, though they also ran out of time); local
// reads still work.
func TestNoQuorum(t *testing.T) {
	c := testcluster.New(t, 3)
	srv := serve(t, c.Node(1), standalone.Options{RequestTimeout: time.Second})
	rev := revision(t, call(t, srv, "PUT", "/v1/kv/k", "v"))
	// Generous: the group is created before the fault, on a loaded machine.
	expect(t, call(t, srv, "PUT", "/v1/groups/g?timeout=30s", nil), 201, "")
	c.Stop(2)
	c.Stop(3)
	// Once this server knows it has no leader, every call meets that rather
	// than a try of its own timing out (which alone would be 504 timeout).
	// A write sent while it still believed in a leader that is gone would
	// have an unknown outcome (504 timeout): wait until no group has one.
	waitUnready(t, srv)
	waitLeaderless(t, srv)

	reqs := []struct{ method, path, body string }{
		{"PUT", "/v1/kv/k?timeout=1s", "v2"},
		{"PUT", "/v1/kv/k", "v2"}, // Options.RequestTimeout
		{"DELETE", "/v1/kv/k?timeout=1s", ""},
		{"GET", "/v1/kv/k?consistency=linearizable&timeout=1s", ""},
		{"GET", "/v1/kv?consistency=linearizable&timeout=1s", ""},
		{"POST", "/v1/txn?timeout=1s", `{"then":[{"op":"delete","key":"k"}]}`},
		{"PUT", "/v1/kv/k?group=g&timeout=1s", "v2"},
		{"PUT", "/v1/groups/h?timeout=1s", ""},
		{"GET", "/v1/groups?timeout=1s", ""},
		{"GET", "/v1/members?timeout=1s", ""},
		{"POST", "/v1/leases?timeout=1s", `{"ttl":"10s"}`},
		{"GET", "/v1/leases/1?timeout=1s", ""},
		{"PUT", "/v1/leases/1/keepalive?timeout=1s", ""},
		{"DELETE", "/v1/leases/1?timeout=1s", ""},
		{"PUT", "/v1/kv/k?ttl=10s&timeout=1s", "v2"},
	}
	// In parallel: each waits out its timeout.
	res := make([]resp, len(reqs))
	errs := make([]error, len(reqs))
	var wg sync.WaitGroup
	for i, rq := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var body any
			if rq.body != "" {
				body = rq.body
			}
			res[i], errs[i] = do(srv, rq.method, rq.path, body)
		}()
	}
	wg.Wait()
	for i, r := range res {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		expect(t, r, 503, "no_quorum")
		if got := revision(t, r); got < rev && reqs[i].path != "/v1/kv/k?group=g&timeout=1s" {
			t.Fatalf("%s %s: X-Dister-Revision %d, below %d", reqs[i].method, reqs[i].path, got, rev)
		}
	}
	for _, path := range []string{"/v1/kv/k?consistency=stale", "/v1/kv/k", "/v1/status", "/healthz"} {
		expect(t, call(t, srv, "GET", path, nil), 200, "")
	}
	r := call(t, srv, "GET", "/kv?k=k", nil)
	jsonEqual(t, r.body, `{"result":1,"message":"ok","data":"v"}`)
	r = call(t, srv, "POST", "/kv", `{"k":"x"}`)
	if m := r.json(t); r.status != 200 || m["result"] != float64(0) || m["data"] != nil {
		t.Fatalf("legacy write without quorum: %d %s", r.status, r.body)
	}
}

// A closed Node answers 503 closed, without a revision to report.
func TestClosed(t *testing.T) {
	c, srv := one(t, standalone.Options{})
	expect(t, call(t, srv, "PUT", "/v1/kv/k", "v"), 200, "")
	closeServed(c)
	for _, rq := range []struct{ method, path string }{
		{"GET", "/v1/kv/k"},
		{"GET", "/v1/kv/k?consistency=stale"},
		{"PUT", "/v1/kv/k"},
		{"DELETE", "/v1/kv/k"},
		{"GET", "/v1/kv"},
		{"POST", "/v1/txn"},
		{"GET", "/v1/groups"},
		{"GET", "/v1/members"},
		{"GET", "/readyz"},
	} {
		var body any
		if rq.method == "POST" {
			body = `{}`
		}
		r := call(t, srv, rq.method, rq.path, body)
		expect(t, r, 503, "closed")
		if v := r.header.Get("X-Dister-Revision"); v != "" {
			t.Fatalf("%s %s: X-Dister-Revision %q from a closed Node", rq.method, rq.path, v)
		}
	}
	expect(t, call(t, srv, "GET", "/healthz", nil), 200, "")
	r := call(t, srv, "GET", "/kv?k=k", nil)
	if m := r.json(t); r.status != 200 || m["result"] != float64(0) {
		t.Fatalf("legacy on a closed Node: %d %s", r.status, r.body)
	}
}

// Malformed input of every kind is answered, never a 500.
func TestNoServerErrorsOnBadInput(t *testing.T) {
	_, srv := one(t, standalone.Options{MaxBodyBytes: 1024})
	bodies := []string{"", "{", "[", "null", `{"a":`, "\x00\xff", `{"then":[null]}`, `{"if":[null]}`,
		`["a",null]`, `{"k":null}`, `{"k":1}`, `[1,2]`, `"str"`, `{"raft_addr":1}`}
	paths := []string{"/v1/kv/k", "/v1/kv/", "/v1/kv", "/v1/txn", "/v1/groups/x", "/v1/groups/",
		"/v1/members/0", "/v1/members/", "/v1/members/18446744073709551616", "/kv", "/node",
		"/v1/kv/%2e%2e", "/v1//kv/k", "/v1/kv/k?group=", "/v1/kv/k?timeout=0s", "/kv?k=", "/kv?k=%00",
		"/v1/leases", "/v1/leases/1", "/v1/leases/1/keepalive", "/v1/leases/x/keepalive", "/v1/kv/k?ttl=1s",
		"/v1/services", "/v1/services/web", "/v1/services/web?passing=true", "/v1/services/%00", "/v1/services/web/instances/a",
		"/v1/services/web/instances/a/heartbeat", "/v1/services/web/instances/", "/v1/services//instances/a",
		"/v1/balance/web", "/v1/balance/web?strategy=hash&key=k", "/v1/balance/%00", "/v1/settings",
		"/service", "/service?name=web", "/service?name=%00", "/balance", "/balance?name=web", "/balance?name=%00"}
	for _, p := range paths {
		for _, m := range []string{"GET", "PUT", "POST", "DELETE", "PATCH", "HEAD"} {
			for _, b := range bodies {
				r := call(t, srv, m, p, b)
				// A service without instances has none to pick: that 503
				// is the answer, not a failure.
				noInstance := r.status == 503 && strings.HasPrefix(p, "/v1/balance/web") && r.errCode(t) == "no_instance"
				if r.status >= 500 && !noInstance {
					t.Fatalf("%s %s %q: %d %s", m, p, b, r.status, r.body)
				}
			}
		}
	}
}

// waitUnready polls /readyz until it answers 503.
// waitLeaderless waits until the server's status shows no leader for any
// of its groups.
func waitLeaderless(t *testing.T, srv *httptest.Server) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := call(t, srv, "GET", "/v1/status", nil)
		var st struct {
			Groups []struct {
				Name   string `json:"name"`
				Leader uint64 `json:"leader"`
			} `json:"groups"`
		}
		if err := json.Unmarshal(r.body, &st); err != nil {
			t.Fatalf("status: %v %s", err, r.body)
		}
		led := ""
		for _, g := range st.Groups {
			if g.Leader != 0 {
				led = g.Name
			}
		}
		if led == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s still has a leader without a quorum: %s", led, r.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitUnready(t *testing.T, srv *httptest.Server) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := call(t, srv, "GET", "/readyz?timeout=100ms", nil)
		if r.status == 503 {
			expect(t, r, 503, "no_quorum")
			revision(t, r) // the local revision is still known
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still ready without a quorum: %d %s", r.status, r.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
