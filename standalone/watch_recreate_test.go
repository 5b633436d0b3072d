package standalone_test

import (
	"io"
	"strconv"
	"strings"
	"testing"

	"github.com/dister/dister/standalone"
)

// An SSE client (EventSource) follows group "rg" and has seen id R. The
// group is deleted (the stream ends with event: error) and created again;
// the new group writes at revisions 1, 2, 3. EventSource reconnects with
// "Last-Event-ID: R", which the docs promise resumes "with nothing lost or
// repeated". A stream from R+1 answered 200 and stayed silent: the new
// group's writes at or below R were lost to it (found by an adversarial
// review). The reconnect now fails, 400 invalid, so the app re-reads.
func TestWatchLastEventIDAcrossRecreate(t *testing.T) {
	_, srv := one(t, standalone.Options{})
	expect(t, call(t, srv, "PUT", "/v1/groups/rg", nil), 201, "")
	st := openSSE(t, srv, "/v1/watch?group=rg")
	var last int64
	for i := range 10 {
		r := call(t, srv, "PUT", "/v1/kv/old"+strconv.Itoa(i)+"?group=rg", "v")
		expect(t, r, 200, "")
		last = revision(t, r)
	}
	var lastID string
	for lastID != strconv.FormatInt(last, 10) {
		ev := st.next(t)
		if ev.id != "" {
			lastID = ev.id
		}
	}
	expect(t, call(t, srv, "DELETE", "/v1/groups/rg", nil), 200, "")
	evs, err := st.end(t)
	t.Logf("old stream ended after id %s: %v, %v", lastID, evs, err)
	expect(t, call(t, srv, "PUT", "/v1/groups/rg", nil), 201, "")
	var news []int64
	for i := range 3 {
		r := call(t, srv, "PUT", "/v1/kv/new"+strconv.Itoa(i)+"?group=rg", "v")
		expect(t, r, 200, "")
		news = append(news, revision(t, r))
	}
	t.Logf("the new group wrote at %v", news)
	res, err := startSSE(srv, "/v1/watch?group=rg", "Last-Event-ID", lastID)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode == 200 { // a stream: its body never ends
		res.Body.Close()
		t.Fatalf("a reconnect with Last-Event-ID %s (the old group's) to the re-created group answered 200: a stream from there misses the new group's puts at %v; want 400 invalid",
			lastID, news)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 400 || !strings.Contains(string(body), `"code":"invalid"`) {
		t.Fatalf("a reconnect with Last-Event-ID %s (the old group's) to the re-created group answered %d %s; want 400 invalid: a stream from there would miss the new group's puts at %v",
			lastID, res.StatusCode, body, news)
	}
	t.Logf("reconnect refused: %d %s", res.StatusCode, body)
}
