package standalone_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dister/dister/standalone"
)

// leaseID is the "id" of a lease answer.
func leaseID(t testing.TB, r resp) int64 {
	t.Helper()
	id, ok := r.json(t)["id"].(float64)
	if !ok || id <= 0 {
		t.Fatalf("no lease id in %s", r.body)
	}
	return int64(id)
}

func TestLeases(t *testing.T) {
	_, srv := one(t, standalone.Options{})
	r := call(t, srv, "POST", "/v1/leases", `{"ttl":"10s"}`)
	expect(t, r, 201, "")
	id := leaseID(t, r)
	jsonEqual(t, r.body, fmt.Sprintf(`{"id":%d,"ttl":"10s"}`, id))
	revision(t, r)
	lp := fmt.Sprintf("/v1/leases/%d", id)
	jsonEqual(t, call(t, srv, "GET", lp, nil).body, fmt.Sprintf(`{"id":%d,"ttl":"10s","keys":[]}`, id))

	r = call(t, srv, "PUT", fmt.Sprintf("/v1/kv/l/a?lease=%d", id), "1")
	expect(t, r, 200, "")
	jsonEqual(t, r.body, fmt.Sprintf(`{"revision":%d,"lease":%d}`, revision(t, r), id))
	expect(t, call(t, srv, "PUT", fmt.Sprintf("/v1/kv/l/b?lease=%d&cas=0", id), "2"), 200, "")
	if got := call(t, srv, "GET", "/v1/kv/l/a", nil).json(t)["lease"]; got != float64(id) {
		t.Fatalf("entry lease %v, want %d", got, id)
	}
	jsonEqual(t, call(t, srv, "GET", lp, nil).body, fmt.Sprintf(`{"id":%d,"ttl":"10s","keys":["l/a","l/b"]}`, id))

	r = call(t, srv, "PUT", lp+"/keepalive", nil)
	expect(t, r, 200, "")
	jsonEqual(t, r.body, fmt.Sprintf(`{"id":%d,"ttl":"10s"}`, id))

	// Revoke deletes the keys; the lease is gone for every route.
	r = call(t, srv, "DELETE", lp, nil)
	expect(t, r, 200, "")
	jsonEqual(t, r.body, fmt.Sprintf(`{"id":%d}`, id))
	expect(t, call(t, srv, "GET", "/v1/kv/l/a", nil), 404, "not_found")
	expect(t, call(t, srv, "GET", "/v1/kv/l/b", nil), 404, "not_found")
	for _, m := range []string{"GET", "DELETE"} {
		expect(t, call(t, srv, m, lp, nil), 404, "lease_not_found")
	}
	expect(t, call(t, srv, "PUT", lp+"/keepalive", nil), 404, "lease_not_found")
	expect(t, call(t, srv, "PUT", fmt.Sprintf("/v1/kv/l/a?lease=%d", id), "1"), 404, "lease_not_found")

	// ?ttl= grants a lease for the key.
	r = call(t, srv, "PUT", "/v1/kv/l/c?ttl=1m30s", "3")
	expect(t, r, 200, "")
	m := r.json(t)
	id2 := int64(m["lease"].(float64))
	jsonEqual(t, r.body, fmt.Sprintf(`{"revision":%d,"lease":%d}`, revision(t, r), id2))
	jsonEqual(t, call(t, srv, "GET", fmt.Sprintf("/v1/leases/%d", id2), nil).body,
		fmt.Sprintf(`{"id":%d,"ttl":"1m30s","keys":["l/c"]}`, id2))
	// A ?ttl= put that fails revokes the lease it granted:
	// TestFailedTTLPutRevokesItsLease (lease ids are random).
	expect(t, call(t, srv, "PUT", "/v1/kv/l/c?ttl=10s&cas=0", "x"), 409, "conflict")
}

// TestLeaseExpiry: a lease nobody keeps alive expires and takes its key
// with it, with a delete event.
func TestLeaseExpiry(t *testing.T) {
	_, srv := one(t, standalone.Options{})
	st := openSSE(t, srv, "/v1/watch?prefix=e/")
	r := call(t, srv, "PUT", "/v1/kv/e/k?ttl=1s", "v")
	expect(t, r, 200, "")
	rev, id := revision(t, r), int64(r.json(t)["lease"].(float64))
	if got := call(t, srv, "GET", "/v1/kv/e/k", nil).json(t)["lease"]; got != float64(id) {
		t.Fatalf("lease %d in the answer, %v on the entry", id, got)
	}
	wantEvent{"put", "e/k", "v", rev, true}.check(t, st.next(t))
	deadline := time.Now().Add(10 * time.Second)
	for {
		r = call(t, srv, "GET", "/v1/kv/e/k", nil)
		if r.status == 404 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("key of a 1s lease still there after 10s: %d %s", r.status, r.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	expect(t, call(t, srv, "GET", fmt.Sprintf("/v1/leases/%d", id), nil), 404, "lease_not_found")
	ev := st.next(t)
	if m := ev.json(t); ev.event != "delete" || m["key"] != "e/k" || ev.id == "" {
		t.Fatalf("expiry event %+v", ev)
	}
}

// TestLeaseErrors: every refusal of the lease routes and parameters.
func TestLeaseErrors(t *testing.T) {
	c, srv := one(t, standalone.Options{MaxBodyBytes: 64})
	for _, rq := range []struct{ method, path, body string }{
		{"POST", "/v1/leases", `{"ttl":"500ms"}`}, // below MinLeaseTTL
		{"POST", "/v1/leases", `{"ttl":"9000h"}`}, // above MaxLeaseTTL
		{"POST", "/v1/leases", `{"ttl":"10"}`},
		{"POST", "/v1/leases", `{"ttl":10}`},
		{"POST", "/v1/leases", `{}`},
		{"POST", "/v1/leases", ``},
		{"POST", "/v1/leases", `{"ttl":"10s","auto_renew":true}`},
		{"POST", "/v1/leases", `{"ttl":"10s"} {}`},
		{"POST", "/v1/leases?ttl=10s", `{"ttl":"10s"}`},
		{"GET", "/v1/leases/abc", ""},
		{"GET", "/v1/leases/0", ""},
		{"PUT", "/v1/leases/-1/keepalive", ""},
		{"DELETE", "/v1/leases/1x", ""},
		{"GET", "/v1/leases/99999999999999999999", ""},
		{"PUT", "/v1/kv/k?lease=abc", "v"},
		{"PUT", "/v1/kv/k?lease=0", "v"},
		{"PUT", "/v1/kv/k?lease=1&ttl=10s", "v"},
		{"PUT", "/v1/kv/k?ttl=0s", "v"},
		{"PUT", "/v1/kv/k?ttl=999ms", "v"},
		{"PUT", "/v1/kv/k?ttl=10", "v"},
		{"PUT", "/v1/kv/k?ttl=10s&ttl=20s", "v"},
		{"GET", "/v1/kv/k?lease=1", ""},
	} {
		r := call(t, srv, rq.method, rq.path, rq.body)
		if r.status != 400 || r.errCode(t) != "invalid" {
			t.Fatalf("%s %s %q: %d %s, want 400 invalid", rq.method, rq.path, rq.body, r.status, r.body)
		}
	}
	expect(t, call(t, srv, "POST", "/v1/leases", `{"ttl":"`+strings.Repeat("1", 80)+`s"}`), 413, "too_large")
	for _, rq := range []struct{ method, path string }{
		{"POST", "/v1/leases?group=nope"},
		{"GET", "/v1/leases/1?group=nope"},
		{"PUT", "/v1/leases/1/keepalive?group=nope"},
		{"DELETE", "/v1/leases/1?group=nope"},
		{"PUT", "/v1/kv/k?ttl=10s&group=nope"},
	} {
		expect(t, call(t, srv, rq.method, rq.path, `{"ttl":"10s"}`), 404, "group_not_found")
	}
	for _, rq := range []struct{ method, path string }{
		{"GET", "/v1/leases/424242"},
		{"PUT", "/v1/leases/424242/keepalive"},
		{"DELETE", "/v1/leases/424242"},
		{"PUT", "/v1/kv/k?lease=424242"},
	} {
		expect(t, call(t, srv, rq.method, rq.path, nil), 404, "lease_not_found")
	}
	closeServed(c)
	for _, rq := range []struct{ method, path string }{
		{"POST", "/v1/leases"},
		{"GET", "/v1/leases/1"},
		{"PUT", "/v1/leases/1/keepalive"},
		{"DELETE", "/v1/leases/1"},
		{"PUT", "/v1/kv/k?ttl=10s"},
		{"GET", "/v1/watch"},
	} {
		expect(t, call(t, srv, rq.method, rq.path, `{"ttl":"10s"}`), 503, "closed")
	}
}
