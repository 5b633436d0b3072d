package standalone_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dister/dister/standalone"
)

// A request body that trickles in is cut at the request's deadline
// (?timeout= or Options.RequestTimeout): the handlers read bodies with
// io.ReadAll, which knows no ctx, so a client sending a byte every 200 ms
// held a handler, its connection and up to MaxBodyBytes for as long as it
// liked. Found in review.
func TestSlowBodyEndsAtTheRequestTimeout(t *testing.T) {
	_, srv := one(t, standalone.Options{RequestTimeout: time.Second})
	for _, rq := range []struct {
		method, path string
		want         int // 0: any answer, or the connection closed
	}{
		{"PUT", "/v1/kv/slow?timeout=500ms", http.StatusGatewayTimeout},
		{"PUT", "/v1/kv/slow", http.StatusGatewayTimeout},
		{"POST", "/v1/txn", http.StatusGatewayTimeout},
		{"POST", "/v1/leases", http.StatusGatewayTimeout},
		{"POST", "/kv", 0},
	} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{", rq.method, rq.path)
		start := time.Now()
		answered := make(chan string, 1)
		go func() {
			res, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				answered <- "closed: " + err.Error()
				return
			}
			res.Body.Close()
			if rq.want != 0 && res.StatusCode != rq.want {
				answered <- fmt.Sprintf("status %d, want %d", res.StatusCode, rq.want)
				return
			}
			answered <- ""
		}()
		func() {
			defer conn.Close()
			for time.Since(start) < 5*time.Second {
				select {
				case a := <-answered:
					if a != "" && (rq.want != 0 || !strings.HasPrefix(a, "closed")) {
						t.Errorf("%s %s: %s", rq.method, rq.path, a)
					}
					return
				case <-time.After(200 * time.Millisecond):
					if _, err := conn.Write([]byte(" ")); err != nil {
						return // closed by the server: bounded
					}
				}
			}
			t.Errorf("%s %s: unanswered after %v of a body sent a byte every 200 ms", rq.method, rq.path, time.Since(start).Round(100*time.Millisecond))
		}()
	}
}

// Lease TTLs over REST are bounded by dister.MaxLeaseTTL (365 days), as
// docs/rest.md says (it said 24 h, which the code never enforced; found in
// review).
func TestLeaseTTLBound(t *testing.T) {
	_, srv := one(t, standalone.Options{})
	for _, rq := range []struct {
		method, path, body string
		want               int
	}{
		{"POST", "/v1/leases", `{"ttl":"8760h"}`, http.StatusCreated},
		{"POST", "/v1/leases", `{"ttl":"8761h"}`, http.StatusBadRequest},
		{"PUT", "/v1/kv/k?ttl=8761h", "v", http.StatusBadRequest},
	} {
		if r := call(t, srv, rq.method, rq.path, rq.body); r.status != rq.want {
			t.Errorf("%s %s %s: %d %s, want %d", rq.method, rq.path, rq.body, r.status, r.body, rq.want)
		}
	}
}
