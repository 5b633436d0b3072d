package standalone_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/dister/dister/standalone"
)

// legacyData is the data of a successful v1.5 answer.
func legacyData(t testing.TB, r resp) json.RawMessage {
	t.Helper()
	var env struct {
		Result  int             `json:"result"`
		Message string          `json:"message"`
		Data    json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(r.body, &env); err != nil || r.status != 200 || env.Result != 1 || env.Message != "ok" {
		t.Fatalf("want success: %d %s (%v)", r.status, r.body, err)
	}
	return env.Data
}

func TestLegacyServices(t *testing.T) {
	_, srv := one(t, standalone.Options{})
	web := okServer(t)
	legacy(t, call(t, srv, "GET", "/service", nil), `{"result":1,"message":"ok","data":{}}`)
	legacy(t, call(t, srv, "GET", "/service?name=web", nil), legacyErr("service not found"))

	// A web node with fields of its own (and a status, which is dropped),
	// and a node of a type dister does not know.
	webNode := `{"url":"` + web.URL + `/health","priority":"2","interval":"200","weight":"x","pass":"p","extra":{"nested":[1,2]},"status":1}`
	body := `[{"name":"web","type":"web","node":[` + webNode + `]},
		{"name":"misc","type":"ftp","node":[{"host":"10.0.0.1","port":"21","priority":3,"anything":true}]}]`
	legacy(t, call(t, srv, "POST", "/service", body), legacyOK)
	// Fields come back sorted by name, status among them.
	webWant := `{"extra":{"nested":[1,2]},"interval":"200","pass":"p","priority":"2","status":1,"url":"` + web.URL + `/health","weight":"x"}`
	miscWant := `{"name":"misc","type":"ftp","node":[{"anything":true,"host":"10.0.0.1","port":"21","priority":3}]}`
	// Never checked: no status. The web node turns status 1.
	legacy(t, call(t, srv, "GET", "/service?name=misc", nil), `{"result":1,"message":"ok","data":`+miscWant+`}`)
	eventually(t, "web alive", func() bool {
		return string(call(t, srv, "GET", "/service?name=web", nil).body) ==
			`{"result":1,"message":"ok","data":{"name":"web","type":"web","node":[`+webWant+`]}}`
	})
	legacy(t, call(t, srv, "GET", "/balance?name=web", nil), `{"result":1,"message":"ok","data":`+webWant+`}`)
	legacy(t, call(t, srv, "GET", "/service", nil), `{"result":1,"message":"ok","data":{"misc":`+miscWant+
		`,"web":{"name":"web","type":"web","node":[`+webWant+`]}}}`)

	// Unknown types are never checked, so never balanced.
	legacy(t, call(t, srv, "GET", "/balance?name=misc", nil), legacyErr("no nodes of this service are alive"))
	legacy(t, call(t, srv, "GET", "/balance?name=nosuch", nil), legacyErr("no service named 'nosuch'"))
	legacy(t, call(t, srv, "GET", "/balance?name=bad%20name", nil), legacyErr("no service named 'bad name'"))
	legacy(t, call(t, srv, "GET", "/balance", nil), legacyErr("incomplete input: name is required"))
	legacy(t, call(t, srv, "GET", "/balance?name=", nil), legacyErr("incomplete input: name is required"))

	// /v1 sees the same instances, without the node objects.
	s := decode[serviceOut](t, call(t, srv, "GET", "/v1/services/web", nil))
	if len(s.Instances) != 1 || s.Instances[0].ID != "node-0000" || s.Instances[0].Priority != 2 ||
		s.Instances[0].Check.Type != "web" || s.Instances[0].Check.Interval != "200ms" || s.Instances[0].Address != web.URL+"/health" {
		t.Fatalf("/v1 view: %+v", s)
	}
	if r := call(t, srv, "GET", "/v1/services/web", nil); strings.Contains(string(r.body), "nested") {
		t.Fatalf("/v1 shows the node object: %s", r.body)
	}
	s = decode[serviceOut](t, call(t, srv, "GET", "/v1/services/misc", nil))
	if len(s.Instances) != 1 || s.Instances[0].Check.Type != "never" || s.Instances[0].Status != "critical" {
		t.Fatalf("/v1 view of misc: %+v", s)
	}

	// PUT is POST; a POST replaces all nodes of a service, in node order.
	legacy(t, call(t, srv, "PUT", "/service", `[{"name":"misc","type":"ftp","node":[{"a":1},{"b":2},{"c":3}]}]`), legacyOK)
	legacy(t, call(t, srv, "GET", "/service?name=misc", nil),
		`{"result":1,"message":"ok","data":{"name":"misc","type":"ftp","node":[{"a":1},{"b":2},{"c":3}]}}`)

	// DELETE removes services; unknown names are fine.
	legacy(t, call(t, srv, "DELETE", "/service", `["misc","nosuch"]`), legacyOK)
	legacy(t, call(t, srv, "GET", "/service?name=misc", nil), legacyErr("service not found"))
	legacy(t, call(t, srv, "DELETE", "/service", `[]`), legacyOK)
	legacy(t, call(t, srv, "POST", "/service", `[]`), legacyOK)

	// An instance registered through /v1 reads as a node built from it.
	expect(t, call(t, srv, "PUT", "/v1/services/api/instances/i1", `{"address":"10.0.0.7:80","priority":4}`), 200, "")
	legacy(t, call(t, srv, "GET", "/service?name=api", nil),
		`{"result":1,"message":"ok","data":{"name":"api","type":"","node":[{"address":"10.0.0.7:80","id":"i1","priority":"4","status":1}]}}`)
	legacy(t, call(t, srv, "GET", "/balance?name=api", nil),
		`{"result":1,"message":"ok","data":{"address":"10.0.0.7:80","id":"i1","priority":"4","status":1}}`)
}

// The check each type makes, as /v1 shows it (secrets redacted there, and
// echoed by the legacy API as v1.5 did).
func TestLegacyServiceTypes(t *testing.T) {
	_, srv := one(t, standalone.Options{})
	body := `[
		{"name":"db","type":"mysql","node":[{"host":"10.0.0.1","port":"3306","user":"root","pass":"pw1","database":"test"}]},
		{"name":"pg","type":"pgsql","node":[{"host":"10.0.0.2","port":5432,"user":"u","pass":"pw2","database":"app"}]},
		{"name":"mc","type":"tcp","node":[{"host":"10.0.0.3","port":"11211","interval":"200","priority":"1"},
		                                  {"host":"10.0.0.4","port":"11211","interval":5000,"priority":1}]}]`
	legacy(t, call(t, srv, "POST", "/service", body), legacyOK)
	type checkOut struct{ addr, typ, target, interval, timeout string }
	got := func(name string, i int) checkOut {
		s := decode[serviceOut](t, call(t, srv, "GET", "/v1/services/"+name, nil))
		in := s.Instances[i]
		return checkOut{in.Address, in.Check.Type, in.Check.Target, in.Check.Interval, in.Check.Timeout}
	}
	for _, c := range []struct {
		name string
		i    int
		want checkOut
	}{
		{"db", 0, checkOut{"10.0.0.1:3306", "mysql", "root:xxxxx@tcp(10.0.0.1:3306)/test", "2s", "2s"}},
		{"pg", 0, checkOut{"10.0.0.2:5432", "pgsql", "postgres://u:xxxxx@10.0.0.2:5432/app?sslmode=disable", "2s", "2s"}},
		{"mc", 0, checkOut{"10.0.0.3:11211", "tcp", "10.0.0.3:11211", "200ms", "200ms"}},
		{"mc", 1, checkOut{"10.0.0.4:11211", "tcp", "10.0.0.4:11211", "5s", "3s"}},
	} {
		if g := got(c.name, c.i); g != c.want {
			t.Errorf("%s[%d]: %+v, want %+v", c.name, c.i, g, c.want)
		}
	}
	for _, path := range []string{"/v1/services/db", "/v1/services/pg"} {
		if r := call(t, srv, "GET", path, nil); strings.Contains(string(r.body), "pw") {
			t.Fatalf("%s shows a password: %s", path, r.body)
		}
	}
	data := legacyData(t, call(t, srv, "GET", "/service?name=db", nil))
	if !strings.Contains(string(data), `"pass":"pw1"`) {
		t.Fatalf("legacy GET does not echo pass: %s", data)
	}
}

func TestLegacyServiceInvalid(t *testing.T) {
	_, srv := one(t, standalone.Options{MaxBodyBytes: 1 << 20}, scripts)
	legacy(t, call(t, srv, "POST", "/service", `[{"name":"keep","type":"ftp","node":[{"a":1}]}]`), legacyOK)
	// v1.5's message, then what is wrong (": ..."), which names the field.
	cfg := func(name, typ string, i int) string {
		return fmt.Sprintf("invalid config of service: %s, type: %s, node index: %d: ", name, typ, i)
	}
	for _, c := range []struct{ body, want string }{
		{`[{"name":"w","type":"web","node":[{"url":"http://10.0.0.1/"},{"nourl":1}]}]`, cfg("w", "web", 1)},
		{`[{"name":"w","type":"web","node":[{"url":"ftp://10.0.0.1/"}]}]`, cfg("w", "web", 0)},
		{`[{"name":"w","type":"web","node":[{"url":7}]}]`, cfg("w", "web", 0)},
		{`[{"name":"w","type":"web","node":[{"url":"http://10.0.0.1/","priority":"abc"}]}]`, cfg("w", "web", 0)},
		{`[{"name":"w","type":"web","node":[{"url":"http://10.0.0.1/","priority":1.5}]}]`, cfg("w", "web", 0)},
		{`[{"name":"w","type":"web","node":[{"url":"http://10.0.0.1/","priority":null}]}]`, cfg("w", "web", 0)},
		{`[{"name":"w","type":"web","node":[{"url":"http://10.0.0.1/","priority":"-1"}]}]`, cfg("w", "web", 0)},
		{`[{"name":"w","type":"web","node":[{"url":"http://10.0.0.1/","interval":"50"}]}]`, cfg("w", "web", 0)},
		{`[{"name":"w","type":"web","node":[{"url":"http://10.0.0.1/","interval":true}]}]`, cfg("w", "web", 0)},
		{`[{"name":"ok","type":"ftp","node":[]},{"name":"a-b","type":"web","node":[]}]`, cfg("a-b", "web", 0)},
		{`[{"name":"","type":"web","node":[]}]`, cfg("", "web", 0)},
		{`[{"name":"t","type":"tcp","node":[{"host":"10.0.0.1"}]}]`, cfg("t", "tcp", 0)},
		{`[{"name":"t","type":"tcp","node":[{"host":"10.0.0.1","port":"0"}]}]`, cfg("t", "tcp", 0)},
		{`[{"name":"t","type":"tcp","node":[{"host":"10.0.0.1","port":"http"}]}]`, cfg("t", "tcp", 0)},
		{`[{"name":"t","type":"tcp","node":[{"host":"a b","port":"80"}]}]`, cfg("t", "tcp", 0)},
		{`[{"name":"d","type":"mysql","node":[{"host":"10.0.0.1","port":"3306","user":"u","database":"x"}]}]`, cfg("d", "mysql", 0)},
		{`[{"name":"d","type":"pgsql","node":[{"host":"10.0.0.1","port":"5432","user":"u","pass":1,"database":"x"}]}]`, cfg("d", "pgsql", 0)},
		{`[{"name":"c","type":"custom","node":[{"script":""}]}]`, cfg("c", "custom", 0)},
		// Script checks are off by default.
		{`[{"name":"c","type":"custom","node":[{"script":"echo 1"}]}]`, cfg("c", "custom", 0)},
		{`[{"name":"w","type":"web","node":[1]}]`, cfg("w", "web", 0)},
		{`[{"name":"w","type":"web","node":[null]}]`, cfg("w", "web", 0)},
		{`[{"name":"x","type":"x","node":[{},{},{"big":"` + strings.Repeat("b", 70<<10) + `"}]}]`, cfg("x", "x", 2)},
	} {
		r := call(t, srv, "POST", "/service", c.body)
		var ans struct {
			Result  int    `json:"result"`
			Message string `json:"message"`
		}
		if err := json.Unmarshal(r.body, &ans); err != nil || ans.Result != 0 ||
			!strings.HasPrefix(ans.Message, c.want) || len(ans.Message) == len(c.want) {
			t.Errorf("POST %.80s: %s, want the message %q and a reason", c.body, r.body, c.want+"...")
		}
	}
	for body, why := range map[string]string{
		`[{"name":"w","type":"web","node":[{"url":"http://10.0.0.1/","priority":"abc"}]}]`:                   `"priority" must be an integer`,
		`[{"name":"t","type":"tcp","node":[{"host":"10.0.0.1","port":"http"}]}]`:                             `"port" must be a port number`,
		`[{"name":"d","type":"mysql","node":[{"host":"10.0.0.1","port":"3306","user":"u","database":"x"}]}]`: `"pass" is required`,
		`[{"name":"` + strings.Repeat("n", 300) + `","type":"web","node":[]}]`:                               strings.Repeat("n", 200) + "..., type",
	} {
		if r := call(t, srv, "POST", "/service", body); !strings.Contains(string(r.body), strings.ReplaceAll(why, `"`, `\"`)) {
			t.Errorf("POST %.80s: %s, want it to say %s", body, r.body, why)
		}
	}
	// Nothing was written by the refused POSTs, not even their valid parts.
	legacy(t, call(t, srv, "GET", "/service", nil),
		`{"result":1,"message":"ok","data":{"keep":{"name":"keep","type":"ftp","node":[{"a":1}]}}}`)

	// Priority as a string or a number; a port as a number.
	legacy(t, call(t, srv, "POST", "/service", `[{"name":"p","type":"tcp","node":[
		{"host":"10.0.0.1","port":"80","priority":"7"},{"host":"10.0.0.1","port":81,"priority":8}]}]`), legacyOK)
	s := decode[serviceOut](t, call(t, srv, "GET", "/v1/services/p", nil))
	if len(s.Instances) != 2 || s.Instances[0].Priority != 7 || s.Instances[1].Priority != 8 || s.Instances[1].Address != "10.0.0.1:81" {
		t.Fatalf("priorities: %+v", s)
	}

	// Once script checks are on (and the server runs them), a custom node
	// is accepted.
	expect(t, call(t, srv, "PUT", "/v1/settings", `{"script_checks":true}`), 200, "")
	legacy(t, call(t, srv, "POST", "/service", `[{"name":"c","type":"custom","node":[{"script":"echo 1"}]}]`), legacyOK)

	// One write is bounded: each service takes two operations, each node one.
	var nodes []string
	for range 127 {
		nodes = append(nodes, `{}`)
	}
	r := call(t, srv, "POST", "/service", `[{"name":"big","type":"x","node":[`+strings.Join(nodes, ",")+`]}]`)
	if !strings.HasPrefix(string(r.body), `{"result":0,"message":"invalid data type: `) {
		t.Fatalf("too many nodes: %s", r.body)
	}

	const want = `invalid data type: want a JSON array of services, [{"name":"...","type":"...","node":[{...},...]},...]`
	const wantNames = `invalid data type: want a JSON array of service names, ["name",...]`
	for _, c := range []struct{ method, body, msg string }{
		{"POST", `{}`, want},
		{"POST", `null`, want},
		{"POST", `"x"`, want},
		{"POST", `[1]`, want},
		{"POST", `[{"name":1}]`, want},
		{"POST", `[{"name":"a","node":{}}]`, want},
		{"POST", ``, `invalid data type: malformed JSON: empty or cut short`},
		{"POST", `[{"name":"a"`, `invalid data type: malformed JSON: empty or cut short`},
		{"POST", `[] []`, `invalid data type: malformed JSON: data after the first value`},
		{"DELETE", `{"a":1}`, wantNames},
		{"DELETE", `null`, wantNames},
		{"DELETE", `[1]`, wantNames},
		{"PUT", `[`, `invalid data type: malformed JSON: empty or cut short`},
	} {
		legacy(t, call(t, srv, c.method, "/service", c.body), legacyErr(c.msg))
	}
	for _, b := range []string{"\x00\xff", "[\x00]", `[{"node":[{"status":"x"}]}]`, `[{"name":"a","type":"tcp","node":[{"host":1,"port":[]}]}]`,
		`[{"name":"a","type":"mysql","node":[{"host":"h","port":"1","user":"u@)(/","pass":"p@/","database":"d/x"}]}]`,
		`[{"name":"a","type":"web","node":[{"url":"http://[::1"}]}]`, `[{"name":"a","type":"pgsql","node":[{"host":"::1","port":"1","user":"u","pass":"p","database":"d"}]}]`} {
		for _, m := range []string{"POST", "PUT", "DELETE", "GET"} {
			r := call(t, srv, m, "/service", b)
			if r.status != 200 || r.header.Get("Content-Type") != "application/json" {
				t.Fatalf("%s %q: %d %s", m, b, r.status, r.body)
			}
		}
	}
	legacy(t, call(t, srv, "PATCH", "/service", nil), legacyErr("method not allowed: PATCH"))
	legacy(t, call(t, srv, "POST", "/balance", nil), legacyErr("method not allowed: POST"))
}

// GET /service without a name refuses more than 1000 nodes in all, as v1.5 did.
func TestLegacyServicesTooMany(t *testing.T) {
	_, srv := one(t, standalone.Options{})
	post := func(name string, n int) {
		t.Helper()
		nodes := make([]string, n)
		for i := range nodes {
			nodes[i] = fmt.Sprintf(`{"i":%d}`, i)
		}
		legacy(t, call(t, srv, "POST", "/service", fmt.Sprintf(`[{"name":%q,"type":"x","node":[%s]}]`, name, strings.Join(nodes, ","))), legacyOK)
	}
	for i := range 8 {
		post(fmt.Sprintf("s%d", i), 125)
	}
	if r := call(t, srv, "GET", "/service", nil); !strings.HasPrefix(string(r.body), `{"result":1,"message":"ok","data":{"s0":`) {
		t.Fatalf("1000 nodes: %.200s", r.body)
	}
	post("s8", 1)
	legacy(t, call(t, srv, "GET", "/service", nil), legacyErr("too large service size, need a service name to search"))
	if data := legacyData(t, call(t, srv, "GET", "/service?name=s8", nil)); string(data) != `{"name":"s8","type":"x","node":[{"i":0}]}` {
		t.Fatalf("s8: %s", data)
	}
}

// A node without a priority is never balanced to (v1.5 picked only nodes
// with a valid integer priority), even when every other candidate has
// priority 0; nodes that all have priority 0 are picked uniformly.
func TestLegacyBalanceNeedsPriority(t *testing.T) {
	_, srv := one(t, standalone.Options{})
	web := okServer(t)
	node := func(prio string) string {
		if prio == "" {
			return `{"url":"` + web.URL + `/none","interval":"100"}`
		}
		return `{"url":"` + web.URL + `/p` + prio + `","interval":"100","priority":"` + prio + `"}`
	}
	body := `[{"name":"web","type":"web","node":[` + node("") + `,` + node("0") + `,` + node("") + `]},
		{"name":"zero","type":"web","node":[` + node("0") + `,` + node("") + `,` + strings.Replace(node("0"), "/p0", "/q0", 1) + `]},
		{"name":"bare","type":"web","node":[` + node("") + `]}]`
	legacy(t, call(t, srv, "POST", "/service", body), legacyOK)
	eventually(t, "all alive", func() bool {
		for name, nodes := range map[string]int{"web": 3, "zero": 3, "bare": 1} {
			if strings.Count(string(call(t, srv, "GET", "/service?name="+name, nil).body), `"status":1`) != nodes {
				return false
			}
		}
		return true
	})
	seen := map[string]int{}
	for range 60 {
		for _, name := range []string{"web", "zero"} {
			d := legacyData(t, call(t, srv, "GET", "/balance?name="+name, nil))
			var n map[string]any
			if err := json.Unmarshal(d, &n); err != nil {
				t.Fatal(err)
			}
			if _, ok := n["priority"]; !ok {
				t.Fatalf("%s: picked a node without a priority: %s", name, d)
			}
			seen[fmt.Sprint(n["url"])]++
		}
	}
	if seen[web.URL+"/p0"] == 0 || seen[web.URL+"/q0"] == 0 {
		t.Fatalf("priority-0 nodes not both picked: %v", seen)
	}
	legacy(t, call(t, srv, "GET", "/balance?name=bare", nil), legacyErr("no nodes of this service are alive"))
}
