package standalone_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sseEvent is one Server-Sent Events message.
type sseEvent struct{ event, id, data string }

// json decodes the data line.
func (e sseEvent) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(e.data), &m); err != nil {
		t.Fatalf("event %s data %q: %v", e.event, e.data, err)
	}
	return m
}

// sseStream reads a text/event-stream answer as a plain client (curl)
// would: line by line, one message per blank line, in a goroutine of its
// own that close ends.
type sseStream struct {
	res    *http.Response
	events chan sseEvent // closed when the stream ends
	err    error         // why it ended, io.EOF if cleanly; set before events closes
	quit   chan struct{}
	done   chan struct{}
}

// startSSE sends GET path with headers given as name, value pairs.
func startSSE(srv *httptest.Server, path string, headers ...string) (*http.Response, error) {
	req, err := http.NewRequest("GET", srv.URL+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return srv.Client().Do(req)
}

// openSSE starts a stream that must answer 200 with the SSE headers; it is
// closed by t.Cleanup at the latest.
func openSSE(t testing.TB, srv *httptest.Server, path string, headers ...string) *sseStream {
	t.Helper()
	res, err := startSSE(srv, path, headers...)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		t.Fatalf("GET %s: %d %s", path, res.StatusCode, b)
	}
	if ct, cc := res.Header.Get("Content-Type"), res.Header.Get("Cache-Control"); ct != "text/event-stream" || cc != "no-cache" {
		res.Body.Close()
		t.Fatalf("GET %s: Content-Type %q, Cache-Control %q", path, ct, cc)
	}
	s := &sseStream{res: res, events: make(chan sseEvent, 1024), quit: make(chan struct{}), done: make(chan struct{})}
	go s.read()
	t.Cleanup(s.close)
	return s
}

// startRevision is the stream's X-Dister-Revision.
func (s *sseStream) startRevision(t testing.TB) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s.res.Header.Get("X-Dister-Revision"), 10, 64)
	if err != nil {
		t.Fatalf("X-Dister-Revision: %v", err)
	}
	return n
}

func (s *sseStream) read() {
	defer close(s.done)
	defer close(s.events)
	r := bufio.NewReader(s.res.Body)
	var ev sseEvent
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			if err == io.EOF && line != "" {
				err = io.ErrUnexpectedEOF
			}
			s.err = err
			return
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			if ev != (sseEvent{}) {
				select {
				case s.events <- ev:
				case <-s.quit:
					s.err = errors.New("closed")
					return
				}
			}
			ev = sseEvent{}
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			ev.event = value
		case "id":
			ev.id = value
		case "data":
			if ev.data != "" {
				ev.data += "\n"
			}
			ev.data += value
		}
	}
}

// close hangs up, as a client that goes away does.
func (s *sseStream) close() {
	select {
	case <-s.quit:
	default:
		close(s.quit)
	}
	s.res.Body.Close()
	<-s.done
}

// next is the next event other than progress (which comes every 15 s
// whatever the test does); the stream must not end first.
func (s *sseStream) next(t testing.TB) sseEvent {
	t.Helper()
	for {
		ev, ok := s.nextWithin(t, 15*time.Second)
		if !ok {
			t.Fatal("no event within 15s")
		}
		if ev.event != "progress" {
			return ev
		}
	}
}

// nextWithin waits up to d for an event (false if none came); the stream
// must not end meanwhile.
func (s *sseStream) nextWithin(t testing.TB, d time.Duration) (sseEvent, bool) {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case ev, ok := <-s.events:
		if !ok {
			t.Fatalf("the stream ended: %v", s.err)
		}
		return ev, true
	case <-timer.C:
		return sseEvent{}, false
	}
}

// end waits for the stream to end and returns the events other than
// progress that came before, and why it ended.
func (s *sseStream) end(t testing.TB) ([]sseEvent, error) {
	t.Helper()
	var evs []sseEvent
	timer := time.NewTimer(15 * time.Second)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				return evs, s.err
			}
			if ev.event != "progress" {
				evs = append(evs, ev)
			}
		case <-timer.C:
			t.Fatal("the stream did not end within 15s")
		}
	}
}
