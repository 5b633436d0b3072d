package main

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestGracefulShutdown: SIGTERM under load exits 0 after finishing the
// requests in flight, and every acknowledged write is there after a
// restart from the data dir.
func TestGracefulShutdown(t *testing.T) {
	d := newDaemon(t, "graceful", "--log-level", "info")
	d.start()
	d.waitReady()

	const writers = 8
	var (
		mu     sync.Mutex
		acked  = map[string]string{}
		oddity []string // answers other than 200 or a refused connection
		wg     sync.WaitGroup
		quit   = make(chan struct{})
	)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-quit:
					return
				default:
				}
				key, value := fmt.Sprintf("gs/w%d/%05d", w, i), fmt.Sprintf("v%d.%d", w, i)
				code, body, err := d.do("PUT", "/v1/kv/"+key, []byte(value))
				mu.Lock()
				switch {
				case err == nil && code == http.StatusOK:
					acked[key] = value
				case err != nil:
					// Refused once the listener is closed: the request
					// never reached the server. Stop this writer.
					mu.Unlock()
					return
				default:
					oddity = append(oddity, fmt.Sprintf("%s: %d %s", key, code, body))
				}
				mu.Unlock()
			}
		}()
	}
	// Let the writers get going, then stop the daemon under them.
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 200 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	d.signal(syscall.SIGTERM)
	code := d.waitExit(30 * time.Second)
	close(quit)
	wg.Wait()
	if code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	if len(oddity) > 0 {
		t.Errorf("requests in flight at SIGTERM failed instead of finishing: %s", strings.Join(oddity, "; "))
	}
	if len(acked) == 0 {
		t.Fatal("no write was acknowledged before the shutdown")
	}
	if _, stderr := d.logs(); !strings.Contains(stderr, "msg=stopped") {
		t.Errorf("no 'stopped' in the log")
	}
	t.Logf("%d writes acknowledged before SIGTERM", len(acked))

	d.start()
	d.waitReady()
	var page listAnswer
	d.mustJSONCall("GET", "/v1/kv?prefix=gs/", nil, &page)
	got := map[string]string{}
	for _, e := range page.Entries {
		got[e.Key] = *e.Value
	}
	for k, v := range acked {
		if got[k] != v {
			t.Errorf("acknowledged %s = %q, after restart %q", k, v, got[k])
		}
	}
	d.stop()
}
