package standalone

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// Every route of the engine has a role in routeAccess, and routeAccess
// names no route that does not exist: a new route must be given its role.
func TestEveryRouteHasARole(t *testing.T) {
	s := New(nil, Options{Logger: testcluster.Logger()})
	seen := map[string]bool{}
	for _, r := range s.engine.Routes() {
		k := r.Method + " " + r.Path
		seen[k] = true
		if _, ok := routeAccess[k]; !ok {
			t.Errorf("route %s has no role in routeAccess", k)
		}
	}
	for k := range routeAccess {
		if !seen[k] {
			t.Errorf("routeAccess names %s, which is no route", k)
		}
	}
}

// wantAccess is the rule of the issue, written out independently of
// routeAccess: public probes and console, admin for groups, members,
// settings, snapshots and /node, read for any other GET, write for the
// rest. scope is what a token limited to groups may reach: "query" (the
// ?group=), "name" (the path's group), "default" (legacy routes),
// "cluster" (refused) or "filtered".
func wantAccess(method, path string) (need dister.Access, scope string) {
	switch {
	case path == "/healthz" || path == "/readyz" || path == "/ui" || strings.HasPrefix(path, "/ui/"):
		return 0, ""
	case path == "/v1/groups":
		return dister.AccessAdmin, "filtered"
	case strings.HasPrefix(path, "/v1/groups/"):
		return dister.AccessAdmin, "name"
	case strings.HasPrefix(path, "/v1/members"), path == "/v1/settings", path == "/v1/snapshot", path == "/node":
		return dister.AccessAdmin, "cluster"
	}
	scope = "query"
	switch path {
	case "/metrics", "/v1/status":
		scope = "cluster"
	case "/kv", "/service", "/balance":
		scope = "default"
	}
	if method == "GET" || method == "HEAD" {
		return dister.AccessRead, scope
	}
	return dister.AccessWrite, scope
}

// concrete fills a route pattern with values that make an allowed request
// fail cheaply after the auth check (a member that does not exist, a body
// that is not JSON), so that walking every route changes nothing that
// matters.
func concrete(pattern string) string {
	r := strings.NewReplacer("*key", "k", "*file", "index.html", ":name", "default", ":id", "99")
	return r.Replace(pattern)
}

// Each role is allowed and refused on every route, walking the engine's
// route list; and tokens limited to groups reach only their groups.
func TestRolesOnEveryRoute(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "tokens")
	if err := os.WriteFile(file, []byte(`# roles
read R
write W
admin A

write TW t1
admin TA t1,default
admin TX t1
`), 0o600); err != nil {
		t.Fatal(err)
	}
	tokens, err := dister.LoadTokens(file, nil, testcluster.Logger())
	if err != nil {
		t.Fatal(err)
	}
	c := testcluster.New(t, 1)
	node := c.Node(1)
	// The REST suite's second run serves a client-role node: its REST API
	// checks its own tokens the same way.
	if os.Getenv("DISTER_TEST_ROLE") == "client" {
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
		node = n
	}
	s := New(node, Options{Tokens: tokens, Logger: testcluster.Logger()})
	srv := httptest.NewServer(s)
	t.Cleanup(func() { s.CloseStreams(); srv.Close() })

	send := func(method, path, token string) (int, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, strings.NewReader("not json"))
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, b
	}
	code := func(b []byte) string {
		var e struct{ Error struct{ Code string } }
		_ = json.Unmarshal(b, &e)
		return e.Error.Code
	}
	type tok struct {
		name   string
		access dister.Access
		groups []string
	}
	toks := []tok{{"R", dister.AccessRead, nil}, {"W", dister.AccessWrite, nil}, {"A", dister.AccessAdmin, nil},
		{"TW", dister.AccessWrite, []string{"t1"}}, {"TA", dister.AccessAdmin, []string{"t1", "default"}},
		{"TX", dister.AccessAdmin, []string{"t1"}}}

	routes := s.engine.Routes()
	if len(routes) < 40 {
		t.Fatalf("only %d routes", len(routes))
	}
	for _, rt := range routes {
		need, scope := wantAccess(rt.Method, rt.Path)
		path := concrete(rt.Path)
		q := []string{}
		if strings.HasPrefix(path, "/v1/watch") {
			q = append(q, "timeout=50ms") // a stream ends only by ?timeout=
		}
		for _, group := range []string{"default", "t1"} {
			if group == "t1" && scope != "query" {
				continue
			}
			qq := q
			if scope == "query" {
				qq = append(slices.Clone(q), "group="+group)
			}
			p := path
			if len(qq) > 0 {
				p += "?" + strings.Join(qq, "&")
			}
			// No token, a wrong one, and each role.
			for _, bad := range []string{"", "nope"} {
				st, b := send(rt.Method, p, bad)
				if need == 0 {
					if st == 401 || st == 403 {
						t.Errorf("%s %s public, but %d %s", rt.Method, p, st, b)
					}
					continue
				}
				if st != 401 || code(b) != "unauthorized" {
					t.Errorf("%s %s token %q: %d %s, want 401 unauthorized", rt.Method, p, bad, st, b)
				}
			}
			if need == 0 {
				continue
			}
			for _, tk := range toks {
				allowed := tk.access >= need
				if len(tk.groups) > 0 {
					switch scope {
					case "cluster":
						allowed = false
					case "query":
						allowed = allowed && slices.Contains(tk.groups, group)
					case "name", "default":
						allowed = allowed && slices.Contains(tk.groups, "default")
					}
				}
				st, b := send(rt.Method, p, tk.name)
				if allowed && (st == 401 || st == 403) {
					t.Errorf("%s %s with %s (%v %v): %d %s, want allowed", rt.Method, p, tk.name, tk.access, tk.groups, st, b)
				}
				if !allowed && (st != 403 || code(b) != "forbidden") {
					t.Errorf("%s %s with %s (%v %v): %d %s, want 403 forbidden", rt.Method, p, tk.name, tk.access, tk.groups, st, b)
				}
			}
		}
	}

	// GET /v1/groups shows a token limited to groups only its own.
	for tk, want := range map[string]string{"A": `["default"]`, "TA": `["default"]`, "TX": `[]`} {
		st, b := send("GET", "/v1/groups", tk)
		var got struct{ Groups json.RawMessage }
		if err := json.Unmarshal(b, &got); st != 200 || err != nil || string(got.Groups) != want {
			t.Errorf("GET /v1/groups with %s: %d %s, want groups %s", tk, st, b, want)
		}
	}
}
