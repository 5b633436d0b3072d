package standalone_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
	"github.com/dister/dister/standalone"
)

// legacy checks a v1.5 answer byte for byte: HTTP 200, application/json.
func legacy(t testing.TB, r resp, want string) {
	t.Helper()
	if r.status != 200 || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, Content-Type %q; body %s", r.status, r.header.Get("Content-Type"), r.body)
	}
	if string(r.body) != want {
		t.Fatalf("body\n %s\nwant\n %s", r.body, want)
	}
}

const legacyOK = `{"result":1,"message":"ok","data":null}`

func legacyErr(msg string) string {
	return fmt.Sprintf(`{"result":0,"message":%q,"data":null}`, msg)
}

func TestLegacyKV(t *testing.T) {
	_, srv := one(t, standalone.Options{})
	legacy(t, call(t, srv, "GET", "/kv", nil), `{"result":1,"message":"ok","data":{}}`)
	legacy(t, call(t, srv, "GET", "/kv?k=name", nil), legacyErr("data not found"))

	legacy(t, call(t, srv, "POST", "/kv", `{"name":"john","age":"18","empty":""}`), legacyOK)
	legacy(t, call(t, srv, "GET", "/kv?k=name", nil), `{"result":1,"message":"ok","data":"john"}`)
	legacy(t, call(t, srv, "GET", "/kv?k=empty", nil), `{"result":1,"message":"ok","data":""}`)
	legacy(t, call(t, srv, "GET", "/kv", nil), `{"result":1,"message":"ok","data":{"age":"18","empty":"","name":"john"}}`)
	legacy(t, call(t, srv, "GET", "/kv?k=", nil), `{"result":1,"message":"ok","data":{"age":"18","empty":"","name":"john"}}`)

	// All pairs of one POST are one write: one revision.
	var revs []any
	for _, k := range []string{"name", "age", "empty"} {
		revs = append(revs, call(t, srv, "GET", "/v1/kv/"+k, nil).json(t)["mod_revision"])
	}
	if revs[0] != revs[1] || revs[1] != revs[2] {
		t.Fatalf("mod revisions %v", revs)
	}

	// PUT is POST; values are replaced.
	legacy(t, call(t, srv, "PUT", "/kv", `{"name":"jane"}`), legacyOK)
	legacy(t, call(t, srv, "GET", "/kv?k=name", nil), `{"result":1,"message":"ok","data":"jane"}`)

	legacy(t, call(t, srv, "DELETE", "/kv", `["name","age","nothing"]`), legacyOK)
	legacy(t, call(t, srv, "GET", "/kv", nil), `{"result":1,"message":"ok","data":{"empty":""}}`)
	legacy(t, call(t, srv, "DELETE", "/kv", `[]`), legacyOK)
	legacy(t, call(t, srv, "POST", "/kv", `{}`), legacyOK)

	// Characters JSON must escape travel both ways.
	legacy(t, call(t, srv, "POST", "/kv", `{"q\"k":"a\"b\\c\n€"}`), legacyOK)
	legacy(t, call(t, srv, "GET", "/kv?k=q%22k", nil), `{"result":1,"message":"ok","data":"a\"b\\c\n€"}`)
}

func TestLegacyKVInvalid(t *testing.T) {
	_, srv := one(t, standalone.Options{MaxBodyBytes: 1 << 20})
	const wantObj = `want a JSON object of string values, {"key":"value",...}`
	const wantArr = `want a JSON array of keys, ["key",...]`
	for _, c := range []struct{ method, body, msg string }{
		{"POST", `{"a":1}`, `value of key "a" is not a string`},
		{"POST", `{"a":"x","b":null}`, `value of key "b" is not a string`},
		{"POST", `{"a":{"b":"c"}}`, `value of key "a" is not a string`},
		{"POST", `["a","b"]`, wantObj},
		{"POST", `"a"`, wantObj},
		{"POST", `null`, wantObj},
		{"POST", ``, `malformed JSON: empty or cut short`},
		{"POST", `{"a":"b"`, `malformed JSON: empty or cut short`},
		{"POST", `{"a":"b"} {}`, `malformed JSON: data after the first value`},
		{"POST", `k1=v1`, `malformed JSON: invalid character 'k' looking for beginning of value`},
		{"PUT", `{"a":true}`, `value of key "a" is not a string`},
		{"DELETE", `{"a":"b"}`, wantArr},
		{"DELETE", `["a",1]`, wantArr},
		{"DELETE", `null`, wantArr},
		{"DELETE", `[`, `malformed JSON: empty or cut short`},
	} {
		legacy(t, call(t, srv, c.method, "/kv", c.body), legacyErr("invalid data type: "+c.msg))
	}
	// Keys the SDK refuses: its own words after v1.5's prefix. A refused
	// POST wrote nothing, not even its valid pairs.
	for _, c := range []struct{ method, body string }{
		{"POST", `{"":"empty key"}`},
		{"POST", `{"good":"1","bad\u0000key":"2"}`},
		{"POST", `{"good":"1","` + strings.Repeat("k", dister.MaxKeySize+1) + `":"2"}`},
		{"DELETE", `["ok",""]`},
	} {
		r := call(t, srv, c.method, "/kv", c.body)
		if r.status != 200 || !strings.HasPrefix(string(r.body), `{"result":0,"message":"invalid data type: `) ||
			!strings.HasSuffix(string(r.body), `","data":null}`) {
			t.Fatalf("%.100s: %s", c.body, r.body)
		}
	}
	legacy(t, call(t, srv, "GET", "/kv", nil), `{"result":1,"message":"ok","data":{}}`)

	// At most MaxTxnOps keys in one write.
	var pairs, keys []string
	for i := range dister.MaxTxnOps + 1 {
		pairs = append(pairs, fmt.Sprintf(`"k%03d":"v"`, i))
		keys = append(keys, fmt.Sprintf(`"k%03d"`, i))
	}
	tooMany := fmt.Sprintf("invalid data type: %d keys, more than %d in one write", dister.MaxTxnOps+1, dister.MaxTxnOps)
	legacy(t, call(t, srv, "POST", "/kv", "{"+strings.Join(pairs, ",")+"}"), legacyErr(tooMany))
	legacy(t, call(t, srv, "DELETE", "/kv", "["+strings.Join(keys, ",")+"]"), legacyErr(tooMany))
	legacy(t, call(t, srv, "POST", "/kv", "{"+strings.Join(pairs[1:], ",")+"}"), legacyOK)
	legacy(t, call(t, srv, "DELETE", "/kv", "["+strings.Join(keys[1:], ",")+"]"), legacyOK)

	legacy(t, call(t, srv, "POST", "/kv", `{"k":"`+strings.Repeat("v", 1<<20)+`"}`),
		legacyErr(fmt.Sprintf("invalid data type: request body over %d bytes", 1<<20)))
	legacy(t, call(t, srv, "PATCH", "/kv", nil), legacyErr("method not allowed: PATCH"))
	legacy(t, call(t, srv, "PATCH", "/node", nil), legacyErr("method not allowed: PATCH"))
}

// GET /kv without a key refuses more than 1000 keys, as v1.5 did.
func TestLegacyKVTooMany(t *testing.T) {
	c, srv := one(t, standalone.Options{})
	kv := c.Node(1).KV()
	ctx := context.Background()
	put := func(from, to int) {
		for lo := from; lo < to; lo += dister.MaxTxnOps {
			var txn dister.Txn
			for i := lo; i < min(lo+dister.MaxTxnOps, to); i++ {
				txn.Then = append(txn.Then, dister.Put(fmt.Sprintf("key%04d", i), []byte("v")))
			}
			if _, err := kv.Txn(ctx, txn); err != nil {
				t.Fatal(err)
			}
		}
	}
	put(0, 1000)
	r := call(t, srv, "GET", "/kv", nil)
	if r.status != 200 || !strings.HasPrefix(string(r.body), `{"result":1,"message":"ok","data":{"key0000":"v",`) {
		t.Fatalf("1000 keys: %.200s", r.body)
	}
	put(1000, 1001)
	legacy(t, call(t, srv, "GET", "/kv", nil), legacyErr("too large data size, need a key to search"))
	legacy(t, call(t, srv, "GET", "/kv?k=key1000", nil), `{"result":1,"message":"ok","data":"v"}`)
}

func TestLegacyNode(t *testing.T) {
	c := testcluster.New(t, 3)
	leader := c.Leader()
	// Serve a follower: "this node first" is then not the leader's order.
	var self uint64
	for _, id := range []uint64{3, 2, 1} {
		if id != leader {
			self = id
			break
		}
	}
	srv := serve(t, c.Node(self), standalone.Options{})
	waitMembers(t, srv, 3)
	rev := revision(t, call(t, srv, "PUT", "/v1/kv/k", "v"))
	if r := call(t, srv, "GET", fmt.Sprintf("/v1/kv/k?min_revision=%d", rev), nil); r.status != 200 {
		t.Fatal(r.status)
	}
	node := func(id uint64, logid int64) string {
		raft := 0
		if id == leader {
			raft = 2
		}
		return fmt.Sprintf(`{"name":"dister-%d","group":"default","id":%d,"ip":%q,"status":1,"role":0,"raft":%d,"logid":%d,"serviceid":0,"version":%q}`,
			id, id, c.Options(id).RaftAddr, raft, logid, dister.Version)
	}
	var st int64
	for _, g := range c.Node(self).Status().Groups {
		if g.Name == "default" {
			st = g.Revision
		}
	}
	want := []string{node(self, st)}
	for id := uint64(1); id <= 3; id++ {
		if id != self {
			want = append(want, node(id, 0))
		}
	}
	legacy(t, call(t, srv, "GET", "/node", nil), `{"result":1,"message":"ok","data":[`+strings.Join(want, ",")+`]}`)

	// POST adds a server by its Raft address; the peer port is the next one.
	port := freePort(t) // port+1 need not be free: the server is never started
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	legacy(t, call(t, srv, "POST", "/node", fmt.Sprintf(`[%q]`, addr)), legacyOK)
	legacy(t, call(t, srv, "PUT", "/node", fmt.Sprintf(`[%q]`, addr)), legacyOK) // known: a no-op
	r := call(t, srv, "GET", "/v1/members/4", nil)
	expect(t, r, 200, "")
	jsonEqual(t, r.body, fmt.Sprintf(`{"id":4,"raft_addr":%q,"peer_addr":"127.0.0.1:%d","leader":false,"alive":false,"voter":false}`, addr, port+1))
	r = call(t, srv, "GET", "/node", nil)
	if !strings.Contains(string(r.body), fmt.Sprintf(`{"name":"dister-4","group":"default","id":4,"ip":%q,"status":0,"role":0,"raft":0,"logid":0`, addr)) {
		t.Fatalf("new node: %s", r.body)
	}

	// DELETE by address; a host without a port means port 4166.
	legacy(t, call(t, srv, "DELETE", "/node", `["10.9.8.7"]`), legacyErr("no server with address 10.9.8.7:4166"))
	legacy(t, call(t, srv, "DELETE", "/node", fmt.Sprintf(`[%q,"10.9.8.7:5000"]`, addr)), legacyErr("no server with address 10.9.8.7:5000"))
	expect(t, call(t, srv, "GET", "/v1/members/4", nil), 200, "") // nothing removed
	legacy(t, call(t, srv, "DELETE", "/node", fmt.Sprintf(`[%q]`, addr)), legacyOK)
	expect(t, call(t, srv, "GET", "/v1/members/4", nil), 404, "not_found")
	legacy(t, call(t, srv, "GET", "/node", nil), `{"result":1,"message":"ok","data":[`+strings.Join(want, ",")+`]}`)

	for _, c := range []struct{ body, msg string }{
		{`["a:b"]`, `invalid data type: address "a:b": want a port in 1..65534 (the peer port is the next one)`},
		{`["h:65535"]`, `invalid data type: address "h:65535": want a port in 1..65534 (the peer port is the next one)`},
		{`[""]`, `invalid data type: address "": want host or host:port`},
		{`["a b"]`, `invalid data type: address "a b": want host or host:port`},
		{`["1:2:3:x"]`, `invalid data type: address "1:2:3:x": want host or host:port`},
		{`{"a":"b"}`, `invalid data type: want a JSON array of addresses, ["host:port",...]`},
		{`[1]`, `invalid data type: want a JSON array of addresses, ["host:port",...]`},
	} {
		legacy(t, call(t, srv, "POST", "/node", c.body), legacyErr(c.msg))
		legacy(t, call(t, srv, "DELETE", "/node", c.body), legacyErr(c.msg))
	}
}

// freePort is a loopback port that was free a moment ago, below 65535.
func freePort(t *testing.T) int {
	for range 100 {
		var p int
		if _, err := fmt.Sscanf(testcluster.FreeAddr(t), "127.0.0.1:%d", &p); err == nil && p < 65535 {
			return p
		}
	}
	t.Fatal("no free port")
	return 0
}
