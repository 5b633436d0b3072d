package shard

import (
	"errors"
	"testing"
)

// TestConnFailureOnce: dragonboat's per-retry connection failures are
// logged once per remote and failure, again for a new failure, and again
// after a connection to that remote succeeded.
func TestConnFailureOnce(t *testing.T) {
	const f = "Nodehost %s failed to get a connection to %s, %v"
	refused := errors.New("remote error: tls: unknown certificate authority")
	args := []any{"127.0.0.1:1", "10.9.9.9:4166", refused}
	if repeatedConnFailure(f, args) {
		t.Fatal("the first failure was suppressed")
	}
	if !repeatedConnFailure(f, args) {
		t.Fatal("the same failure was logged twice")
	}
	other := []any{"127.0.0.1:1", "10.9.9.9:4166", errors.New("connection refused")}
	if repeatedConnFailure(f, other) {
		t.Fatal("a new failure was suppressed")
	}
	connEstablished("10.9.9.9:4166")
	if repeatedConnFailure(f, other) {
		t.Fatal("a failure after a success was suppressed")
	}
	if repeatedConnFailure("%s became unreachable, affected %d nodes", []any{"a", 1, 2}) {
		t.Fatal("another message was suppressed")
	}
}
