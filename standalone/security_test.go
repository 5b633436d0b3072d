package standalone_test

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
	"github.com/dister/dister/standalone"
)

// TestWatchEndsWhenItsTokenIsRevoked: a token removed from --token-file
// reads nothing more, through a watch it opened before either: the
// stream ends instead of carrying the next change.
func TestWatchEndsWhenItsTokenIsRevoked(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(file, []byte("admin A\nread R\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tokens, err := dister.LoadTokens(file, nil, testcluster.Logger())
	if err != nil {
		t.Fatal(err)
	}
	_, srv := one(t, standalone.Options{Tokens: tokens})
	st := openSSE(t, srv, "/v1/watch?prefix=k", "Authorization", "Bearer R")

	if err := os.WriteFile(file, []byte("admin A\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The file is reread at most once a second: wait until R is refused.
	for call(t, srv, "GET", "/v1/kv/k", nil, "Authorization", "Bearer R").status != http.StatusUnauthorized {
		time.Sleep(100 * time.Millisecond)
	}
	expect(t, call(t, srv, "PUT", "/v1/kv/k", "secret", "Authorization", "Bearer A"), http.StatusOK, "")

	timer := time.NewTimer(15 * time.Second)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-st.events:
			if !ok {
				return // ended, as it should
			}
			if ev.event != "progress" {
				t.Fatalf("the revoked token's watch received %s %s", ev.event, ev.data)
			}
		case <-timer.C:
			t.Fatal("the revoked token's watch neither ended nor sent anything within 15s")
		}
	}
}

// TestScriptCheckNeedsAdmin: a script or custom health check runs a
// command on the servers; registering one is more than a write token
// (let alone one limited to a group) may do, even with script checks on.
// An admin token registers it.
func TestScriptCheckNeedsAdmin(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(file, []byte("admin A\nwrite W\nwrite TW default\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tokens, err := dister.LoadTokens(file, nil, testcluster.Logger())
	if err != nil {
		t.Fatal(err)
	}
	_, srv := one(t, standalone.Options{Tokens: tokens}, scripts)
	expect(t, call(t, srv, "PUT", "/v1/settings", `{"script_checks":true}`, "Authorization", "Bearer A"), http.StatusOK, "")
	script := `{"address":"10.0.0.1:80","check":{"type":"custom","target":"echo 1","interval":"200ms"}}`
	for _, tok := range []string{"W", "TW"} {
		expect(t, call(t, srv, "PUT", "/v1/services/job/instances/"+tok, script, "Authorization", "Bearer "+tok), http.StatusForbidden, "forbidden")
	}
	expect(t, call(t, srv, "PUT", "/v1/services/job/instances/a", script, "Authorization", "Bearer A"), http.StatusOK, "")
	// The v1.5 route registers custom checks too.
	legacyScript := `[{"name":"c","type":"custom","node":[{"script":"echo 1"}]}]`
	for _, tok := range []string{"W", "TW"} {
		expect(t, call(t, srv, "POST", "/service", legacyScript, "Authorization", "Bearer "+tok), http.StatusForbidden, "forbidden")
	}
	if r := call(t, srv, "POST", "/service", legacyScript, "Authorization", "Bearer A"); r.status != http.StatusOK {
		t.Fatalf("legacy custom check with the admin token: %d %s", r.status, r.body)
	}
}
