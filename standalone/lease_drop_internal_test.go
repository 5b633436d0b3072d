package standalone

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// A ?ttl= put that fails revokes the lease it granted, rather than leave
// it to expire. Lease ids are random (they carry the group's shard), so
// the test learns the id from a hook.
func TestFailedTTLPutRevokesItsLease(t *testing.T) {
	c := testcluster.New(t, 1)
	n := c.Node(1)
	s := New(n, Options{Logger: testcluster.Logger()})
	var granted []dister.LeaseID
	s.putLeaseHook = func(id dister.LeaseID) { granted = append(granted, id) }
	put := func(path string) int {
		r := httptest.NewRequest("PUT", path, strings.NewReader("v"))
		r.Host = "127.0.0.1:4168" // the Host check refuses example.com
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		return w.Code
	}
	if code := put("/v1/kv/k?ttl=1m"); code != http.StatusOK {
		t.Fatalf("put with ttl: %d", code)
	}
	if code := put("/v1/kv/k?ttl=1m&cas=0"); code != http.StatusConflict {
		t.Fatalf("put with ttl and a failing cas: %d", code)
	}
	if len(granted) != 2 {
		t.Fatalf("%d leases granted, want 2", len(granted))
	}
	ctx := context.Background()
	if _, err := n.Leases().Get(ctx, granted[0]); err != nil {
		t.Fatalf("the lease of the put that succeeded: %v", err)
	}
	if _, err := n.Leases().Get(ctx, granted[1]); !errors.Is(err, dister.ErrLeaseNotFound) {
		t.Fatalf("the lease of the put that failed: %v; want ErrLeaseNotFound", err)
	}
}
