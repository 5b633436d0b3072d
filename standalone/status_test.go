package standalone_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
	"github.com/dister/dister/standalone"
)

func TestHealthReadyStatus(t *testing.T) {
	_, srv := one(t, standalone.Options{})
	rev := revision(t, call(t, srv, "PUT", "/v1/kv/k", "v"))

	r := call(t, srv, "GET", "/healthz", nil)
	expect(t, r, 200, "")
	jsonEqual(t, r.body, `{"status":"ok"}`)
	r = call(t, srv, "GET", "/readyz", nil)
	expect(t, r, 200, "")
	jsonEqual(t, r.body, `{"status":"ready"}`)
	expect(t, call(t, srv, "GET", "/readyz?timeout=2s", nil), 200, "")
	expect(t, call(t, srv, "GET", "/readyz?timeout=x", nil), 400, "invalid")

	r = call(t, srv, "GET", "/v1/status", nil)
	expect(t, r, 200, "")
	if got := revision(t, r); got != rev {
		t.Fatalf("status X-Dister-Revision %d, want %d", got, rev)
	}
	if clientRole() {
		// A client reports the revision its cache of the group reached
		// (0 before its feed starts), never more than the group's.
		var st struct {
			NodeID uint64 `json:"node_id"`
			Role   string
			Groups []struct {
				Name     string
				Leader   uint64
				Revision int64
			}
		}
		if err := json.Unmarshal(r.body, &st); err != nil || st.NodeID != 0 || st.Role != "client" ||
			len(st.Groups) != 1 || st.Groups[0].Name != "default" || st.Groups[0].Leader != 1 || st.Groups[0].Revision > rev {
			t.Fatalf("client status %s (%v)", r.body, err)
		}
	} else {
		jsonEqual(t, r.body, fmt.Sprintf(`{"node_id":1,"role":"server","version":%q,"groups":[{"name":"default","leader":1,"revision":%d}]}`,
			dister.Version, rev))
	}
	expect(t, call(t, srv, "GET", "/v1/status?verbose=1", nil), 400, "invalid")
	expect(t, call(t, srv, "GET", "/nowhere", nil), 404, "not_found")
	expect(t, call(t, srv, "GET", "/v1/kvs", nil), 404, "not_found")
	r = call(t, srv, "DELETE", "/v1/status", nil)
	expect(t, r, 405, "invalid")
	if r.header.Get("Allow") != "GET" {
		t.Fatalf("Allow %q", r.header.Get("Allow"))
	}
}

// /readyz turns 503 when the server's groups have no leader: here two of
// three servers are stopped.
func TestReadyzWithoutQuorum(t *testing.T) {
	c := testcluster.New(t, 3)
	srv := serve(t, c.Node(1), standalone.Options{ReadyTimeout: 200 * time.Millisecond})
	expect(t, call(t, srv, "GET", "/readyz", nil), 200, "")
	c.Stop(2)
	c.Stop(3)
	waitUnready(t, srv)
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := testcluster.New(t, 1, func(o *dister.Options) { o.Metrics = reg })
	srv := serve(t, c.Node(1), standalone.Options{Metrics: reg})
	// A second Server on the same registry shares the series.
	srv2 := serve(t, c.Node(1), standalone.Options{Metrics: reg})
	expect(t, call(t, srv, "PUT", "/v1/kv/a", "1"), 200, "")
	expect(t, call(t, srv2, "PUT", "/v1/kv/b", "1"), 200, "")
	expect(t, call(t, srv, "GET", "/v1/kv/missing", nil), 404, "not_found")
	expect(t, call(t, srv, "GET", "/kv?k=a", nil), 200, "")
	expect(t, call(t, srv, "GET", "/no/such/route", nil), 404, "not_found")

	r := call(t, srv, "GET", "/metrics", nil)
	expect(t, r, 200, "")
	revision(t, r)
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("Content-Type %q", ct)
	}
	text := string(r.body)
	for _, want := range []string{
		`dister_http_requests_total{code="200",method="PUT",route="/v1/kv/*key"} 2`,
		`dister_http_requests_total{code="404",method="GET",route="/v1/kv/*key"} 1`,
		`dister_http_requests_total{code="200",method="GET",route="/kv"} 1`,
		`dister_http_requests_total{code="404",method="GET",route="unmatched"} 1`,
		`dister_http_request_duration_seconds_count{route="/v1/kv/*key"} 3`,
		`dister_proposals_total{group="default",result="ok"} 2`,
		`dister_group_revision{group="default"}`,
		`dister_leader_changes_total{group="default"}`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// A Server with no registry has one of its own, with Go's series.
	srv3 := serve(t, c.Node(1), standalone.Options{})
	r = call(t, srv3, "GET", "/metrics", nil)
	if !strings.Contains(string(r.body), "go_goroutines") || strings.Contains(string(r.body), "dister_proposals_total") {
		t.Fatalf("own registry:\n%s", r.body)
	}
}
