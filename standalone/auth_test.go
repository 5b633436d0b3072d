package standalone_test

import (
	"testing"

	"github.com/dister/dister/standalone"
)

func TestToken(t *testing.T) {
	_, srv := one(t, standalone.Options{Token: "s3cret"})
	routes := []struct{ method, path string }{
		{"GET", "/metrics"}, {"GET", "/v1/status"},
		{"GET", "/v1/kv/k"}, {"PUT", "/v1/kv/k"}, {"DELETE", "/v1/kv/k"}, {"GET", "/v1/kv"},
		{"POST", "/v1/txn"}, {"GET", "/v1/groups"}, {"PUT", "/v1/groups/g"}, {"DELETE", "/v1/groups/g"},
		{"GET", "/v1/members"}, {"PUT", "/v1/members/0"}, {"DELETE", "/v1/members/9"},
		{"GET", "/kv"}, {"POST", "/kv"}, {"PUT", "/kv"}, {"DELETE", "/kv"},
		{"GET", "/node"}, {"POST", "/node"}, {"DELETE", "/node"},
		{"GET", "/v1/services"}, {"GET", "/v1/services/web"}, {"PUT", "/v1/services/web/instances/a"},
		{"DELETE", "/v1/services/web/instances/a"}, {"PUT", "/v1/services/web/instances/a/heartbeat"},
		{"GET", "/v1/watch/services/web"}, {"GET", "/v1/balance/web"}, {"GET", "/v1/settings"}, {"PUT", "/v1/settings"},
		{"GET", "/service"}, {"POST", "/service"}, {"PUT", "/service"}, {"DELETE", "/service"}, {"GET", "/balance?name=web"},
		{"GET", "/v1/snapshot"}, {"GET", "/no/such/route"}, {"PATCH", "/v1/kv/k"},
	}
	for _, rt := range routes {
		for _, auth := range []string{"", "Bearer", "Bearer ", "Bearer wrong", "Bearer s3cret2", "Bearer s3cre",
			"Basic czNjcmV0", "s3cret", "Token s3cret"} {
			var hdr []string
			if auth != "" {
				hdr = []string{"Authorization", auth}
			}
			r := call(t, srv, rt.method, rt.path, "{}", hdr...)
			expect(t, r, 401, "unauthorized")
			if r.header.Get("WWW-Authenticate") == "" {
				t.Fatal("no WWW-Authenticate")
			}
		}
	}
	// With a token, a wrong method and an unknown route read as such.
	expect(t, call(t, srv, "PATCH", "/v1/kv/k", "v", "Authorization", "Bearer s3cret"), 405, "invalid")
	expect(t, call(t, srv, "GET", "/no/such/route", nil, "Authorization", "Bearer s3cret"), 404, "not_found")
	// The probes need no token: an orchestrator has none.
	expect(t, call(t, srv, "GET", "/healthz", nil), 200, "")
	expect(t, call(t, srv, "GET", "/readyz", nil), 200, "")
	// Nothing was written by the refused requests.
	r := call(t, srv, "GET", "/v1/kv", nil, "Authorization", "Bearer s3cret")
	expect(t, r, 200, "")
	if n := len(r.json(t)["entries"].([]any)); n != 0 {
		t.Fatalf("%d keys written without a token", n)
	}
	r = call(t, srv, "GET", "/v1/settings", nil, "Authorization", "Bearer s3cret")
	jsonEqual(t, r.body, `{"script_checks":false}`)
	for _, auth := range []string{"Bearer s3cret", "bearer s3cret", "BEARER  s3cret"} {
		expect(t, call(t, srv, "PUT", "/v1/kv/k", "v", "Authorization", auth), 200, "")
		expect(t, call(t, srv, "GET", "/healthz", nil, "Authorization", auth), 200, "")
		r := call(t, srv, "GET", "/kv?k=k", nil, "Authorization", auth)
		jsonEqual(t, r.body, `{"result":1,"message":"ok","data":"v"}`)
	}
}

// Without Options.Token no header is needed, and one is ignored.
func TestNoToken(t *testing.T) {
	_, srv := one(t, standalone.Options{})
	expect(t, call(t, srv, "GET", "/healthz", nil), 200, "")
	expect(t, call(t, srv, "GET", "/healthz", nil, "Authorization", "Bearer anything"), 200, "")
}
