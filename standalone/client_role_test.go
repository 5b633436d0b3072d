package standalone_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
	"github.com/dister/dister/standalone"
)

// The REST API of a client-role node over 3 servers: the same calls, the
// status shows the client role, Gets tell X-Dister-Cache, and the legacy
// node list shows the client first.
func TestClientRoleREST(t *testing.T) {
	c := testcluster.New(t, 3)
	var seeds []string
	for _, id := range c.IDs() {
		seeds = append(seeds, c.Options(id).PeerAddr)
	}
	n, err := dister.Open(context.Background(), dister.Options{Role: dister.RoleClient, Servers: seeds, Logger: testcluster.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	srv := serve(t, n, standalone.Options{})

	expect(t, call(t, srv, "PUT", "/v1/kv/app/name", "dister"), http.StatusOK, "")
	r := call(t, srv, "GET", "/v1/kv/app/name", nil)
	expect(t, r, http.StatusOK, "")
	if v := r.json(t)["value"]; v != "dister" {
		t.Fatalf("value %v", v)
	}
	if h := r.header.Get("X-Dister-Cache"); h != "hit" && h != "miss" {
		t.Fatalf("X-Dister-Cache %q", h)
	}
	// Read again until the cache answers (its watch delivers the put).
	deadline := time.Now().Add(20 * time.Second)
	for call(t, srv, "GET", "/v1/kv/app/name", nil).header.Get("X-Dister-Cache") != "hit" {
		if time.Now().After(deadline) {
			t.Fatal("no read answered from the cache")
		}
		time.Sleep(10 * time.Millisecond)
	}
	r = call(t, srv, "GET", "/v1/kv/missing?consistency=linearizable", nil)
	expect(t, r, http.StatusNotFound, "not_found")
	if h := r.header.Get("X-Dister-Cache"); h == "" {
		t.Fatal("no X-Dister-Cache on a missing key")
	}

	st := call(t, srv, "GET", "/v1/status", nil)
	expect(t, st, http.StatusOK, "")
	if m := st.json(t); m["role"] != "client" || m["node_id"] != float64(0) {
		t.Fatalf("status %s", st.body)
	}
	ms := call(t, srv, "GET", "/v1/members", nil)
	expect(t, ms, http.StatusOK, "")

	legacy := call(t, srv, "GET", "/node", nil)
	expect(t, legacy, http.StatusOK, "")
	var body struct {
		Data []struct {
			Name string `json:"name"`
			ID   uint64 `json:"id"`
			Role int    `json:"role"`
		} `json:"data"`
	}
	if err := json.Unmarshal(legacy.body, &body); err != nil {
		t.Fatalf("legacy body %s: %v", legacy.body, err)
	}
	if len(body.Data) != 4 || body.Data[0].Role != 1 || body.Data[0].ID != 0 {
		t.Fatalf("legacy nodes %s: want the client first, then the 3 servers", legacy.body)
	}
}
