package faults

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The checkers run without Docker: each must accept a correct history and
// catch the defect it exists for.

func TestLinearizableAcceptsAndCatches(t *testing.T) {
	ok := []op{
		{client: 0, kind: opWrite, key: "k", value: "a", out: outOK, rev: 1, call: 0, ret: 10},
		{client: 1, kind: opRead, key: "k", value: "a", out: outOK, call: 11, ret: 20},
		{client: 0, kind: opCAS, key: "k", old: "a", value: "b", ok: true, out: outOK, rev: 2, call: 21, ret: 30},
		{client: 1, kind: opCAS, key: "k", old: "a", value: "c", ok: false, out: outOK, call: 31, ret: 40},
		{client: 2, kind: opWrite, key: "k", value: "d", out: outUnknown, call: 41, ret: 50},
		{client: 1, kind: opRead, key: "k", value: "d", out: outOK, call: 60, ret: 70},
		{client: 3, kind: opWrite, key: "j", value: "x", out: outFail, call: 0, ret: 5},
		{client: 3, kind: opRead, key: "j", value: "", out: outOK, call: 6, ret: 7},
	}
	dir := t.TempDir()
	if res, err := checkLinearizable(ok, nil, dir, "ok"); err != nil || res.ops != 7 || res.unknown != 1 {
		t.Fatalf("a linearizable history: %+v, %v", res, err)
	}
	// The watch says "d" applied at revision 3: settled, still fine.
	if res, err := checkLinearizable(ok, applied{"a": 1, "b": 2, "d": 3}, dir, "ok"); err != nil || res.resolved != 1 || res.unknown != 0 {
		t.Fatalf("with the watch: %+v, %v", res, err)
	}
	// The watch never saw "d": then the read of "d" is impossible.
	if _, err := checkLinearizable(ok, applied{"a": 1, "b": 2}, dir, "dropped"); err == nil {
		t.Fatal("a read of a write that never applied passed")
	}
	stale := append([]op(nil), ok[:3]...)
	stale = append(stale, op{client: 1, kind: opRead, key: "k", value: "a", out: outOK, call: 35, ret: 40})
	_, err := checkLinearizable(stale, nil, dir, "stale")
	if err == nil {
		t.Fatal("a stale read passed")
	}
	for _, f := range []string{"stale-linearizability.html", "stale-history.txt"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("the violation left no %s: %v", f, err)
		}
	}
	// A failed write that a read observed: the 503 lied.
	lied := []op{
		{client: 0, kind: opWrite, key: "k", value: "a", out: outFail, call: 0, ret: 10},
		{client: 1, kind: opRead, key: "k", value: "a", out: outOK, call: 11, ret: 20},
	}
	if _, err := checkLinearizable(lied, nil, dir, "lied"); err == nil {
		t.Fatal("a read of a failed write passed")
	}
}

func TestSessionsCatch(t *testing.T) {
	good := []op{
		{client: 0, kind: opWrite, key: "k", value: "a", out: outOK, rev: 5, hdr: 5, call: 0, ret: 1},
		{client: 0, kind: opSessionRead, key: "k", value: "a", out: outOK, rev: 5, hdr: 7, floor: 5, call: 2, ret: 3},
	}
	if n, bad := checkSessions(good); n != 1 || len(bad) != 0 {
		t.Fatalf("good sessions: %d %v", n, bad)
	}
	below := []op{good[0], {client: 0, kind: opSessionRead, key: "k", value: "", out: outOK, rev: 0, hdr: 4, floor: 5, call: 2, ret: 3}}
	if _, bad := checkSessions(below); len(bad) != 2 {
		t.Fatalf("a read below its floor that misses the own write: %v", bad)
	}
}

func TestWatchCatches(t *testing.T) {
	h := []op{
		{kind: opWrite, key: "reg/k", value: "a", out: outOK, rev: 1},
		{kind: opWrite, key: "reg/k", value: "b", out: outOK, rev: 2},
		{kind: opWrite, key: "reg/k", value: "c", out: outFail},
		{kind: opWrite, key: "reg/k", value: "d", out: outUnknown},
	}
	in := func(k string) bool { return strings.HasPrefix(k, "reg/") }
	seen, bad := checkWatch(h, []watchEvent{{rev: 1, key: "reg/k", value: "a"}, {rev: 2, key: "reg/k", value: "b"}, {rev: 3, key: "reg/k", value: "d"}}, in)
	if len(bad) != 0 || seen["d"] != 3 {
		t.Fatalf("a complete watch: %v %v", seen, bad)
	}
	cases := map[string][]watchEvent{
		"missing": {{rev: 1, key: "reg/k", value: "a"}},
		"twice":   {{rev: 1, key: "reg/k", value: "a"}, {rev: 2, key: "reg/k", value: "b"}, {rev: 2, key: "reg/k", value: "b"}},
		"order":   {{rev: 2, key: "reg/k", value: "b"}, {rev: 1, key: "reg/k", value: "a"}},
		"failed":  {{rev: 1, key: "reg/k", value: "a"}, {rev: 2, key: "reg/k", value: "b"}, {rev: 3, key: "reg/k", value: "c"}},
		"unknown": {{rev: 1, key: "reg/k", value: "a"}, {rev: 2, key: "reg/k", value: "b"}, {rev: 3, key: "reg/k", value: "zz"}},
		"rev":     {{rev: 1, key: "reg/k", value: "a"}, {rev: 3, key: "reg/k", value: "b"}},
	}
	for name, evs := range cases {
		if _, bad := checkWatch(h, evs, in); len(bad) == 0 {
			t.Errorf("%s: not caught", name)
		}
	}
}

func TestAckedCatches(t *testing.T) {
	v := "a"
	acked := []ackWrite{{key: "ack/1", value: "a", rev: 3}, {key: "ack/2", value: "b", rev: 4}}
	if bad := checkAcked(acked, map[string]entryJSON{"ack/1": {Key: "ack/1", Value: &v, ModRevision: 3}}); len(bad) != 1 {
		t.Fatalf("one lost write: %v", bad)
	}
}
