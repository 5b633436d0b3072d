package svc

import (
	"testing"
	"time"

	"github.com/dister/dister/internal/health"
)

// A record the checker finds in the store with an interval out of range
// (a crafted backup restored: the checker does not validate what it loads)
// is probed at the nearest valid interval. A negative one made the
// checker's jitter (rand.N) panic, and with it the server, at every start
// or new leader. Found in review.
func TestCheckerClampsStoredInterval(t *testing.T) {
	for _, iv := range []time.Duration{-time.Second, 0, 1, 100 * MaxInterval} {
		st := newFakeStore()
		h := newHTTPTarget(t, false, always(200))
		r := probedRecord("i1", health.TypeHTTP, h.URL)
		r.Check.Interval = iv
		st.put(t, r)
		stop := runChecker(t, st, 1)
		if iv < MaxInterval {
			h.waitReqs(t, 3) // probed again at MinInterval
		} else {
			h.waitReqs(t, 1)
		}
		stop()
	}
}
