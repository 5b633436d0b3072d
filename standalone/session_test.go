package standalone_test

import (
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/dister/dister/internal/testcluster"
	"github.com/dister/dister/standalone"
)

// A REST client that writes through one server and reads through another
// sees its writes when it carries X-Dister-Revision as ?min_revision=,
// even with stale reads. Writes go through a follower and reads through
// the other follower, the replica most likely to lag.
func TestMinRevisionAcrossServers(t *testing.T) {
	c := testcluster.New(t, 3)
	leader := c.Leader()
	var followers []*httptest.Server
	for _, id := range c.IDs() {
		if id != leader {
			followers = append(followers, serve(t, c.Node(id), standalone.Options{}))
		}
	}
	w, rd := followers[0], followers[1]
	for i := range 50 {
		r := call(t, w, "PUT", "/v1/kv/counter", fmt.Sprint(i))
		expect(t, r, 200, "")
		rev := revision(t, r)
		for _, q := range []string{"consistency=stale&", "", "raw&consistency=stale&"} {
			g := call(t, rd, "GET", fmt.Sprintf("/v1/kv/counter?%smin_revision=%d", q, rev), nil)
			expect(t, g, 200, "")
			if revision(t, g) < rev {
				t.Fatalf("read at %d, asked for %d", revision(t, g), rev)
			}
			if q == "raw&consistency=stale&" {
				if string(g.body) != fmt.Sprint(i) {
					t.Fatalf("raw read %q after writing %d", g.body, i)
				}
				continue
			}
			if m := g.json(t); m["value"] != fmt.Sprint(i) || int64(m["mod_revision"].(float64)) != rev {
				t.Fatalf("read %s after writing %d at %d", g.body, i, rev)
			}
		}
		l := call(t, rd, "GET", fmt.Sprintf("/v1/kv?prefix=counter&consistency=stale&min_revision=%d", rev), nil)
		if m := l.json(t); int64(m["revision"].(float64)) < rev {
			t.Fatalf("list at %v, asked for %d", m["revision"], rev)
		}
	}
}
