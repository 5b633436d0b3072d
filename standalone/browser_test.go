package standalone_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/dister/dister/standalone"
)

// DNS rebinding: a page of evil.example whose name now resolves to
// 127.0.0.1 sends Host: evil.example. It is refused on every route, the
// probes included, while IP literals, localhost and the allowed names pass.
func TestHostCheck(t *testing.T) {
	_, srv := one(t, standalone.Options{AllowedHosts: []string{"dister.internal", "Node1.Example."}})
	expect(t, call(t, srv, "PUT", "/v1/kv/k", "v"), 200, "")
	get := func(host, path string) resp {
		t.Helper()
		req, err := http.NewRequest("GET", srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		res, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return resp{status: res.StatusCode, header: res.Header, body: b}
	}
	port := srv.URL[strings.LastIndex(srv.URL, ":"):]
	for _, host := range []string{"evil.example" + port, "evil.example", "localhost.evil.example" + port, "127.0.0.1.nip.io" + port} {
		for _, path := range []string{"/v1/kv/k", "/kv?k=k", "/healthz", "/ui/"} {
			r := get(host, path)
			expect(t, r, 403, "cross_site")
			if strings.Contains(string(r.body), `"v"`) {
				t.Fatalf("Host %s %s leaked the value: %s", host, path, r.body)
			}
		}
	}
	for _, host := range []string{"127.0.0.1" + port, "localhost" + port, "LOCALHOST", "[::1]" + port, "10.1.2.3",
		"dister.internal" + port, "node1.example" + port, "node1.example."} {
		expect(t, get(host, "/v1/kv/k"), 200, "")
	}
}

// A page of another site can POST text/plain to a loopback daemon without
// a preflight: that write is refused, with and without Sec-Fetch-Site, on
// /v1 and the legacy routes alike, and nothing is written.
func TestCrossOriginWrite(t *testing.T) {
	_, srv := one(t, standalone.Options{})
	for _, h := range [][]string{
		{"Content-Type", "text/plain", "Origin", "http://evil.example"},
		{"Content-Type", "text/plain", "Origin", "http://evil.example", "Sec-Fetch-Site", "cross-site"},
		{"Content-Type", "text/plain", "Origin", "http://localhost:1"},
	} {
		expect(t, call(t, srv, "POST", "/v1/txn", `{"then":[{"put":{"key":"x","value":"pwned"}}]}`, h...), 403, "cross_site")
		expect(t, call(t, srv, "POST", "/kv", `{"x":"pwned"}`, h...), 403, "cross_site")
		expect(t, call(t, srv, "PUT", "/v1/kv/x", "pwned", h...), 403, "cross_site")
	}
	r := call(t, srv, "GET", "/v1/kv?prefix=x", nil)
	if n := len(r.json(t)["entries"].([]any)); n != 0 {
		t.Fatalf("%d keys written cross-origin", n)
	}
	// The daemon's own origin writes.
	expect(t, call(t, srv, "PUT", "/v1/kv/x", "ok", "Content-Type", "text/plain", "Origin", srv.URL), 200, "")
}
