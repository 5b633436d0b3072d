package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestCLIServices runs the service commands, new and v1.5, against one
// running daemon.
func TestCLIServices(t *testing.T) {
	d := newDaemon(t, "svc")
	d.start()
	d.waitReady()
	run := func(args ...string) cliResult { return cli(t, d, "", nil, args...) }

	t.Run("v1", func(t *testing.T) {
		want(t, "ls empty", run("service", "ls").ok(t, "ls"), "NAME  INSTANCES  PASSING\n")
		want(t, "register", run("service", "register", "web", "i1", "--address", "10.0.0.1:80", "--priority", "3",
			"--tag", "a", "--tag", "b", "--meta", "zone=eu", "--meta", "rack=r=1").ok(t, "register"),
			"instance web/i1 registered (passing)\n")
		want(t, "register ttl", run("service", "register", "web", "i2", "--address", "10.0.0.2:80",
			"--check-type", "ttl", "--check-ttl", "30s", "--deregister-critical-after", "1h").ok(t, "register ttl"),
			"instance web/i2 registered (passing)\n")
		want(t, "heartbeat", run("service", "heartbeat", "web", "i2").ok(t, "heartbeat"), "instance web/i2 kept alive\n")
		wantMatch(t, "heartbeat of a plain instance", run("service", "heartbeat", "web", "i1").fails(t, "heartbeat i1", 1),
			`^dister: service heartbeat web/i1: .*\(invalid\)$`)

		wantMatch(t, "get", run("service", "get", "web").ok(t, "get"),
			`^ID +ADDRESS +PRIORITY +STATUS +CHECK +TAGS\ni1 +10\.0\.0\.1:80 +3 +passing +- +a,b\ni2 +10\.0\.0\.2:80 +0 +passing +ttl +\n$`)
		var ans struct {
			Service   string     `json:"service"`
			Instances []instance `json:"instances"`
		}
		if err := json.Unmarshal([]byte(run("service", "get", "web", "--passing", "-o", "json").ok(t, "get json")), &ans); err != nil ||
			ans.Service != "web" || len(ans.Instances) != 2 || ans.Instances[0].Meta["rack"] != "r=1" ||
			ans.Instances[1].Check == nil || ans.Instances[1].Check.TTL != "30s" || ans.Instances[1].Check.DeregisterCriticalAfter != "1h0m0s" {
			t.Fatalf("get -o json: %+v %v", ans, err)
		}
		want(t, "ls", run("service", "ls").ok(t, "ls"), "NAME  INSTANCES  PASSING\nweb   2          2\n")

		var picked instance
		out := run("balance", "web", "--strategy", "round_robin", "-o", "addr").ok(t, "balance -o addr")
		if !strings.HasSuffix(out, "\n") || strings.Count(out, "\n") != 1 || strings.ContainsAny(out, "{ ") {
			t.Errorf("balance -o addr: %q, want one address line", out)
		}
		wantMatch(t, "balance -o table", run("balance", "web", "--key", "u", "-o", "table").ok(t, "balance -o table"),
			`^ID +ADDRESS +PRIORITY +STATUS +CHECK +TAGS\n\S+ +\S+ +[0-9]+ +\S+ +\S+.*\n$`)
		if err := json.Unmarshal([]byte(run("balance", "web", "--strategy", "round_robin").ok(t, "balance rr")), &picked); err != nil ||
			(picked.ID != "i1" && picked.ID != "i2") {
			t.Fatalf("balance --strategy round_robin: %+v %v", picked, err)
		}
		if err := json.Unmarshal([]byte(run("balance", "web", "--key", "user-1").ok(t, "balance hash")), &picked); err != nil || picked.ID == "" {
			t.Fatalf("balance --key: %+v %v", picked, err)
		}
		wantMatch(t, "balance none", run("balance", "nosuch", "--strategy", "priority").fails(t, "balance none", 1),
			`^dister: balance "nosuch": .*\(no_instance\)$`)

		want(t, "deregister", run("service", "deregister", "web", "i1").ok(t, "deregister"), "instance web/i1 deregistered\n")
		want(t, "deregister again", run("service", "deregister", "web", "i1").fails(t, "deregister again", 1),
			"dister: service deregister web/i1: not found")

		want(t, "settings", run("settings").ok(t, "settings"), "script_checks: false\n")
		want(t, "settings on", run("settings", "--script-checks=true").ok(t, "settings on"), "script_checks: true\n")
		// A bool flag takes its value with "=": "false" here is an argument.
		run("settings", "--script-checks", "false").fails(t, "settings with a separate value", 2)
		want(t, "settings off", run("settings", "--script-checks=false").ok(t, "settings off"), "script_checks: false\n")

		wantMatch(t, "flag names in errors", run("service", "register", "web", "i9", "--address", "10.0.0.9:80",
			"--check-type", "tcp", "--check-target", "10.0.0.9:80", "--check-interval", "1ms").fails(t, "register 1ms", 1),
			`--check-interval 1ms outside`)
		for _, args := range [][]string{
			{"service"}, {"service", "register", "web"}, {"service", "register", "web", "x", "--meta", "novalue"},
			{"service", "register", "web", "x", "--check-interval", "1s"}, {"service", "get"},
			{"balance"}, {"balance", "web", "--strategy", "hash"}, {"settings", "extra"},
		} {
			run(args...).fails(t, strings.Join(args, " "), 2)
		}
	})

	t.Run("legacy", func(t *testing.T) {
		web := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
		defer web.Close()
		file := filepath.Join(t.TempDir(), "services.json")
		config := `[
			{"name": "site", "type": "web", "node": [{"url": "` + web.URL + `/health", "priority": "100", "interval": "200", "owner": "ops"}]},
			{"name": "misc", "type": "ftp", "node": [{"host": "10.0.0.1", "port": "21", "priority": "1"}]}
		]`
		if err := os.WriteFile(file, []byte(config), 0o644); err != nil {
			t.Fatal(err)
		}
		want(t, "addservice", run("addservice", file).ok(t, "addservice"), "ok\n")
		want(t, "getservice misc", run("getservice", "misc").ok(t, "getservice"), `{
    "name": "misc",
    "type": "ftp",
    "node": [
        {
            "host": "10.0.0.1",
            "port": "21",
            "priority": "1"
        }
    ]
}
`)
		// The web node turns alive once the leader checked it.
		deadline := time.Now().Add(15 * time.Second)
		var out string
		for {
			r := run("balance", "site")
			if r.code == 0 {
				out = r.stdout
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("balance site: %+v", r)
			}
			time.Sleep(100 * time.Millisecond)
		}
		want(t, "balance", out, `{
    "interval": "200",
    "owner": "ops",
    "priority": "100",
    "status": 1,
    "url": "`+web.URL+`/health"
}
`)
		want(t, "balance -o addr", run("balance", "site", "-o", "addr").ok(t, "balance -o addr"), web.URL+"/health\n")
		wantMatch(t, "balance -o table", run("balance", "site", "-o", "table").ok(t, "balance -o table"),
			`^SERVICE +TYPE +NODE +ADDRESS +PRIORITY +STATUS\nsite +0 +`+regexp.QuoteMeta(web.URL)+`/health +100 +alive\n$`)
		wantMatch(t, "getservice -o table", run("getservice", "misc", "-o", "table").ok(t, "getservice -o table"),
			`^SERVICE +TYPE +NODE +ADDRESS +PRIORITY +STATUS\nmisc +ftp +0 +10\.0\.0\.1:21 +1 +unchecked\n$`)
		wantMatch(t, "services -o table", run("services", "-o", "table").ok(t, "services -o table"),
			`^SERVICE .*\nmisc +ftp .*\nsite +web +0 .* alive\n`)
		if err := json.Unmarshal([]byte(run("getservice", "misc", "-o", "json").ok(t, "getservice -o json")), new(map[string]any)); err != nil {
			t.Errorf("getservice -o json: %v", err)
		}
		want(t, "-o addr elsewhere", run("getservice", "misc", "-o", "addr").fails(t, "getservice -o addr", 2),
			"dister: -o addr is for balance only; dister getservice takes -o table or -o json")
		want(t, "delservice missing", run("delservice", "nosuch,misc").fails(t, "delservice missing", 1),
			`dister: delservice: no service named "nosuch" (removed misc)`)
		want(t, "delservice missing only", run("delservice", "misc").fails(t, "delservice missing only", 1),
			`dister: delservice: no service named "misc"`)
		run("addservice", file).ok(t, "addservice again")
		want(t, "balance misc", run("balance", "misc").fails(t, "balance misc", 1),
			`dister: balance "misc": no nodes of this service are alive`)
		want(t, "balance nosuch", run("balance", "nosuch").fails(t, "balance nosuch", 1),
			`dister: balance "nosuch": no service named 'nosuch'`)
		var all map[string]struct {
			Name string           `json:"name"`
			Type string           `json:"type"`
			Node []map[string]any `json:"node"`
		}
		if err := json.Unmarshal([]byte(run("services").ok(t, "services")), &all); err != nil ||
			all["site"].Type != "web" || all["misc"].Type != "ftp" || all["site"].Node[0]["status"] != float64(1) {
			t.Fatalf("services: %+v %v", all, err)
		}
		want(t, "delservice", run("delservice", "site,,misc").ok(t, "delservice"), "ok\n")
		want(t, "getservice gone", run("getservice", "site").fails(t, "getservice gone", 1), `dister: getservice "site": service not found`)
		run("addservice", filepath.Join(t.TempDir(), "nosuch.json")).fails(t, "addservice missing file", 1)
		bad := filepath.Join(t.TempDir(), "bad.json")
		if err := os.WriteFile(bad, []byte(`[{"name":"w","type":"web","node":[{"url":"http://10.0.0.1/"},{}]}]`), 0o644); err != nil {
			t.Fatal(err)
		}
		want(t, "addservice invalid", run("addservice", bad).fails(t, "addservice invalid", 1),
			"dister: addservice "+bad+`: invalid config of service: w, type: web, node index: 1: "url" must be an http or https URL (a JSON string)`)
		run("delservice", ",").fails(t, "delservice nothing", 2)
	})
}
