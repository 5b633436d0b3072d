package standalone_test

import (
	"encoding/base64"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/dister/dister"
	"github.com/dister/dister/standalone"
)

// revision is the X-Dister-Revision of r (the test fails without one).
func revision(t testing.TB, r resp) int64 {
	t.Helper()
	v := r.header.Get("X-Dister-Revision")
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		t.Fatalf("X-Dister-Revision %q (status %d, body %s)", v, r.status, r.body)
	}
	return n
}

func TestKVPutGetDelete(t *testing.T) {
	_, srv := one(t, standalone.Options{})

	r := call(t, srv, "PUT", "/v1/kv/app/name", "dister")
	expect(t, r, 200, "")
	rev := revision(t, r)
	jsonEqual(t, r.body, fmt.Sprintf(`{"revision":%d}`, rev))

	r = call(t, srv, "GET", "/v1/kv/app/name", nil)
	expect(t, r, 200, "")
	if got := revision(t, r); got < rev {
		t.Fatalf("read revision %d below the write's %d", got, rev)
	}
	jsonEqual(t, r.body, fmt.Sprintf(`{"key":"app/name","value":"dister","create_revision":%d,"mod_revision":%d,"version":1,"lease":0}`, rev, rev))

	r2 := call(t, srv, "PUT", "/v1/kv/app/name", "")
	rev2 := revision(t, r2)
	r = call(t, srv, "GET", "/v1/kv/app/name?consistency=linearizable", nil)
	jsonEqual(t, r.body, fmt.Sprintf(`{"key":"app/name","value":"","create_revision":%d,"mod_revision":%d,"version":2,"lease":0}`, rev, rev2))

	for _, c := range []string{"stale", "session", "linearizable"} {
		r = call(t, srv, "GET", "/v1/kv/app/name?consistency="+c+"&min_revision="+strconv.FormatInt(rev2, 10), nil)
		expect(t, r, 200, "")
	}

	r = call(t, srv, "DELETE", "/v1/kv/app/name", nil)
	expect(t, r, 200, "")
	drev := revision(t, r)
	jsonEqual(t, r.body, fmt.Sprintf(`{"revision":%d,"deleted":1}`, drev))
	r = call(t, srv, "DELETE", "/v1/kv/app/name", nil)
	expect(t, r, 200, "")
	jsonEqual(t, r.body, fmt.Sprintf(`{"revision":%d,"deleted":0}`, revision(t, r)))

	r = call(t, srv, "GET", "/v1/kv/app/name", nil)
	expect(t, r, 404, "not_found")
	if got := revision(t, r); got < drev {
		t.Fatalf("error revision %d below %d", got, drev)
	}
}

func TestKVRaw(t *testing.T) {
	_, srv := one(t, standalone.Options{})
	value := []byte{0xff, 0x00, 'a', 0xfe, '\n'}
	rev := revision(t, call(t, srv, "PUT", "/v1/kv/bin", value))
	for _, q := range []string{"?raw", "?raw=true", "?raw=1&consistency=stale"} {
		r := call(t, srv, "GET", "/v1/kv/bin"+q, nil)
		expect(t, r, 200, "")
		if string(r.body) != string(value) {
			t.Fatalf("raw %s: %q", q, r.body)
		}
		if ct := r.header.Get("Content-Type"); ct != "application/octet-stream" {
			t.Fatalf("Content-Type %q", ct)
		}
		if got := r.header.Get("X-Dister-Mod-Revision"); got != strconv.FormatInt(rev, 10) {
			t.Fatalf("X-Dister-Mod-Revision %q, want %d", got, rev)
		}
		if revision(t, r) < rev {
			t.Fatal("X-Dister-Revision below the write")
		}
	}
	r := call(t, srv, "GET", "/v1/kv/bin?raw=false", nil)
	jsonEqual(t, r.body, fmt.Sprintf(`{"key":"bin","value_base64":%q,"create_revision":%d,"mod_revision":%d,"version":1,"lease":0}`,
		base64.StdEncoding.EncodeToString(value), rev, rev))
	expect(t, call(t, srv, "GET", "/v1/kv/missing?raw", nil), 404, "not_found")
}

// Values that are not UTF-8 travel as value_base64, in entries, lists and
// transactions, and come back byte for byte.
func TestKVNonUTF8RoundTrip(t *testing.T) {
	_, srv := one(t, standalone.Options{})
	values := map[string][]byte{
		"latin1":  {'c', 'a', 'f', 0xe9},
		"binary":  {0, 1, 2, 0x80, 0xff},
		"utf8":    []byte("héllo ✓"),
		"control": []byte("a\x00b\x01"),
	}
	for k, v := range values {
		expect(t, call(t, srv, "PUT", "/v1/kv/v/"+k, v), 200, "")
	}
	r := call(t, srv, "GET", "/v1/kv?prefix=v/", nil)
	expect(t, r, 200, "")
	page := r.json(t)
	entries := page["entries"].([]any)
	if len(entries) != len(values) {
		t.Fatalf("%d entries", len(entries))
	}
	for _, e := range entries {
		m := e.(map[string]any)
		want := values[strings.TrimPrefix(m["key"].(string), "v/")]
		var got []byte
		if s, ok := m["value"].(string); ok {
			if _, both := m["value_base64"]; both {
				t.Fatalf("value and value_base64: %v", m)
			}
			got = []byte(s)
		} else {
			var err error
			if got, err = base64.StdEncoding.DecodeString(m["value_base64"].(string)); err != nil {
				t.Fatal(err)
			}
			if string(want) == strings.ToValidUTF8(string(want), "") {
				t.Fatalf("valid UTF-8 sent as base64: %v", m)
			}
		}
		if string(got) != string(want) {
			t.Fatalf("%v: got %q want %q", m["key"], got, want)
		}
	}
}

// The key is the rest of the escaped path, percent-decoded, never cleaned.
func TestKVKeyPaths(t *testing.T) {
	_, srv := one(t, standalone.Options{})
	cases := []struct{ path, key string }{
		{"a//b", "a//b"},
		{"/a", "/a"},
		{"a%2Fb", "a/b"},
		{"a%20b", "a b"},
		{"a/", "a/"},
		{"a/./b", "a/./b"},
		{"a/../b", "a/../b"},
		{"%E2%82%AC", "€"},
		{"q%3Fx%26y", "q?x&y"},
		{"plus+sign", "plus+sign"},
		{"pct%25", "pct%"},
	}
	for i, c := range cases {
		r := call(t, srv, "PUT", "/v1/kv/"+c.path, strconv.Itoa(i))
		expect(t, r, 200, "")
	}
	r := call(t, srv, "GET", "/v1/kv", nil)
	expect(t, r, 200, "")
	var keys []string
	for _, e := range r.json(t)["entries"].([]any) {
		keys = append(keys, e.(map[string]any)["key"].(string))
	}
	if len(keys) != len(cases) {
		t.Fatalf("keys %q", keys)
	}
	for i, c := range cases {
		r := call(t, srv, "GET", "/v1/kv/"+c.path, nil)
		expect(t, r, 200, "")
		m := r.json(t)
		if m["key"] != c.key || m["value"] != strconv.Itoa(i) {
			t.Fatalf("GET /v1/kv/%s: %s, want key %q", c.path, r.body, c.key)
		}
		// The same key reached through another spelling of the path.
		r = call(t, srv, "GET", "/v1/kv/"+url.PathEscape(c.key), nil)
		if m := r.json(t); m["key"] != c.key {
			t.Fatalf("GET /v1/kv/%s: %s", url.PathEscape(c.key), r.body)
		}
	}
	// "/v1/kv/" names the empty key, which is not a key.
	expect(t, call(t, srv, "GET", "/v1/kv/", nil), 400, "invalid")
	expect(t, call(t, srv, "PUT", "/v1/kv/", "x"), 400, "invalid")
	expect(t, call(t, srv, "PUT", "/v1/kv/nul%00", "x"), 400, "invalid")
	expect(t, call(t, srv, "PUT", "/v1/kv/bad%FFutf8", "x"), 400, "invalid")
}

func TestKVCAS(t *testing.T) {
	_, srv := one(t, standalone.Options{})
	r := call(t, srv, "PUT", "/v1/kv/lock?cas=0", "me")
	expect(t, r, 200, "")
	rev := revision(t, r)
	r = call(t, srv, "PUT", "/v1/kv/lock?cas=0", "you")
	expect(t, r, 409, "conflict")
	revision(t, r)
	expect(t, call(t, srv, "PUT", fmt.Sprintf("/v1/kv/lock?cas=%d", rev+100), "you"), 409, "conflict")
	r = call(t, srv, "PUT", fmt.Sprintf("/v1/kv/lock?cas=%d", rev), "me2")
	expect(t, r, 200, "")
	rev2 := revision(t, r)
	expect(t, call(t, srv, "DELETE", fmt.Sprintf("/v1/kv/lock?cas=%d", rev), nil), 409, "conflict")
	r = call(t, srv, "DELETE", fmt.Sprintf("/v1/kv/lock?cas=%d", rev2), nil)
	expect(t, r, 200, "")
	jsonEqual(t, r.body, fmt.Sprintf(`{"revision":%d,"deleted":1}`, revision(t, r)))
	expect(t, call(t, srv, "PUT", "/v1/kv/lock?cas=-1", "x"), 400, "invalid")
	expect(t, call(t, srv, "PUT", "/v1/kv/lock?cas=abc", "x"), 400, "invalid")
	expect(t, call(t, srv, "DELETE", "/v1/kv/lock?cas=1&prefix=true", nil), 400, "invalid")
}

func TestKVListAndPrefixDelete(t *testing.T) {
	_, srv := one(t, standalone.Options{})
	for _, k := range []string{"p/a", "p/b", "p/c", "p/d", "p/e", "q/a"} {
		expect(t, call(t, srv, "PUT", "/v1/kv/"+k, k), 200, "")
	}
	r := call(t, srv, "GET", "/v1/kv?prefix=p/&limit=2", nil)
	expect(t, r, 200, "")
	rev := revision(t, r)
	page := r.json(t)
	if page["more"] != true || len(page["entries"].([]any)) != 2 || int64(page["revision"].(float64)) != rev {
		t.Fatalf("page 1: %s", r.body)
	}
	r = call(t, srv, "GET", "/v1/kv?prefix=p/&limit=2&after=p/b", nil)
	page = r.json(t)
	es := page["entries"].([]any)
	if page["more"] != true || len(es) != 2 || es[0].(map[string]any)["key"] != "p/c" {
		t.Fatalf("page 2: %s", r.body)
	}
	r = call(t, srv, "GET", "/v1/kv?prefix=p/&after=p/d&consistency=linearizable", nil)
	page = r.json(t)
	if page["more"] != false || len(page["entries"].([]any)) != 1 {
		t.Fatalf("page 3: %s", r.body)
	}
	r = call(t, srv, "GET", "/v1/kv?prefix=none/", nil)
	jsonEqual(t, r.body, fmt.Sprintf(`{"revision":%d,"entries":[],"more":false}`, revision(t, r)))

	r = call(t, srv, "DELETE", "/v1/kv/p/?prefix=true", nil)
	expect(t, r, 200, "")
	jsonEqual(t, r.body, fmt.Sprintf(`{"revision":%d,"deleted":5}`, revision(t, r)))
	r = call(t, srv, "GET", "/v1/kv", nil)
	if es := r.json(t)["entries"].([]any); len(es) != 1 || es[0].(map[string]any)["key"] != "q/a" {
		t.Fatalf("after the prefix delete: %s", r.body)
	}
}

func TestKVInvalidInput(t *testing.T) {
	_, srv := one(t, standalone.Options{MaxBodyBytes: 4096})
	long := strings.Repeat("k", dister.MaxKeySize+1)
	for _, c := range []struct{ method, path string }{
		{"GET", "/v1/kv/k?consistency=strong"},
		{"GET", "/v1/kv/k?min_revision=-1"},
		{"GET", "/v1/kv/k?min_revision=x"},
		{"GET", "/v1/kv/k?raw=maybe"},
		{"GET", "/v1/kv/k?timeout=soon"},
		{"GET", "/v1/kv/k?timeout=-1s"},
		{"GET", "/v1/kv/k?timeout=1h"},
		{"GET", "/v1/kv/k?lease=5"}, // a write option: never ignored on a read
		{"PUT", "/v1/kv/k?ttl=30s&lease=5"},
		{"PUT", "/v1/kv/k?ttl=30"},
		{"GET", "/v1/kv/k?group=default&group=other"},
		{"GET", "/v1/kv/k?a;b"},
		{"GET", "/v1/kv?limit=0"},
		{"GET", "/v1/kv?limit=10001"},
		{"GET", "/v1/kv?limit=two"},
		{"GET", "/v1/kv?consistency=eventual"},
		{"DELETE", "/v1/kv/k?prefix=perhaps"},
		{"DELETE", "/v1/kv/k?recursive=true"},
	} {
		expect(t, call(t, srv, c.method, c.path, nil), 400, "invalid")
	}
	// Too large: the body over MaxBodyBytes, a key over MaxKeySize.
	expect(t, call(t, srv, "PUT", "/v1/kv/k", strings.Repeat("v", 4097)), 413, "too_large")
	expect(t, call(t, srv, "PUT", "/v1/kv/"+long, "v"), 413, "too_large")
	expect(t, call(t, srv, "GET", "/v1/kv/"+long, nil), 413, "too_large")
	expect(t, call(t, srv, "GET", "/v1/kv?prefix="+long, nil), 413, "too_large")
}

// A value over dister.MaxValueSize is refused by the SDK with the default
// body limit, which leaves room for it.
func TestKVValueTooLarge(t *testing.T) {
	_, srv := one(t, standalone.Options{})
	expect(t, call(t, srv, "PUT", "/v1/kv/big", make([]byte, dister.MaxValueSize+1)), 413, "too_large")
	expect(t, call(t, srv, "PUT", "/v1/kv/big", make([]byte, dister.MaxValueSize)), 200, "")
	r := call(t, srv, "GET", "/v1/kv/big?raw", nil)
	if len(r.body) != dister.MaxValueSize {
		t.Fatalf("%d bytes back", len(r.body))
	}
}

func TestKVUnknownGroup(t *testing.T) {
	_, srv := one(t, standalone.Options{})
	for _, c := range []struct{ method, path string }{
		{"GET", "/v1/kv/k?group=nope"},
		{"PUT", "/v1/kv/k?group=nope"},
		{"DELETE", "/v1/kv/k?group=nope"},
		{"GET", "/v1/kv?group=nope"},
		{"POST", "/v1/txn?group=nope"},
		{"GET", "/v1/kv/k?group=bad%20name"},
	} {
		var body any
		if c.method == "POST" {
			body = `{"then":[{"op":"put","key":"k","value":"v"}]}`
		}
		r := call(t, srv, c.method, c.path, body)
		expect(t, r, 404, "group_not_found")
		// The group has no revision to report.
		if v := r.header.Get("X-Dister-Revision"); v != "" {
			t.Fatalf("%s %s: X-Dister-Revision %q for an unknown group", c.method, c.path, v)
		}
	}
}

// A session read that waits for a revision past its timeout runs out of
// time: 504 timeout, with the cluster healthy. Given longer, a revision
// the group has not reached is 400 invalid, not a wait to the deadline.
func TestKVTimeout(t *testing.T) {
	_, srv := one(t, standalone.Options{})
	r := call(t, srv, "GET", "/v1/kv/k?min_revision=1000000000&timeout=200ms", nil)
	expect(t, r, 504, "timeout")
	revision(t, r)
	expect(t, call(t, srv, "GET", "/v1/kv?min_revision=1000000000&timeout=100ms", nil), 504, "timeout")
	expect(t, call(t, srv, "GET", "/v1/kv/k?min_revision=1000000000&timeout=1m", nil), 400, "invalid")
	expect(t, call(t, srv, "GET", "/v1/kv?min_revision=1000000000&timeout=1m", nil), 400, "invalid")
	expect(t, call(t, srv, "GET", "/v1/services?min_revision=1000000000&timeout=1m", nil), 400, "invalid")
}
