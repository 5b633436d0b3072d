package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// benchJSON runs "dister bench ... -o json" against d and decodes the report.
func benchJSON(t *testing.T, d *daemon, args ...string) benchReport {
	t.Helper()
	args = append([]string{"bench", "-o", "json"}, args...)
	out := cli(t, d, "", nil, args...).ok(t, strings.Join(args, " "))
	var r benchReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%s: %v in %s", strings.Join(args, " "), err, out)
	}
	return r
}

// row is the report's row of op, checked: some ops, no errors, ordered
// percentiles.
func row(t *testing.T, r benchReport, op string) benchRow {
	t.Helper()
	for _, w := range r.Ops {
		if w.Op != op {
			continue
		}
		if w.Count <= 0 || w.Errors != 0 || w.OpsSec <= 0 {
			t.Fatalf("%s row: %+v", op, w)
		}
		if !(w.P50 <= w.P90 && w.P90 <= w.P99 && w.P99 <= w.Max && w.Max > 0) {
			t.Fatalf("%s row: percentiles out of order: %+v", op, w)
		}
		return w
	}
	t.Fatalf("no %s row in %+v", op, r)
	return benchRow{}
}

// keysUnder counts the keys under prefix.
func keysUnder(t *testing.T, d *daemon, prefix string) int {
	t.Helper()
	var ls listAnswer
	out := cli(t, d, "", nil, "kv", "ls", prefix, "-o", "json").ok(t, "kv ls")
	if err := json.Unmarshal([]byte(out), &ls); err != nil {
		t.Fatalf("kv ls: %v in %s", err, out)
	}
	return len(ls.Entries)
}

// TestBench runs every mode of "dister bench" against one daemon, over REST
// and through an in-process client node, for a second or two each.
func TestBench(t *testing.T) {
	d := newDaemon(t, "bench")
	d.start()
	d.waitReady()

	t.Run("put", func(t *testing.T) {
		r := benchJSON(t, d, "--duration", "2s", "--clients", "8", "--keys", "500")
		if r.Via != "rest" || r.Mode != "put" || r.Group != "default" || len(r.Ops) != 1 || r.Interrupted {
			t.Fatalf("report: %+v", r)
		}
		row(t, r, "put")
		if n := keysUnder(t, d, "bench/"); n != 0 {
			t.Fatalf("%d keys left under bench/, want none", n)
		}
	})

	t.Run("keep", func(t *testing.T) {
		benchJSON(t, d, "--duration", "1s", "--clients", "4", "--keys", "50", "--prefix", "kept/", "--keep")
		if n := keysUnder(t, d, "kept/"); n == 0 {
			t.Fatal("no keys under kept/ after --keep")
		}
		// Without --keep, a prefix holding keys is refused: the bench
		// would delete them.
		line := cli(t, d, "", nil, "bench", "--duration", "1s", "--prefix", "kept/").fails(t, "bench on a used prefix", 1)
		if !strings.Contains(line, "--prefix") || !strings.Contains(line, "--keep") {
			t.Errorf("refusal: %s", line)
		}
		if n := keysUnder(t, d, "kept/"); n == 0 {
			t.Fatal("the refused bench deleted the keys")
		}
	})

	t.Run("get stale", func(t *testing.T) {
		r := benchJSON(t, d, "--mode", "get", "--consistency", "stale", "--duration", "1s", "--clients", "8", "--keys", "200")
		if r.Consistency != "stale" || len(r.Ops) != 1 {
			t.Fatalf("report: %+v", r)
		}
		row(t, r, "get")
	})

	t.Run("mix", func(t *testing.T) {
		r := benchJSON(t, d, "--mode", "mix", "--read-ratio", "0.7", "--duration", "1s", "--clients", "8", "--keys", "200")
		put, get := row(t, r, "put"), row(t, r, "get")
		if get.Count < put.Count {
			t.Errorf("--read-ratio 0.7: %d gets, %d puts", get.Count, put.Count)
		}
	})

	t.Run("watch", func(t *testing.T) {
		r := benchJSON(t, d, "--mode", "watch", "--duration", "1s", "--clients", "4")
		put, watch := row(t, r, "put"), row(t, r, "watch")
		if watch.Count > put.Count+int64(r.Clients) {
			t.Errorf("%d watch events for %d puts", watch.Count, put.Count)
		}
	})

	t.Run("table", func(t *testing.T) {
		out := cli(t, d, "", nil, "bench", "--duration", "1s", "--clients", "2").ok(t, "bench table")
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if len(lines) != 3 || !strings.HasPrefix(lines[0], "put via rest, group default: 2 clients") ||
			!strings.HasPrefix(lines[1], "OP ") || !strings.Contains(lines[1], "P99(ms)") || !strings.HasPrefix(lines[2], "put ") {
			t.Fatalf("table:\n%s", out)
		}
	})

	t.Run("via client", func(t *testing.T) {
		peer := d.flag("peer-addr")
		r := benchJSON(t, d, "--via", "client", "--server", peer, "--duration", "1s", "--clients", "8", "--keys", "200")
		if r.Via != "client" {
			t.Fatalf("report: %+v", r)
		}
		row(t, r, "put")
		r = benchJSON(t, d, "--via", "client", "--server", peer, "--mode", "watch", "--duration", "1s", "--clients", "4")
		row(t, r, "put")
		row(t, r, "watch")
		if n := keysUnder(t, d, "bench/"); n != 0 {
			t.Fatalf("%d keys left under bench/, want none", n)
		}
	})

	t.Run("interrupt", func(t *testing.T) {
		p := startCLI(t, d, "bench", "bench", "-o", "json", "--duration", "1m", "--clients", "4")
		time.Sleep(1500 * time.Millisecond)
		p.signal(syscall.SIGINT)
		if code := p.waitExit(20 * time.Second); code != 0 {
			t.Fatalf("exit %d after SIGINT; stderr %q", code, p.ownStderr())
		}
		out, _ := p.logs()
		var r benchReport
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("%v in %q", err, out)
		}
		if !r.Interrupted || r.Elapsed > 30 {
			t.Fatalf("report after SIGINT: %+v", r)
		}
		row(t, r, "put")
		if !strings.Contains(p.ownStderr(), "interrupted") {
			t.Errorf("stderr %q", p.ownStderr())
		}
		if n := keysUnder(t, d, "bench/"); n != 0 {
			t.Fatalf("%d keys left under bench/ after SIGINT, want none", n)
		}
	})
}

// TestBenchUsageErrors: bad flag values exit 2 naming the flag, before
// anything is sent (the address answers nothing).
func TestBenchUsageErrors(t *testing.T) {
	for name, c := range map[string]struct {
		args []string
		flag string
	}{
		"mode":             {[]string{"--mode", "scan"}, "--mode"},
		"via":              {[]string{"--via", "grpc"}, "--via"},
		"consistency":      {[]string{"--mode", "get", "--consistency", "strong"}, "--consistency"},
		"consistency put":  {[]string{"--consistency", "stale"}, "--consistency"},
		"clients":          {[]string{"--clients", "0"}, "--clients"},
		"duration":         {[]string{"--duration", "0s"}, "--duration"},
		"negative":         {[]string{"--duration", "-1s"}, "--duration"},
		"value size":       {[]string{"--value-size", "1048577"}, "--value-size"},
		"watch value size": {[]string{"--mode", "watch", "--value-size", "7"}, "--value-size"},
		"keys":             {[]string{"--keys", "0"}, "--keys"},
		"read ratio":       {[]string{"--mode", "mix", "--read-ratio", "1.5"}, "--read-ratio"},
		"empty prefix":     {[]string{"--prefix", ""}, "--prefix"},
		"server with rest": {[]string{"--server", "127.0.0.1:1"}, "--server"},
		"client no server": {[]string{"--via", "client"}, "--server"},
		"tls with rest":    {[]string{"--tls-ca", "ca.pem"}, "--tls-ca"},
		"output":           {[]string{"-o", "yaml"}, "-o"},
		"not a number":     {[]string{"--clients", "many"}, "--clients"},
	} {
		args := append([]string{"bench", "--addr", "127.0.0.1:1"}, c.args...)
		line := cli(t, nil, "", nil, args...).fails(t, name, 2)
		if !strings.Contains(line, c.flag) {
			t.Errorf("%s: %q does not name %s", name, line, c.flag)
		}
	}
}

// TestBenchHist: the latency buckets are under 1% wide and the
// percentiles fall on the values recorded.
func TestBenchHist(t *testing.T) {
	for _, v := range []int64{0, 1, 127, 128, 255, 256, 1000, 123456, 1 << 40} {
		i := bucketOf(v)
		if top := bucketTop(i); top < v || (v >= histSub && float64(top-v) > 0.01*float64(v)) {
			t.Errorf("value %d: bucket %d tops at %d", v, i, top)
		}
		if i > 0 && bucketTop(i-1) >= v {
			t.Errorf("value %d: the bucket below (%d) tops at %d", v, i-1, bucketTop(i-1))
		}
	}
	var h hist
	for ms := 1; ms <= 100; ms++ {
		h.record(time.Duration(ms) * time.Millisecond)
	}
	for q, want := range map[float64]time.Duration{0.5: 50 * time.Millisecond, 0.9: 90 * time.Millisecond, 0.99: 99 * time.Millisecond, 1: 100 * time.Millisecond} {
		got := h.quantile(q)
		if got < want || float64(got-want) > 0.01*float64(want) {
			t.Errorf("p%v = %v, want %v", q*100, got, want)
		}
	}
	if h.max != 100*time.Millisecond || h.n != 100 {
		t.Errorf("max %v, n %d", h.max, h.n)
	}
}

// TestBenchEveryOpFails: with a read-only token every put is forbidden:
// the report still prints, the first error goes to stderr, and the exit
// code is 1.
func TestBenchEveryOpFails(t *testing.T) {
	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, []byte("read R\nadmin A\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := newDaemon(t, "benchro", "--token-file", tokens)
	d.token = "A"
	d.start()
	d.waitReady()
	r := cli(t, d, "", nil, "bench", "--token", "R", "--duration", "500ms", "--clients", "2", "-o", "json")
	if r.code != 1 || !strings.Contains(r.stderr, "every op failed") || !strings.Contains(r.stderr, "forbidden") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	var rep benchReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || len(rep.Ops) != 1 || rep.Ops[0].Count != 0 || rep.Ops[0].Errors == 0 {
		t.Fatalf("report %+v (%v) in %q", rep, err, r.stdout)
	}
}
