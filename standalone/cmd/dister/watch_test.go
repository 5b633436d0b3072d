package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startCLI runs a client command in the background against d, as a
// process with its output in files; t.Cleanup kills it.
func startCLI(t *testing.T, d *daemon, name string, args ...string) *daemon {
	t.Helper()
	dir := t.TempDir()
	p := &daemon{t: t, name: name, dir: dir, env: []string{"DISTER_ADDR=" + d.httpAddr},
		stdoutPath: filepath.Join(dir, "stdout.log"), stderrPath: filepath.Join(dir, "stderr.log")}
	t.Cleanup(p.kill)
	p.startArgs(args...)
	return p
}

// ownStderr is what the process wrote to stderr, without the line that
// startArgs puts first.
func (d *daemon) ownStderr() string {
	_, e := d.logs()
	_, rest, _ := strings.Cut(e, "\n")
	return rest
}

// waitLines waits until the process printed at least n lines and returns
// them.
func (d *daemon) waitLines(n int) []string {
	d.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, _ := d.logs()
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if out == "" {
			lines = nil
		}
		if len(lines) >= n {
			return lines
		}
		if time.Now().After(deadline) || !d.running() {
			d.t.Fatalf("%s printed %d lines, want %d: %q (stderr %q)", d.name, len(lines), n, out, d.ownStderr())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitStreams polls the daemon's /metrics until n watch streams are open.
func (d *daemon) waitStreams(n int) {
	d.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body, err := d.do("GET", "/metrics", nil)
		if err == nil && code == http.StatusOK && strings.Contains(string(body), fmt.Sprintf("\ndister_http_watch_streams %d\n", n)) {
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("%s never had %d watch streams open", d.name, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// revisionIn reads the revision from an "OK revision N ..." or
// "deleted K (revision N)" line.
func revisionIn(t *testing.T, out string) int64 {
	t.Helper()
	m := regexp.MustCompile(`revision (\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no revision in %q", out)
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return n
}

func wantLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("%s: got\n%s\nwant\n%s", what, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestCLIWatch: "kv watch" prints the writes made meanwhile, goes on
// across a restart of the daemon with nothing lost or repeated, and exits
// 0 on SIGINT.
func TestCLIWatch(t *testing.T) {
	d := newDaemon(t, "watch")
	d.start()
	d.waitReady()
	run := func(args ...string) cliResult { return cli(t, d, "", nil, args...) }

	w := startCLI(t, d, "watcher", "kv", "watch", "app/")
	d.waitStreams(1)
	r1 := revisionIn(t, run("kv", "put", "app/a", "1").ok(t, "put"))
	run("kv", "put", "other/x", "1").ok(t, "put outside the prefix")
	r2 := revisionIn(t, run("kv", "put", "app/a", "two words\n").ok(t, "put"))
	r3 := revisionIn(t, run("kv", "del", "app/a").ok(t, "del"))
	out := run("kv", "put", "app/l", "x", "--ttl", "10s").ok(t, "put --ttl")
	wantMatch(t, "put --ttl", out, `^OK revision \d+ \(lease \d+\)\n$`)
	want := []string{
		fmt.Sprintf("PUT app/a = 1 (rev %d)", r1),
		fmt.Sprintf(`PUT app/a = two words\n (rev %d)`, r2),
		fmt.Sprintf("DELETE app/a (rev %d)", r3),
		fmt.Sprintf("PUT app/l = x (rev %d)", revisionIn(t, out)),
	}
	wantLines(t, "watch", w.waitLines(len(want)), want)

	// The daemon ends the stream at once on SIGTERM rather than wait out
	// its shutdown timeout; the watch resumes once it is back, and gets
	// what was written before it reconnected from the history.
	began := time.Now()
	d.stop()
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("SIGTERM with a watch stream open took %v", took)
	}
	d.start()
	d.waitReady()
	want = append(want, fmt.Sprintf("PUT app/b = 2 (rev %d)", putRetry(t, d, "app/b", "2")))
	wantLines(t, "after the restart", w.waitLines(len(want)), want)
	d.waitStreams(1)
	want = append(want, fmt.Sprintf("PUT app/c = 3 (rev %d)", putRetry(t, d, "app/c", "3")))
	wantLines(t, "after reconnecting", w.waitLines(len(want)), want)

	w.signal(syscall.SIGINT)
	if code := w.waitExit(10 * time.Second); code != 0 || w.ownStderr() != "" {
		t.Fatalf("watch after SIGINT: exit %d, stderr %q", code, w.ownStderr())
	}

	// -o json, --from and --prev: the history from r1 on, as JSON lines.
	j := startCLI(t, d, "json", "kv", "watch", "app/a", "--from", strconv.FormatInt(r1, 10), "--prev", "-o", "json")
	lines := j.waitLines(3)
	var evs []watchEvent
	for _, l := range lines {
		var ev watchEvent
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		evs = append(evs, ev)
	}
	if len(evs) != 3 || evs[0].Type != "put" || evs[0].Revision != r1 || evs[0].Prev != nil ||
		evs[1].Prev == nil || *evs[1].Prev.Value != "1" ||
		evs[2].Type != "delete" || evs[2].Revision != r3 || evs[2].Prev == nil || *evs[2].Prev.Value != "two words\n" {
		t.Fatalf("kv watch -o json --prev:\n%s", strings.Join(lines, "\n"))
	}
	j.signal(syscall.SIGINT)
	if code := j.waitExit(10 * time.Second); code != 0 {
		t.Fatalf("json watch after SIGINT: exit %d, stderr %q", code, j.ownStderr())
	}

	want2 := `dister: kv watch "app/": group "nope" not found`
	if line := run("kv", "watch", "app/", "--group", "nope").fails(t, "watch in no group", 1); line != want2 {
		t.Errorf("watch in no group: %q, want %q", line, want2)
	}
	run("kv", "watch", "--from", "-1").fails(t, "watch --from -1", 2)
	run("kv", "watch", "a", "b").fails(t, "watch two prefixes", 2)
}

// TestWatchStream runs kv watch in-process against a scripted server: it
// resumes after X-Dister-Revision, after the last id, and through a 503;
// a revision cut by a dropped connection is printed once; an error event
// and a 410 end it with exit code 1.
func TestWatchStream(t *testing.T) {
	var (
		mu      sync.Mutex
		lastIDs []string
	)
	ev := func(event, id, data string) string {
		if id != "" {
			id = "id: " + id + "\n"
		}
		return "event: " + event + "\n" + id + "data: " + data + "\n\n"
	}
	put := func(key, value string, rev int) string {
		return fmt.Sprintf(`{"type":"put","key":%q,"value":%q,"create_revision":%d,"mod_revision":%d,"version":1,"lease":0,"revision":%d}`,
			key, value, rev, rev, rev)
	}
	script := []func(w http.ResponseWriter){
		func(w http.ResponseWriter) { // from now, dropped before any event
			w.Header().Set("X-Dister-Revision", "10")
		},
		func(w http.ResponseWriter) {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"error":{"code":"no_quorum","message":"no leader"}}`)
		},
		func(w http.ResponseWriter) { // revision 12 cut after its first event
			io.WriteString(w, ev("put", "11", put("p/a", "1", 11))+ev("put", "", put("p/b", "2", 12)))
		},
		func(w http.ResponseWriter) {
			io.WriteString(w, ev("put", "", put("p/b", "2", 12))+ev("put", "12", put("p/c", "3", 12))+
				ev("progress", "13", `{"type":"progress","revision":13}`)+ev("ping", "", "{}")+
				ev("error", "", `{"code":"watch_overflow","message":"watch \"p/\": fell behind: dister: watch overflow"}`))
		},
		func(w http.ResponseWriter) {
			w.WriteHeader(http.StatusGone)
			io.WriteString(w, `{"error":{"code":"compacted","message":"watch: dister: compacted","compact_revision":500}}`)
		},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n := len(lastIDs)
		lastIDs = append(lastIDs, r.Header.Get("Last-Event-ID"))
		mu.Unlock()
		if r.URL.Path != "/v1/watch" || r.URL.Query().Get("prefix") != "p/" || n >= len(script) {
			http.Error(w, "unexpected "+r.URL.String(), http.StatusTeapot)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		script[n](w)
	}))
	defer srv.Close()
	noEnv := func(string) string { return "" }
	runWatch := func(args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		code := run(ctx, append([]string{"kv", "watch", "p/", "--addr", srv.URL}, args...), nil, &stdout, &stderr, noEnv)
		return code, stdout.String(), stderr.String()
	}

	code, stdout, stderr := runWatch("--progress")
	want := "PUT p/a = 1 (rev 11)\nPUT p/b = 2 (rev 12)\nPUT p/c = 3 (rev 12)\nPROGRESS (rev 13)\n"
	if code != 1 || stdout != want || stderr != "dister: kv watch \"p/\": watch \"p/\": fell behind (watch_overflow)\n" {
		t.Fatalf("exit %d\nstdout %q\nwant   %q\nstderr %q", code, stdout, want, stderr)
	}
	if got := strings.Join(lastIDs, ","); got != ",10,10,11" {
		t.Fatalf("Last-Event-ID of each request: %q", got)
	}

	code, stdout, stderr = runWatch()
	if code != 1 || stdout != "" || stderr != "dister: kv watch \"p/\": the history before revision 500 is compacted: start at --from 500 or later (compacted)\n" {
		t.Fatalf("410: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	// The first connection is not retried: a wrong address fails at once.
	var stdoutB, stderrB bytes.Buffer
	code = run(context.Background(), []string{"kv", "watch", "--addr", freeAddr(t)}, nil, &stdoutB, &stderrB, noEnv)
	if code != 1 || !strings.Contains(stderrB.String(), "cannot reach the dister daemon") {
		t.Fatalf("unreachable: exit %d, stderr %q", code, stderrB.String())
	}
}
