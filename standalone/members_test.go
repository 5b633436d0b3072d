package standalone_test

import (
	"fmt"
	"testing"

	"github.com/dister/dister/internal/testcluster"
	"github.com/dister/dister/standalone"
)

func TestMembers(t *testing.T) {
	c, srv := one(t, standalone.Options{})
	self := c.Options(1)
	waitMembers(t, srv, 1)
	r := call(t, srv, "GET", "/v1/members", nil)
	expect(t, r, 200, "")
	one := fmt.Sprintf(`{"id":1,"raft_addr":%q,"peer_addr":%q,"leader":true,"alive":true,"voter":true}`, self.RaftAddr, self.PeerAddr)
	jsonEqual(t, r.body, `{"members":[`+one+`]}`)
	r = call(t, srv, "GET", "/v1/members/1", nil)
	expect(t, r, 200, "")
	jsonEqual(t, r.body, one)
	expect(t, call(t, srv, "GET", "/v1/members/9", nil), 404, "not_found")
	expect(t, call(t, srv, "GET", "/v1/members/x", nil), 400, "invalid")

	// Adding a server that is never started: it stays a non-voter and
	// dead, and can be removed again.
	raft, peer := testcluster.FreeAddr(t), testcluster.FreeAddr(t)
	body := fmt.Sprintf(`{"raft_addr":%q,"peer_addr":%q}`, raft, peer)
	r = call(t, srv, "PUT", "/v1/members/0", body)
	expect(t, r, 200, "")
	jsonEqual(t, r.body, `{"id":2}`)
	jsonEqual(t, call(t, srv, "PUT", "/v1/members/0", body).body, `{"id":2}`) // the same address again
	expect(t, call(t, srv, "PUT", "/v1/members/5", body), 409, "conflict")    // taken by server 2
	r = call(t, srv, "GET", "/v1/members/2", nil)
	jsonEqual(t, r.body, fmt.Sprintf(`{"id":2,"raft_addr":%q,"peer_addr":%q,"leader":false,"alive":false,"voter":false}`, raft, peer))

	for _, bad := range []string{``, `{}`, `{"raft_addr":"nohost","peer_addr":"127.0.0.1:1"}`,
		`{"raft_addr":"127.0.0.1:1","peer_addr":"127.0.0.1:2","id":3}`, `[]`} {
		expect(t, call(t, srv, "PUT", "/v1/members/0", bad), 400, "invalid")
	}
	expect(t, call(t, srv, "PUT", "/v1/members/-1", body), 400, "invalid")

	r = call(t, srv, "DELETE", "/v1/members/2", nil)
	expect(t, r, 200, "")
	jsonEqual(t, r.body, `{"id":2}`)
	expect(t, call(t, srv, "DELETE", "/v1/members/2", nil), 404, "not_found")
	expect(t, call(t, srv, "PUT", "/v1/members/2", fmt.Sprintf(`{"raft_addr":%q,"peer_addr":%q}`,
		testcluster.FreeAddr(t), testcluster.FreeAddr(t))), 409, "conflict") // ids are never reused
	expect(t, call(t, srv, "DELETE", "/v1/members/1", nil), 400, "invalid") // the last voter
	expect(t, call(t, srv, "DELETE", "/v1/members/x", nil), 400, "invalid")
	jsonEqual(t, call(t, srv, "GET", "/v1/members", nil).body, `{"members":[`+one+`]}`)
}
