package standalone_test

import (
	"testing"
	"time"

	"github.com/dister/dister/standalone"
)

func TestGroups(t *testing.T) {
	_, srv := one(t, standalone.Options{})
	r := call(t, srv, "GET", "/v1/groups", nil)
	expect(t, r, 200, "")
	jsonEqual(t, r.body, `{"groups":["default"]}`)

	r = call(t, srv, "PUT", "/v1/groups/team-a", nil)
	expect(t, r, 201, "")
	jsonEqual(t, r.body, `{"name":"team-a"}`)
	expect(t, call(t, srv, "PUT", "/v1/groups/team-a", nil), 409, "conflict")
	expect(t, call(t, srv, "PUT", "/v1/groups/default", nil), 409, "conflict")
	expect(t, call(t, srv, "PUT", "/v1/groups/bad%20name", nil), 400, "invalid")
	expect(t, call(t, srv, "PUT", "/v1/groups/-x", nil), 400, "invalid")
	jsonEqual(t, call(t, srv, "GET", "/v1/groups", nil).body, `{"groups":["default","team-a"]}`)

	// The groups are isolated: same key, own values and revisions.
	ra := revision(t, call(t, srv, "PUT", "/v1/kv/k?group=team-a", "a"))
	rd := revision(t, call(t, srv, "PUT", "/v1/kv/k", "d"))
	r = call(t, srv, "GET", "/v1/kv/k?group=team-a", nil)
	if m := r.json(t); m["value"] != "a" || int64(m["mod_revision"].(float64)) != ra {
		t.Fatalf("team-a: %s", r.body)
	}
	if m := call(t, srv, "GET", "/v1/kv/k", nil).json(t); m["value"] != "d" || int64(m["mod_revision"].(float64)) != rd {
		t.Fatalf("default: %v", m)
	}
	// The revision header follows ?group= on routes without their own.
	r = call(t, srv, "GET", "/v1/status?group=team-a", nil)
	if got := revision(t, r); got < ra {
		t.Fatalf("status revision %d for team-a, which wrote %d", got, ra)
	}

	// A server reports its replica's revision; a client-role node the
	// revision its cache's watch has reached, which follows the write a
	// moment later: wait for it.
	var m map[string]any
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		r = call(t, srv, "GET", "/v1/groups/team-a", nil)
		expect(t, r, 200, "")
		m = r.json(t)
		if int64(m["revision"].(float64)) >= ra || time.Now().After(deadline) {
			break
		}
	}
	if m["name"] != "team-a" || m["leader"] != float64(1) || int64(m["revision"].(float64)) < ra {
		t.Fatalf("group: %s", r.body)
	}
	expect(t, call(t, srv, "GET", "/v1/groups/nope", nil), 404, "group_not_found")

	expect(t, call(t, srv, "DELETE", "/v1/groups/default", nil), 400, "invalid")
	r = call(t, srv, "DELETE", "/v1/groups/team-a", nil)
	expect(t, r, 200, "")
	jsonEqual(t, r.body, `{"name":"team-a"}`)
	expect(t, call(t, srv, "DELETE", "/v1/groups/team-a", nil), 404, "group_not_found")
	expect(t, call(t, srv, "GET", "/v1/kv/k?group=team-a", nil), 404, "group_not_found")
	expect(t, call(t, srv, "GET", "/v1/groups?x=1", nil), 400, "invalid")
	expect(t, call(t, srv, "POST", "/v1/groups/x", nil), 405, "invalid")
	jsonEqual(t, call(t, srv, "GET", "/v1/groups", nil).body, `{"groups":["default"]}`)
}
