package main

import (
	"strings"
	"testing"
	"time"
)

// TestFreshDaemonQuiet: a new user's first daemon, at the default log
// level, prints no WARN or ERROR line in its first five seconds while it
// elects itself and serves writes, reads of every consistency and a watch.
func TestFreshDaemonQuiet(t *testing.T) {
	d := newDaemon(t, "quiet")
	// newDaemon asks for --log-level warn; this test wants the default.
	for i, a := range d.args {
		if a == "--log-level" {
			d.args = append(d.args[:i:i], d.args[i+2:]...)
			break
		}
	}
	start := time.Now()
	d.start()
	d.waitReady()
	d.mustJSONCall("PUT", "/v1/kv/app/db/url", []byte("postgres://db:5432"), nil)
	for _, c := range []string{"linearizable", "session", "stale"} {
		d.mustJSONCall("GET", "/v1/kv/app/db/url?consistency="+c, nil, nil)
	}
	d.mustJSONCall("GET", "/v1/kv?prefix=app/", nil, nil)
	if code, body, err := d.do("PUT", "/v1/groups/billing", nil); err != nil || code/100 != 2 {
		t.Fatalf("create group billing: %d %s %v", code, body, err)
	}
	d.mustJSONCall("PUT", "/v1/kv/x?group=billing", []byte("1"), nil)
	if rest := 5*time.Second - time.Since(start); rest > 0 {
		time.Sleep(rest)
	}
	_, stderr := d.logs()
	for _, line := range strings.Split(stderr, "\n") {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			t.Errorf("a fresh daemon logged: %s", line)
		}
	}
	if !strings.Contains(stderr, "level=INFO") {
		t.Errorf("nothing at INFO: is the default level still info? stderr:\n%s", stderr)
	}
}
