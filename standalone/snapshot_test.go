package standalone_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/standalone"
)

// TestSnapshotRoute: GET /v1/snapshot streams a file that checks out and
// holds what was written; a query parameter is refused before any byte.
func TestSnapshotRoute(t *testing.T) {
	_, srv := one(t, standalone.Options{})
	for _, k := range []string{"a", "b", "c"} {
		expect(t, call(t, srv, "PUT", "/v1/kv/"+k, "v"), 200, "")
	}
	r := call(t, srv, "GET", "/v1/snapshot", nil)
	expect(t, r, 200, "")
	if ct := r.header.Get("Content-Type"); ct != "application/octet-stream" || !strings.HasPrefix(r.header.Get("Content-Disposition"), "attachment") ||
		r.header.Get("X-Dister-Snapshot-Format") != "1" {
		t.Errorf("headers %v", r.header)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := dister.InspectSnapshot(ctx, bytes.NewReader(r.body), nil)
	if err != nil || len(info.Groups) != 1 || info.Groups[0].Keys != 3 || info.Bytes != int64(len(r.body)) {
		t.Errorf("snapshot over REST: %+v, %v", info, err)
	}
	expect(t, call(t, srv, "GET", "/v1/snapshot?prefix=x", nil), 400, "invalid")
}
