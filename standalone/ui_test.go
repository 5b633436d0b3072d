package standalone_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/dister/dister/standalone"
)

// The console's files are served without a token, gzip-compressed, with a
// strict CSP and ETags; nothing else becomes reachable without a token.
// (The console itself is tested in a browser: cmd/dister/ui_test.go.)
func TestUIAssets(t *testing.T) {
	offsite := regexp.MustCompile(`(?i)((src|href|action)\s*=\s*["']?|url\(\s*["']?|@import\s*["']?|fetch\(\s*["'])(https?:)?//`)
	_, srv := one(t, standalone.Options{Token: "s3cret"})
	noRedirect := *srv.Client()
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	res, err := noRedirect.Get(srv.URL + "/ui")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMovedPermanently || res.Header.Get("Location") != "/ui/" {
		t.Fatalf("GET /ui: %d Location %q, want a redirect to /ui/", res.StatusCode, res.Header.Get("Location"))
	}

	total := 0
	for _, f := range []string{"", "index.html", "app.css", "core.js", "cluster.js", "kv.js", "services.js"} {
		r := call(t, srv, "GET", "/ui/"+f, nil, "Accept-Encoding", "gzip")
		expect(t, r, 200, "")
		if r.header.Get("Content-Encoding") != "gzip" {
			t.Fatalf("%s: Content-Encoding %q", f, r.header.Get("Content-Encoding"))
		}
		if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "script-src 'self'") {
			t.Fatalf("%s: CSP %q", f, csp)
		}
		if r.header.Get("X-Content-Type-Options") != "nosniff" {
			t.Fatalf("%s: no nosniff", f)
		}
		zr, err := gzip.NewReader(bytes.NewReader(r.body))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		plain, err := io.ReadAll(zr)
		if err != nil || len(plain) == 0 {
			t.Fatalf("%s: %d bytes, %v", f, len(plain), err)
		}
		// Nothing is loaded from elsewhere (the CSP would block it too).
		if m := offsite.Find(plain); m != nil {
			t.Fatalf("%s loads from another site: %s", f, m)
		}
		if f != "" {
			total += len(r.body)
		}
		// The same file again with its ETag: 304 and no body.
		again := call(t, srv, "GET", "/ui/"+f, nil, "If-None-Match", r.header.Get("ETag"))
		if again.status != http.StatusNotModified || len(again.body) != 0 {
			t.Fatalf("%s with its ETag: %d, %d bytes", f, again.status, len(again.body))
		}
	}
	// Every file of the console together stays far under the 100 KB a
	// page may transfer.
	if total > 50_000 {
		t.Fatalf("the console's files are %d bytes compressed", total)
	}
	// Without gzip the plain file.
	r := call(t, srv, "GET", "/ui/core.js", nil, "Accept-Encoding", "identity")
	if r.header.Get("Content-Encoding") != "" || !bytes.Contains(r.body, []byte("use strict")) {
		t.Fatalf("identity: %q %.40q", r.header.Get("Content-Encoding"), r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/javascript") {
		t.Fatalf("core.js Content-Type %q", ct)
	}

	// The token exemption is for the console's files alone.
	expect(t, call(t, srv, "GET", "/ui/nope.js", nil), 404, "not_found")
	for _, p := range []string{"/ui/../v1/status", "/ui/%2e%2e/v1/status", "/uix", "/v1/status", "/v1/kv/ui/x"} {
		r := call(t, srv, "GET", p, nil)
		if r.status == 200 {
			t.Fatalf("GET %s without a token: 200 %s", p, r.body)
		}
		if bytes.Contains(r.body, []byte("node_id")) {
			t.Fatalf("GET %s without a token leaks %s", p, r.body)
		}
	}
}
