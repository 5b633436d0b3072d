package standalone_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
	"github.com/dister/dister/standalone"
)

// wantEvent is an event a stream must deliver.
type wantEvent struct {
	typ, key string
	value    string // put only
	rev      int64
	last     bool // last of its revision: carries id
}

// check compares a received event with w.
func (w wantEvent) check(t testing.TB, ev sseEvent) {
	t.Helper()
	id := ""
	if w.last {
		id = strconv.FormatInt(w.rev, 10)
	}
	if ev.event != w.typ || ev.id != id {
		t.Fatalf("event %s id %q data %s; want %s %q at %d with id %q", ev.event, ev.id, ev.data, w.typ, w.key, w.rev, id)
	}
	m := ev.json(t)
	if m["type"] != w.typ || m["key"] != w.key || m["revision"] != float64(w.rev) || m["mod_revision"] != float64(w.rev) {
		t.Fatalf("data %s; want %s %q at %d", ev.data, w.typ, w.key, w.rev)
	}
	_, hasValue := m["value"]
	switch {
	case w.typ == "delete" && (hasValue || m["value_base64"] != nil):
		t.Fatalf("delete with a value: %s", ev.data)
	case w.typ == "put" && m["value"] != w.value:
		t.Fatalf("put value: %s; want %q", ev.data, w.value)
	}
}

// putREST writes through srv and returns the revision.
func putREST(t testing.TB, srv *httptest.Server, key, value string) int64 {
	t.Helper()
	r := call(t, srv, "PUT", "/v1/kv/"+key, value)
	expect(t, r, 200, "")
	return revision(t, r)
}

// TestWatchSSE: a plain HTTP client gets every event under its prefix in
// order, one id per revision; it hangs up mid-stream, writes go on, and a
// reconnect with Last-Event-ID gets exactly what it did not see.
func TestWatchSSE(t *testing.T) {
	_, srv := one(t, standalone.Options{})
	putREST(t, srv, "w/old", "before")
	st := openSSE(t, srv, "/v1/watch?prefix=w/")
	start := st.startRevision(t)

	var want []wantEvent
	for i := range 5 {
		key, value := fmt.Sprintf("w/k%d", i), fmt.Sprintf("v%d", i)
		want = append(want, wantEvent{"put", key, value, putREST(t, srv, key, value), true})
		putREST(t, srv, "x/other", value) // outside the prefix
	}
	// A transaction: several events in one revision, id on the last only.
	r := call(t, srv, "POST", "/v1/txn", `{"then":[
		{"op":"put","key":"w/t/a","value":"1"},{"op":"put","key":"w/t/b","value":"2"},
		{"op":"put","key":"x/t","value":"3"},{"op":"put","key":"w/t/c","value":"4"}]}`)
	expect(t, r, 200, "")
	rev := revision(t, r)
	want = append(want, wantEvent{"put", "w/t/a", "1", rev, false}, wantEvent{"put", "w/t/b", "2", rev, false},
		wantEvent{"put", "w/t/c", "4", rev, true})
	// A prefix delete: one revision again.
	r = call(t, srv, "DELETE", "/v1/kv/w/t/?prefix=true", nil)
	expect(t, r, 200, "")
	rev = revision(t, r)
	want = append(want, wantEvent{"delete", "w/t/a", "", rev, false}, wantEvent{"delete", "w/t/b", "", rev, false},
		wantEvent{"delete", "w/t/c", "", rev, true})
	r = call(t, srv, "DELETE", "/v1/kv/w/k0", nil)
	want = append(want, wantEvent{"delete", "w/k0", "", revision(t, r), true})
	for i := 5; i < 10; i++ {
		key, value := fmt.Sprintf("w/k%d", i), fmt.Sprintf("v%d", i)
		want = append(want, wantEvent{"put", key, value, putREST(t, srv, key, value), true})
	}
	if want[0].rev <= start {
		t.Fatalf("first write at %d, stream started after %d", want[0].rev, start)
	}

	// Read up to the end of the prefix delete, then hang up.
	const seen = 12
	for _, w := range want[:seen] {
		w.check(t, st.next(t))
	}
	st.close()
	for i := 10; i < 13; i++ {
		key, value := fmt.Sprintf("w/k%d", i), fmt.Sprintf("v%d", i)
		want = append(want, wantEvent{"put", key, value, putREST(t, srv, key, value), true})
	}
	// Last-Event-ID wins over ?from.
	st = openSSE(t, srv, "/v1/watch?prefix=w/&from=1", "Last-Event-ID", strconv.FormatInt(want[seen-1].rev, 10))
	for _, w := range want[seen:] {
		w.check(t, st.next(t))
	}
	// Nothing repeated or extra before the next write.
	key := "w/sentinel"
	wantEvent{"put", key, "s", putREST(t, srv, key, "s"), true}.check(t, st.next(t))

	// A value that is not UTF-8 comes as value_base64.
	rev = putREST(t, srv, "w/bin", "\xff\x00")
	ev := st.next(t)
	if m := ev.json(t); m["value_base64"] != base64.StdEncoding.EncodeToString([]byte("\xff\x00")) || m["revision"] != float64(rev) {
		t.Fatalf("binary put: %s", ev.data)
	}
}

// TestWatchFromAndPrev: ?from= replays the history, ?prev=true adds the
// previous entry, and X-Dister-Revision marks where a stream from now
// starts.
func TestWatchFromAndPrev(t *testing.T) {
	_, srv := one(t, standalone.Options{})
	r1 := putREST(t, srv, "p/a", "1")
	r2 := putREST(t, srv, "p/a", "2")
	st := openSSE(t, srv, fmt.Sprintf("/v1/watch?prefix=p/&from=%d&prev=true", r1))
	ev := st.next(t)
	wantEvent{"put", "p/a", "1", r1, true}.check(t, ev)
	if _, ok := ev.json(t)["prev"]; ok {
		t.Fatalf("prev of a new key: %s", ev.data)
	}
	ev = st.next(t)
	wantEvent{"put", "p/a", "2", r2, true}.check(t, ev)
	prev, _ := ev.json(t)["prev"].(map[string]any)
	if prev["value"] != "1" || prev["mod_revision"] != float64(r1) || prev["version"] != float64(1) {
		t.Fatalf("prev of an update: %s", ev.data)
	}
	r := call(t, srv, "DELETE", "/v1/kv/p/a", nil)
	ev = st.next(t)
	wantEvent{"delete", "p/a", "", revision(t, r), true}.check(t, ev)
	if prev, _ := ev.json(t)["prev"].(map[string]any); prev["value"] != "2" {
		t.Fatalf("prev of a delete: %s", ev.data)
	}

	// From now: the stream starts right after X-Dister-Revision, so a
	// client that saw nothing yet resumes with it exactly.
	now := openSSE(t, srv, "/v1/watch?prefix=q/")
	start := now.startRevision(t)
	now.close()
	rq := putREST(t, srv, "q/x", "after")
	again := openSSE(t, srv, "/v1/watch?prefix=q/", "Last-Event-ID", strconv.FormatInt(start, 10))
	wantEvent{"put", "q/x", "after", rq, true}.check(t, again.next(t))
}

// TestWatchErrors: bad requests are answered before the stream; an error
// after it began is an error event; ?timeout= and CloseStreams end a
// stream cleanly. (A deleted group would be an error event too, but the
// SDK does not end the watches of a deleted group yet.)
func TestWatchErrors(t *testing.T) {
	c := testcluster.New(t, 1)
	h := standalone.New(c.Node(1), standalone.Options{Logger: testcluster.Logger()})
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		h.CloseStreams()
		srv.Close()
	})

	for _, rq := range []struct{ path, lastID string }{
		{"/v1/watch?from=-1", ""},
		{"/v1/watch?from=x", ""},
		{"/v1/watch?prev=maybe", ""},
		{"/v1/watch?prefx=a/", ""},
		{"/v1/watch?timeout=0s", ""},
		{"/v1/watch?timeout=1h", ""},
		{"/v1/watch", "abc"},
		{"/v1/watch", "-5"},
	} {
		r := call(t, srv, "GET", rq.path, nil, "Last-Event-ID", rq.lastID)
		expect(t, r, 400, "invalid")
	}
	expect(t, call(t, srv, "GET", "/v1/watch?group=nope", nil), 404, "group_not_found")
	expect(t, call(t, srv, "POST", "/v1/watch", nil), 405, "invalid")

	// ?timeout= bounds the stream itself; it ends without an error event.
	began := time.Now()
	st := openSSE(t, srv, "/v1/watch?timeout=300ms")
	if evs, err := st.end(t); len(evs) != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("after ?timeout=: events %v, end %v", evs, err)
	}
	if d := time.Since(began); d < 300*time.Millisecond {
		t.Fatalf("stream ended after %v", d)
	}

	// CloseStreams ends a stream as if its client had gone, and refuses
	// new ones.
	st = openSSE(t, srv, "/v1/watch")
	h.CloseStreams()
	if evs, err := st.end(t); len(evs) != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("after CloseStreams: events %v, end %v", evs, err)
	}
	expect(t, call(t, srv, "GET", "/v1/watch", nil), 503, "closed")

	// A Node closed under a stream: error event "closed".
	h2 := standalone.New(c.Node(1), standalone.Options{Logger: testcluster.Logger()})
	srv2 := httptest.NewServer(h2)
	defer srv2.Close()
	st = openSSE(t, srv2, "/v1/watch")
	c.Stop(1)
	evs, _ := st.end(t)
	if len(evs) != 1 || evs[0].event != "error" || evs[0].json(t)["code"] != "closed" {
		t.Fatalf("Node closed: events %v", evs)
	}
	expect(t, call(t, srv2, "GET", "/v1/watch", nil), 503, "closed")
}

// TestWatchCompacted: a start below the kept history is 410 compacted with
// compact_revision, before any stream byte; from there on it works.
func TestWatchCompacted(t *testing.T) {
	c := testcluster.New(t, 1, func(o *dister.Options) { o.EventHistory = 100 })
	srv := serve(t, c.Node(1), standalone.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Trimming runs every 1024 revisions.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 140 {
				if _, err := c.Node(1).KV().Put(ctx, fmt.Sprintf("c/%d/%d", w, i), nil); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, rq := range []struct{ path, lastID string }{{"/v1/watch?from=1", ""}, {"/v1/watch", "0"}} {
		r := call(t, srv, "GET", rq.path, nil, "Last-Event-ID", rq.lastID)
		expect(t, r, 410, "compacted")
		compact, _ := r.json(t)["error"].(map[string]any)["compact_revision"].(float64)
		if compact <= 1 {
			t.Fatalf("compact_revision in %s", r.body)
		}
		revision(t, r)
		st := openSSE(t, srv, fmt.Sprintf("/v1/watch?from=%d", int64(compact)))
		if ev := st.next(t); ev.event != "put" {
			t.Fatalf("from the compact revision: %v", ev)
		}
		st.close()
	}
}

// TestWatchProgress: a progress event on request carries id and the
// revision; Options.RequestTimeout does not cut a stream; the open streams
// are counted in /metrics.
func TestWatchProgress(t *testing.T) {
	c, srv := one(t, standalone.Options{RequestTimeout: 200 * time.Millisecond})
	st := openSSE(t, srv, "/v1/watch?prefix=p/")
	start := st.startRevision(t)
	waitMetric(t, srv, "dister_http_watch_streams 1")
	time.Sleep(400 * time.Millisecond) // past the request timeout

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	kv := c.Node(1).KV()
	// The watch joins its group's feed shortly after the stream begins.
	var ev sseEvent
	for ok := false; !ok; {
		if err := kv.RequestProgress(ctx); err != nil {
			t.Fatal(err)
		}
		ev, ok = st.nextWithin(t, 200*time.Millisecond)
	}
	m := ev.json(t)
	if ev.event != "progress" || len(m) != 2 || m["type"] != "progress" || ev.id != strconv.FormatInt(int64(m["revision"].(float64)), 10) ||
		int64(m["revision"].(float64)) < start {
		t.Fatalf("progress event %+v after start %d", ev, start)
	}
	rev, err := kv.Put(ctx, "p/x", []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	wantEvent{"put", "p/x", "1", rev, true}.check(t, st.next(t))
	st.close()
	waitMetric(t, srv, "dister_http_watch_streams 0")
}

// waitMetric polls /metrics until it has the line.
func waitMetric(t testing.TB, srv *httptest.Server, line string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := call(t, srv, "GET", "/metrics", nil)
		if strings.Contains(string(r.body), "\n"+line+"\n") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics has no line %q", line)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestWatchFollowerLeaderClose: a stream served by a follower goes on,
// without a gap, when the leader is closed and another takes over.
func TestWatchFollowerLeaderClose(t *testing.T) {
	c := testcluster.New(t, 3)
	leader := c.Leader()
	follower := leader%3 + 1
	srv := serve(t, c.Node(follower), standalone.Options{})
	st := openSSE(t, srv, "/v1/watch?prefix=f/")
	// Create-only puts: a retry of a put that did commit is a conflict,
	// not a second event.
	put := func(i int) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			r := call(t, srv, "PUT", fmt.Sprintf("/v1/kv/f/%02d?cas=0&timeout=2s", i), "v")
			if r.status == 200 || r.status == 409 {
				return
			}
			if (r.status != 503 && r.status != 504) || time.Now().After(deadline) {
				t.Fatalf("put %d: %d %s", i, r.status, r.body)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for i := range 5 {
		put(i)
	}
	c.Stop(leader)
	for i := 5; i < 10; i++ {
		put(i)
	}
	last := int64(0)
	for i := range 10 {
		ev := st.next(t)
		m := ev.json(t)
		rev := int64(m["revision"].(float64))
		if ev.event != "put" || m["key"] != fmt.Sprintf("f/%02d", i) || rev <= last || ev.id != strconv.FormatInt(rev, 10) {
			t.Fatalf("event %d: %+v after revision %d", i, ev, last)
		}
		last = rev
	}
}
