package fsm

import (
	"reflect"
	"testing"
)

// The reserved namespace is invisible to the empty prefix: a list of every
// key and a delete of every key leave it alone, and its changes move
// ReservedGeneration while client keys do not.
func TestReservedNamespaceIsolation(t *testing.T) {
	h := newHarness(t, Options{})
	gen := h.sm.ReservedGeneration()
	h.apply(putCmd("a", "1"), putCmd("b", "2"))
	if h.sm.ReservedGeneration() != gen {
		t.Fatal("client keys moved ReservedGeneration")
	}
	h.apply(putCmd("\x00svc/web/1", "inst"))
	if h.sm.ReservedGeneration() == gen {
		t.Fatal("a reserved put did not move ReservedGeneration")
	}
	if got := listKeys(h.list(ListQuery{})); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Fatalf("list of every key = %q, want the client keys only", got)
	}
	if got := listKeys(h.list(ListQuery{Prefix: ReservedPrefix})); !reflect.DeepEqual(got, []string{"\x00svc/web/1"}) {
		t.Fatalf("list of the reserved prefix = %q", got)
	}
	res := h.apply(delPrefixCmd(""))
	if res[0].Ops[0].Deleted != 2 {
		t.Fatalf("delete of every key removed %d, want 2", res[0].Ops[0].Deleted)
	}
	if !h.get("\x00svc/web/1").Found {
		t.Fatal("delete of every client key removed a reserved key")
	}
}

func TestValidateUserKeyRejectsReserved(t *testing.T) {
	if err := ValidateUserKey("\x00svc/x", false); err == nil {
		t.Fatal("a reserved key passed as a client key")
	}
	if err := RejectReserved(&Txn{Compares: []Compare{{Key: "\x00x", Target: TargetVersion, Op: OpEqual}}}); err == nil {
		t.Fatal("a compare on a reserved key passed as a client txn")
	}
	if err := RejectReserved(&Txn{Else: []Op{{Type: OpDeletePrefix, Key: "\x00"}}}); err == nil {
		t.Fatal("a reserved prefix delete passed as a client txn")
	}
	if err := ValidateUserKey("a/b", false); err != nil {
		t.Fatal(err)
	}
}
