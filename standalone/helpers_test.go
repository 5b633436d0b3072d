package standalone_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
	"github.com/dister/dister/standalone"
)

// serve puts a Server over n behind an httptest server, closed by
// t.Cleanup before the cluster's servers (cleanups run last-in first-out).
func serve(t testing.TB, n *dister.Node, o standalone.Options) *httptest.Server {
	t.Helper()
	o.Logger = testcluster.Logger()
	h := standalone.New(n, o)
	srv := httptest.NewServer(h)
	// Close waits for the requests in flight, which a watch stream never
	// finishes by itself.
	t.Cleanup(func() {
		h.CloseStreams()
		srv.Close()
	})
	return srv
}

// one starts a single-server cluster and serves it; with
// DISTER_TEST_ROLE=client it serves a client-role node over that server
// instead (the REST suite run against a client node).
func one(t testing.TB, o standalone.Options, tune ...testcluster.Option) (*testcluster.Cluster, *httptest.Server) {
	t.Helper()
	c := testcluster.New(t, 1, tune...)
	if !clientRole() {
		return c, serve(t, c.Node(1), o)
	}
	n, err := dister.Open(context.Background(), dister.Options{Role: dister.RoleClient,
		Servers: []string{c.Options(1).PeerAddr}, Logger: testcluster.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	servedClients.Store(c, n)
	t.Cleanup(func() { servedClients.Delete(c) })
	return c, serve(t, n, o)
}

// servedClients maps a cluster of one() to the client-role Node served
// over it (DISTER_TEST_ROLE=client).
var servedClients sync.Map

// clientRole tells whether the REST suite runs against a client-role node.
func clientRole() bool { return os.Getenv("DISTER_TEST_ROLE") == "client" }

// closeServed closes the Node that one() serves: the server, or the
// client-role node over it.
func closeServed(c *testcluster.Cluster) {
	if n, ok := servedClients.Load(c); ok {
		_ = n.(*dister.Node).Close()
		return
	}
	c.Stop(1)
}

// scripts starts the server with EnableScriptChecks.
func scripts(o *dister.Options) { o.EnableScriptChecks = true }

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %q: %v", r.body, err)
	}
	return m
}

// errCode is the code of a /v1 error body ("" if it is not one).
func (r resp) errCode(t testing.TB) string {
	t.Helper()
	var b struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if err := json.Unmarshal(r.body, &b); err != nil {
		t.Fatalf("body %q: %v", r.body, err)
	}
	return b.Error.Code
}

// call sends one request; body may be nil, a string or []byte. Extra
// headers come as name, value pairs.
func call(t testing.TB, srv *httptest.Server, method, path string, body any, headers ...string) resp {
	t.Helper()
	r, err := do(srv, method, path, body, headers...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// do is call for goroutines other than the test's.
func do(srv *httptest.Server, method, path string, body any, headers ...string) (resp, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		return resp{}, fmt.Errorf("body type %T", body)
	}
	req, err := http.NewRequest(method, srv.URL+path, rd)
	if err != nil {
		return resp{}, err
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := srv.Client().Do(req)
	if err != nil {
		return resp{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return resp{}, fmt.Errorf("%s %s: reading the body: %w", method, path, err)
	}
	return resp{status: res.StatusCode, header: res.Header, body: b}, nil
}

// expect checks the status and, for an error, the code.
func expect(t testing.TB, r resp, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	if code != "" {
		if got := r.errCode(t); got != code {
			t.Fatalf("code %q, want %q; body %s", got, code, r.body)
		}
	}
	if ct := r.header.Get("Content-Type"); code != "" && ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
}

// jsonEqual compares a body with the expected JSON text, ignoring layout
// and key order.
func jsonEqual(t testing.TB, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("body %q: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("want %q: %v", want, err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("body\n %s\nwant\n %s", got, want)
	}
}

// waitMembers waits until GET /v1/members lists n servers: a server records
// its own addresses in the catalog shortly after it starts, which WaitReady
// does not wait for.
func waitMembers(t testing.TB, srv *httptest.Server, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := call(t, srv, "GET", "/v1/members", nil)
		if r.status == http.StatusOK && len(r.json(t)["members"].([]any)) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("members: %d %s, want %d servers", r.status, r.body, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
