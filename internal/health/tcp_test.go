package health

import (
	"context"
	"net"
	"strings"
	"testing"
)

func TestTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	p := newProber(t, Options{})
	if r := p.Probe(context.Background(), Check{Type: TypeTCP, Target: addr}); r.Status != Passing {
		t.Fatalf("open port: %v %q", r.Status, r.Output)
	}
	ln.Close()
	r := p.Probe(context.Background(), Check{Type: TypeTCP, Target: addr})
	if r.Status != Critical || !strings.Contains(r.Output, "refused") {
		t.Fatalf("closed port: %v %q", r.Status, r.Output)
	}
}

func TestInvalidCheckIsCriticalNotPanic(t *testing.T) {
	p := newProber(t, Options{})
	for _, c := range []Check{{}, {Type: "nope", Target: "x"}, {Type: TypeTCP, Target: "x"}, {Type: TypeMySQL, Target: "@@@"}} {
		if r := p.Probe(context.Background(), c); r.Status != Critical || r.Output == "" {
			t.Errorf("Probe(%+v) = %v %q", c, r.Status, r.Output)
		}
	}
}
