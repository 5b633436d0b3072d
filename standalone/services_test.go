package standalone_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dister/dister/standalone"
)

// eventually polls cond every 20ms until it holds, for up to 15s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 15s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// instanceOut is the /v1 instance JSON.
type instanceOut struct {
	Service  string            `json:"service"`
	ID       string            `json:"id"`
	Address  string            `json:"address"`
	Priority int               `json:"priority"`
	Tags     []string          `json:"tags"`
	Meta     map[string]string `json:"meta"`
	Check    *struct {
		Type, Target, Interval, Timeout, TTL string
		Deregister                           string `json:"deregister_critical_after"`
	} `json:"check"`
	Status      string `json:"status"`
	Output      string `json:"output"`
	LastChecked string `json:"last_checked"`
	ModRevision int64  `json:"mod_revision"`
}

func decode[T any](t testing.TB, r resp) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("body %s: %v", r.body, err)
	}
	return v
}

type serviceOut struct {
	Service   string        `json:"service"`
	Instances []instanceOut `json:"instances"`
}

// okServer is an HTTP server that answers 200, closed by t.Cleanup.
func okServer(t testing.TB) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(srv.Close)
	return srv
}

func TestServicesRegisterGetListDeregister(t *testing.T) {
	_, srv := one(t, standalone.Options{})
	web := okServer(t)
	expect(t, call(t, srv, "GET", "/v1/services", nil), 200, "")
	jsonEqual(t, call(t, srv, "GET", "/v1/services", nil).body, `{"services":[]}`)
	jsonEqual(t, call(t, srv, "GET", "/v1/services/web", nil).body, `{"service":"web","instances":[]}`)

	// No check: passing at once; what is stored comes back.
	r := call(t, srv, "PUT", "/v1/services/web/instances/a",
		`{"address":"10.0.0.1:80","priority":3,"tags":["x","y"],"meta":{"zone":"eu"}}`)
	expect(t, r, 200, "")
	a := decode[instanceOut](t, r)
	if a.Service != "web" || a.ID != "a" || a.Address != "10.0.0.1:80" || a.Priority != 3 || a.Status != "passing" ||
		a.Check != nil || a.ModRevision == 0 || len(a.Tags) != 2 || a.Meta["zone"] != "eu" || a.LastChecked != "" {
		t.Fatalf("registered: %s", r.body)
	}

	// An http check against a server that answers 200: critical until the
	// leader's first probe, then passing.
	body := `{"service":"web","id":"b","address":"` + web.Listener.Addr().String() + `",
		"check":{"type":"http","target":"` + web.URL + `/health","interval":"200ms","timeout":"100ms","deregister_critical_after":"1m"}}`
	r = call(t, srv, "PUT", "/v1/services/web/instances/b", body)
	expect(t, r, 200, "")
	b := decode[instanceOut](t, r)
	if b.Check == nil || b.Check.Type != "http" || b.Check.Interval != "200ms" || b.Check.Timeout != "100ms" ||
		b.Check.Deregister != "1m0s" || b.Check.Target != web.URL+"/health" {
		t.Fatalf("registered with a check: %s", r.body)
	}
	eventually(t, "b passing", func() bool {
		s := decode[serviceOut](t, call(t, srv, "GET", "/v1/services/web?passing=true", nil))
		return len(s.Instances) == 2
	})
	s := decode[serviceOut](t, call(t, srv, "GET", "/v1/services/web", nil))
	if len(s.Instances) != 2 || s.Instances[0].ID != "a" || s.Instances[1].ID != "b" || s.Instances[1].LastChecked == "" {
		t.Fatalf("get: %+v", s)
	}
	if _, err := time.Parse(time.RFC3339Nano, s.Instances[1].LastChecked); err != nil {
		t.Fatal(err)
	}

	// A check that fails: the instance is listed but not passing.
	expect(t, call(t, srv, "PUT", "/v1/services/web/instances/c",
		`{"address":"127.0.0.1:1","check":{"type":"tcp","target":"127.0.0.1:1","interval":"200ms"}}`), 200, "")
	eventually(t, "c checked", func() bool {
		s := decode[serviceOut](t, call(t, srv, "GET", "/v1/services/web", nil))
		return len(s.Instances) == 3 && s.Instances[2].LastChecked != "" && s.Instances[2].Status == "critical"
	})
	s = decode[serviceOut](t, call(t, srv, "GET", "/v1/services/web?passing=true&consistency=linearizable", nil))
	if len(s.Instances) != 2 {
		t.Fatalf("passing: %+v", s)
	}
	expect(t, call(t, srv, "PUT", "/v1/services/db/instances/d1", `{"address":"10.0.0.2:5432"}`), 200, "")
	jsonEqual(t, call(t, srv, "GET", "/v1/services", nil).body,
		`{"services":[{"name":"db","instances":1,"passing":1},{"name":"web","instances":3,"passing":2}]}`)

	// Deregister; a second time is 404.
	r = call(t, srv, "DELETE", "/v1/services/web/instances/c", nil)
	expect(t, r, 200, "")
	jsonEqual(t, r.body, `{"deregistered":true}`)
	expect(t, call(t, srv, "DELETE", "/v1/services/web/instances/c", nil), 404, "not_found")
	expect(t, call(t, srv, "DELETE", "/v1/services/nosuch/instances/c", nil), 404, "not_found")
	if s := decode[serviceOut](t, call(t, srv, "GET", "/v1/services/web", nil)); len(s.Instances) != 2 {
		t.Fatalf("after deregister: %+v", s)
	}

	// Groups: isolated, and an unknown one is 404.
	expect(t, call(t, srv, "PUT", "/v1/groups/g2", nil), 201, "")
	jsonEqual(t, call(t, srv, "GET", "/v1/services?group=g2", nil).body, `{"services":[]}`)
	expect(t, call(t, srv, "PUT", "/v1/services/web/instances/a?group=g2", `{"address":"10.0.0.9:80"}`), 200, "")
	if s := decode[serviceOut](t, call(t, srv, "GET", "/v1/services/web?group=g2", nil)); len(s.Instances) != 1 ||
		s.Instances[0].Address != "10.0.0.9:80" {
		t.Fatalf("group g2: %+v", s)
	}
	expect(t, call(t, srv, "GET", "/v1/services?group=nosuch", nil), 404, "group_not_found")
	expect(t, call(t, srv, "PUT", "/v1/services/web/instances/a?group=nosuch", `{"address":"10.0.0.9:80"}`), 404, "group_not_found")
}

func TestServicesHeartbeat(t *testing.T) {
	_, srv := one(t, standalone.Options{})
	r := call(t, srv, "PUT", "/v1/services/worker/instances/w1", `{"address":"10.0.0.1:1","check":{"type":"ttl","ttl":"2s"}}`)
	expect(t, r, 200, "")
	if in := decode[instanceOut](t, r); in.Status != "passing" || in.Check == nil || in.Check.TTL != "2s" {
		t.Fatalf("ttl instance: %s", r.body)
	}
	// Heartbeats keep it passing well past its TTL.
	for range 6 {
		r := call(t, srv, "PUT", "/v1/services/worker/instances/w1/heartbeat", nil)
		expect(t, r, 200, "")
		jsonEqual(t, r.body, `{"service":"worker","id":"w1"}`)
		time.Sleep(500 * time.Millisecond)
	}
	if s := decode[serviceOut](t, call(t, srv, "GET", "/v1/services/worker", nil)); s.Instances[0].Status != "passing" {
		t.Fatalf("heartbeats did not keep it alive: %+v", s)
	}
	// Without them, it turns critical: nothing in the daemon renews it.
	eventually(t, "w1 critical", func() bool {
		s := decode[serviceOut](t, call(t, srv, "GET", "/v1/services/worker", nil))
		return s.Instances[0].Status == "critical"
	})
	expect(t, call(t, srv, "PUT", "/v1/services/worker/instances/w1/heartbeat", nil), 200, "")
	eventually(t, "w1 passing again", func() bool {
		s := decode[serviceOut](t, call(t, srv, "GET", "/v1/services/worker", nil))
		return s.Instances[0].Status == "passing"
	})

	expect(t, call(t, srv, "PUT", "/v1/services/worker/instances/nosuch/heartbeat", nil), 404, "not_found")
	expect(t, call(t, srv, "PUT", "/v1/services/worker/instances/plain", `{"address":"10.0.0.1:2"}`), 200, "")
	expect(t, call(t, srv, "PUT", "/v1/services/worker/instances/plain/heartbeat", nil), 400, "invalid")
}

func TestServicesInvalid(t *testing.T) {
	_, srv := one(t, standalone.Options{})
	for _, c := range []struct{ path, body string }{
		{"/v1/services/web/instances/a", `{"id":"b","address":"10.0.0.1:80"}`},
		{"/v1/services/web/instances/a", `{"service":"api","address":"10.0.0.1:80"}`},
		{"/v1/services/web/instances/a", `{"address":"10.0.0.1:80","status":"passing"}`},
		{"/v1/services/web/instances/a", `{"address":"10.0.0.1:80","extra":"x"}`},
		{"/v1/services/web/instances/a", `{"address":"10.0.0.1:80","priority":"3"}`},
		{"/v1/services/web/instances/a", `{"address":"10.0.0.1:80","priority":-1}`},
		{"/v1/services/web/instances/a", `{"address":"10.0.0.1:80","priority":1e30}`},
		{"/v1/services/web/instances/a", `{"address":""}`},
		{"/v1/services/web/instances/a", `{"address":"nohostport"}`},
		{"/v1/services/web/instances/a", `{"address":"10.0.0.1:80","check":{"type":"http","target":"http://x/","interval":"soon"}}`},
		{"/v1/services/web/instances/a", `{"address":"10.0.0.1:80","check":{"type":"http","target":"http://x/","interval":"-1s"}}`},
		{"/v1/services/web/instances/a", `{"address":"10.0.0.1:80","check":{"type":"http","target":"ftp://x/"}}`},
		{"/v1/services/web/instances/a", `{"address":"10.0.0.1:80","check":{"type":"gopher","target":"x"}}`},
		{"/v1/services/web/instances/a", `{"address":"10.0.0.1:80","check":{"type":"ttl"}}`},
		{"/v1/services/web/instances/a", `{"address":"10.0.0.1:80","check":{"type":"script","target":"/bin/true"}}`},
		{"/v1/services/web/instances/a", `{"address":"10.0.0.1:80","check":{"type":"http","target":"http://x/","interval":"1s","timeout":"2s"}}`},
		{"/v1/services/web/instances/a", `{"address":"10.0.0.1:80"} {}`},
		{"/v1/services/web/instances/a", ``},
		{"/v1/services/web/instances/a?bogus=1", `{"address":"10.0.0.1:80"}`},
		{"/v1/services/we%20b/instances/a", `{"address":"10.0.0.1:80"}`},
		{"/v1/services/web/instances/-a", `{"address":"10.0.0.1:80"}`},
	} {
		r := call(t, srv, "PUT", c.path, c.body)
		if r.status != 400 || r.errCode(t) != "invalid" {
			t.Errorf("PUT %s %s: %d %s", c.path, c.body, r.status, r.body)
		}
	}
	expect(t, call(t, srv, "GET", "/v1/services/we%20b", nil), 400, "invalid")
	expect(t, call(t, srv, "GET", "/v1/services/web?passing=maybe", nil), 400, "invalid")
	expect(t, call(t, srv, "GET", "/v1/services/web?consistency=eventual", nil), 400, "invalid")
	expect(t, call(t, srv, "GET", "/v1/services?passing=true", nil), 400, "invalid")
	jsonEqual(t, call(t, srv, "GET", "/v1/services", nil).body, `{"services":[]}`)
}

// Secrets given in targets and addresses never come back from /v1.
func TestServicesRedacted(t *testing.T) {
	_, srv := one(t, standalone.Options{})
	const secret = "s3cr3tpw"
	regs := map[string]string{
		"my":    `{"address":"10.0.0.1:3306","check":{"type":"mysql","target":"root:` + secret + `@tcp(10.0.0.1:3306)/app","interval":"10s"}}`,
		"pgurl": `{"address":"10.0.0.1:5432","check":{"type":"pgsql","target":"postgres://u:` + secret + `@10.0.0.1:5432/app?sslmode=disable","interval":"10s"}}`,
		"pgkw":  `{"address":"10.0.0.1:5432","check":{"type":"pgsql","target":"host=10.0.0.1 user=u password=` + secret + ` dbname=app","interval":"10s"}}`,
		"pgq":   `{"address":"10.0.0.1:5432","check":{"type":"pgsql","target":"postgres://u@10.0.0.1:5432/app?password=` + secret + `","interval":"10s"}}`,
		"http":  `{"address":"http://u:` + secret + `@10.0.0.1:80/","check":{"type":"http","target":"http://u:` + secret + `@10.0.0.1:80/health","interval":"10s"}}`,
	}
	for id, body := range regs {
		r := call(t, srv, "PUT", "/v1/services/db/instances/"+id, body)
		expect(t, r, 200, "")
		if strings.Contains(string(r.body), secret) {
			t.Fatalf("register %s echoed the secret: %s", id, r.body)
		}
	}
	s := decode[serviceOut](t, call(t, srv, "GET", "/v1/services/db", nil))
	got := map[string]instanceOut{}
	for _, in := range s.Instances {
		got[in.ID] = in
	}
	for id, want := range map[string]string{
		"my":    "root:xxxxx@tcp(10.0.0.1:3306)/app",
		"pgurl": "postgres://u:xxxxx@10.0.0.1:5432/app?sslmode=disable",
		"pgkw":  "host=10.0.0.1 user=u password=xxxxx dbname=app",
		"pgq":   "postgres://u@10.0.0.1:5432/app?password=xxxxx",
		"http":  "http://u:xxxxx@10.0.0.1:80/health",
	} {
		if got[id].Check == nil || got[id].Check.Target != want {
			t.Errorf("%s: target %+v, want %q", id, got[id].Check, want)
		}
	}
	if a := got["http"].Address; a != "http://u:xxxxx@10.0.0.1:80/" {
		t.Errorf("address %q", a)
	}
	for _, path := range []string{"/v1/services/db", "/v1/services"} {
		if r := call(t, srv, "GET", path, nil); strings.Contains(string(r.body), secret) {
			t.Fatalf("GET %s shows the secret: %s", path, r.body)
		}
	}
}

func TestBalanceREST(t *testing.T) {
	_, srv := one(t, standalone.Options{})
	expect(t, call(t, srv, "GET", "/v1/balance/web", nil), 503, "no_instance")
	for _, q := range []string{"?strategy=hash", "?strategy=hash&key=", "?strategy=random", "?key=k",
		"?strategy=round_robin&key=k", "?strategy=priority&bogus=1", "?fresh=1", "?fresh=yes"} {
		expect(t, call(t, srv, "GET", "/v1/balance/web"+q, nil), 400, "invalid")
	}
	expect(t, call(t, srv, "GET", "/v1/balance/bad%20name", nil), 400, "invalid")
	expect(t, call(t, srv, "GET", "/v1/balance/web?group=nosuch", nil), 404, "group_not_found")

	// A critical instance is never picked.
	expect(t, call(t, srv, "PUT", "/v1/services/web/instances/down",
		`{"address":"127.0.0.1:1","priority":5,"check":{"type":"tcp","target":"127.0.0.1:1","interval":"200ms"}}`), 200, "")
	expect(t, call(t, srv, "GET", "/v1/balance/web", nil), 503, "no_instance")

	for _, id := range []string{"a", "b"} {
		expect(t, call(t, srv, "PUT", "/v1/services/web/instances/"+id, `{"address":"10.0.0.1:80","priority":1}`), 200, "")
	}
	seen := map[string]bool{}
	eventually(t, "both picked", func() bool {
		r := call(t, srv, "GET", "/v1/balance/web?strategy=round_robin", nil)
		if r.status == 200 {
			seen[decode[instanceOut](t, r).ID] = true
		}
		return seen["a"] && seen["b"]
	})
	if seen["down"] {
		t.Fatal("the critical instance was picked")
	}
	r := call(t, srv, "GET", "/v1/balance/web?strategy=hash&key=user-7", nil)
	expect(t, r, 200, "")
	first := decode[instanceOut](t, r).ID
	for range 20 {
		if id := decode[instanceOut](t, call(t, srv, "GET", "/v1/balance/web?strategy=hash&key=user-7", nil)).ID; id != first {
			t.Fatalf("hash picked %s then %s", first, id)
		}
	}
	expect(t, call(t, srv, "GET", "/v1/balance/web?strategy=priority", nil), 200, "")
	// fresh=true reads the registry: an instance registered just now is
	// there at once, whatever the view has seen.
	expect(t, call(t, srv, "PUT", "/v1/services/web/instances/c", `{"address":"10.0.0.1:80","priority":1000000}`), 200, "")
	expect(t, call(t, srv, "DELETE", "/v1/services/web/instances/a", nil), 200, "")
	expect(t, call(t, srv, "DELETE", "/v1/services/web/instances/b", nil), 200, "")
	r = call(t, srv, "GET", "/v1/balance/web?fresh=true&strategy=round_robin", nil)
	expect(t, r, 200, "")
	if id := decode[instanceOut](t, r).ID; id != "c" {
		t.Fatalf("fresh pick: %s, want c", id)
	}
}

func TestSettingsREST(t *testing.T) {
	_, srv := one(t, standalone.Options{})
	jsonEqual(t, call(t, srv, "GET", "/v1/settings", nil).body, `{"script_checks":false}`)
	script := `{"address":"10.0.0.1:80","check":{"type":"custom","target":"echo 1","interval":"200ms"}}`
	expect(t, call(t, srv, "PUT", "/v1/services/job/instances/a", script), 400, "invalid")
	for _, b := range []string{`{}`, `{"script_checks":"yes"}`, `{"script_checks":true,"x":1}`, `null`, ``} {
		expect(t, call(t, srv, "PUT", "/v1/settings", b), 400, "invalid")
	}
	r := call(t, srv, "PUT", "/v1/settings", `{"script_checks":true}`)
	expect(t, r, 200, "")
	jsonEqual(t, r.body, `{"script_checks":true}`)
	jsonEqual(t, call(t, srv, "GET", "/v1/settings", nil).body, `{"script_checks":true}`)
	// The setting alone does not let REST clients run commands: the
	// leader was not started with --enable-script-checks.
	r = call(t, srv, "PUT", "/v1/services/job/instances/a", script)
	expect(t, r, 400, "invalid")
	if !strings.Contains(string(r.body), "script checks are not enabled on the leader") {
		t.Fatalf("refusal %s does not say why", r.body)
	}
	jsonEqual(t, call(t, srv, "PUT", "/v1/settings", `{"script_checks":false}`).body, `{"script_checks":false}`)
	jsonEqual(t, call(t, srv, "GET", "/v1/settings", nil).body, `{"script_checks":false}`)

	// A server started with the flag runs them once the setting is on.
	_, srv = one(t, standalone.Options{}, scripts)
	expect(t, call(t, srv, "PUT", "/v1/services/job/instances/a", script), 400, "invalid")
	expect(t, call(t, srv, "PUT", "/v1/settings", `{"script_checks":true}`), 200, "")
	expect(t, call(t, srv, "PUT", "/v1/services/job/instances/a", script), 200, "")
}

func TestServiceWatchSSE(t *testing.T) {
	_, srv := one(t, standalone.Options{})
	expect(t, call(t, srv, "PUT", "/v1/services/web/instances/a", `{"address":"10.0.0.1:80"}`), 200, "")
	st := openSSE(t, srv, "/v1/watch/services/web")
	type setOut struct {
		Revision  int64         `json:"revision"`
		Instances []instanceOut `json:"instances"`
	}
	next := func() setOut {
		t.Helper()
		ev := st.next(t)
		if ev.event != "instances" {
			t.Fatalf("event %+v", ev)
		}
		var s setOut
		if err := json.Unmarshal([]byte(ev.data), &s); err != nil {
			t.Fatal(err)
		}
		if ev.id == "" || ev.id != strconv.FormatInt(s.Revision, 10) {
			t.Fatalf("id %q, revision %d", ev.id, s.Revision)
		}
		return s
	}
	first := next()
	if len(first.Instances) != 1 || first.Instances[0].ID != "a" || first.Revision < first.Instances[0].ModRevision {
		t.Fatalf("first: %+v", first)
	}
	if st.startRevision(t) != first.Revision {
		t.Fatalf("X-Dister-Revision %d, first event at %d", st.startRevision(t), first.Revision)
	}
	expect(t, call(t, srv, "PUT", "/v1/services/web/instances/b", `{"address":"10.0.0.2:80"}`), 200, "")
	// Another service's change is not sent.
	expect(t, call(t, srv, "PUT", "/v1/services/other/instances/x", `{"address":"10.0.0.3:80"}`), 200, "")
	second := next()
	if len(second.Instances) != 2 || second.Instances[1].ID != "b" || second.Revision <= first.Revision {
		t.Fatalf("second: %+v", second)
	}
	expect(t, call(t, srv, "DELETE", "/v1/services/web/instances/a", nil), 200, "")
	third := next()
	if len(third.Instances) != 1 || third.Instances[0].ID != "b" {
		t.Fatalf("third: %+v", third)
	}
	st.close()

	// Errors before the stream: the usual answers.
	for _, c := range []struct {
		path, code string
		status     int
	}{
		{"/v1/watch/services/bad%20name", "invalid", 400},
		{"/v1/watch/services/web?group=nosuch", "group_not_found", 404},
		{"/v1/watch/services/web?from=3", "invalid", 400},
		{"/v1/watch/services/web?timeout=never", "invalid", 400},
	} {
		expect(t, call(t, srv, "GET", c.path, nil), c.status, c.code)
	}
	// ?timeout= ends the stream cleanly; a service with no instances starts
	// with an empty set.
	st = openSSE(t, srv, "/v1/watch/services/none?timeout=300ms")
	evs, err := st.end(t)
	if len(evs) != 1 || evs[0].data != `{"revision":`+evs[0].id+`,"instances":[]}` {
		t.Fatalf("events %+v", evs)
	}
	if err != io.EOF {
		t.Fatalf("ended with %v", err)
	}
}
