package health

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

// TestTargetPolicyAtDialTime: by default a probe may reach anything but
// link-local addresses (cloud metadata services live there); with a list,
// only what it names. Before the policy existed the prober dialled
// 169.254.169.254 like any other address.
func TestTargetPolicyAtDialTime(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	local := ln.Addr().String()
	_, port, _ := net.SplitHostPort(local)

	def := newProber(t, Options{})
	for _, c := range []Check{
		{Type: TypeTCP, Target: "169.254.169.254:80", Timeout: time.Second},
		{Type: TypeHTTP, Target: "http://169.254.169.254/latest/meta-data/", Timeout: time.Second},
		{Type: TypeTCP, Target: "[fe80::1%lo]:80", Timeout: time.Second},
	} {
		r := def.Probe(context.Background(), c)
		if r.Status != Critical || !strings.Contains(r.Output, "not allowed") {
			t.Errorf("%s %s with the default policy: %v %q, want critical \"not allowed\"", c.Type, c.Target, r.Status, r.Output)
		}
	}
	if r := def.Probe(context.Background(), Check{Type: TypeTCP, Target: local}); r.Status != Passing {
		t.Errorf("loopback with the default policy: %v %q", r.Status, r.Output)
	}

	only, err := ParseTargets([]string{"10.0.0.0/8", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	p := newProber(t, Options{Targets: only})
	if r := p.Probe(context.Background(), Check{Type: TypeTCP, Target: local}); r.Status != Critical || !strings.Contains(r.Output, "not allowed") {
		t.Errorf("127.0.0.1 outside the list: %v %q", r.Status, r.Output)
	}
	if r := p.Probe(context.Background(), Check{Type: TypeTCP, Target: "localhost:" + port}); r.Status != Passing {
		t.Errorf("a listed host: %v %q", r.Status, r.Output)
	}
	for _, bad := range []string{"", "10.0.0.0/33", "a b", "300.1.1.1/8"} {
		if _, err := ParseTargets([]string{bad}); err == nil {
			t.Errorf("ParseTargets(%q) accepted", bad)
		}
	}
}
