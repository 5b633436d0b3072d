package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"
)

const (
	keptTTL      = 6 * time.Second // a lease kept alive every second
	abandonedTTL = 3 * time.Second // a lease whose holder stops renewing at once
)

// leaseWorkload keeps one lease alive through the faults (it must never
// expire while keepalives succeed within its TTL) and now and then grants
// one that nobody renews (it must expire, and its key go).
type leaseWorkload struct {
	c   *cluster
	rec *recorder

	mu         sync.Mutex
	grants     int             // kept leases granted
	keepalives int             // successful keepalives
	attempts   int             // keepalives sent
	failures   map[string]int  // keepalive answers other than 200 and 404, by kind
	expired    int             // kept leases that expired after keepalives stopped succeeding
	bad        []string        // violations
	abandoned  []int64         // ids of abandoned leases
	expiry     []time.Duration // abandoned: grant to the key seen gone
}

func (c *restClient) grant(ctx context.Context, nd *node, ttl time.Duration) (int64, reply) {
	body, _ := json.Marshal(map[string]string{"ttl": ttl.String()})
	r := c.do(ctx, nd, http.MethodPost, "/v1/leases", nil, body)
	var out struct {
		ID int64 `json:"id"`
	}
	if r.out == outOK && (r.status != http.StatusCreated || json.Unmarshal(r.body, &out) != nil || out.ID == 0) {
		r.out, r.err = outUnknown, fmt.Errorf("grant answered %d %s", r.status, r.body)
	}
	return out.ID, r
}

// keepAlive: status 200 renewed, 404 the lease is gone.
func (c *restClient) keepAlive(ctx context.Context, nd *node, id int64) reply {
	return c.do(ctx, nd, http.MethodPut, "/v1/leases/"+strconv.FormatInt(id, 10)+"/keepalive", nil, nil)
}

func (l *leaseWorkload) violation(format string, args ...any) {
	l.mu.Lock()
	l.bad = append(l.bad, fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

func sleepOrStop(stop <-chan struct{}, d time.Duration) bool {
	select {
	case <-stop:
		return false
	case <-time.After(d):
		return true
	}
}

// keeper grants a lease with a key, renews it every second through any
// server, and checks that neither the lease nor its key is gone earlier
// than TTL after the invocation of the last keepalive that succeeded
// (the countdown restarts when the leader handles it, after that call).
func (l *leaseWorkload) keeper(stop <-chan struct{}) {
	ctx := context.Background()
	for n := 0; ; n++ {
		nd := l.c.nodes[n%len(l.c.nodes)]
		call := l.rec.now()
		id, r := l.c.api.grant(ctx, nd, keptTTL)
		if r.out != outOK {
			if !sleepOrStop(stop, 500*time.Millisecond) {
				return
			}
			continue
		}
		key := fmt.Sprintf("lease/kept/%d", id)
		if _, r := l.c.api.put(ctx, nd, key, "held", url.Values{"lease": {strconv.FormatInt(id, 10)}}); r.out != outOK {
			continue // the lease may already be gone; it expires by itself
		}
		l.mu.Lock()
		l.grants++
		l.mu.Unlock()
		lastOK := call
		pause, home := time.Second, n
		for i := 1; ; i++ {
			if !sleepOrStop(stop, pause) {
				return
			}
			// A holder stays with its server until it fails to answer.
			nd := l.c.nodes[home%len(l.c.nodes)]
			call := l.rec.now()
			// A holder does not wait long for one server: the next try goes
			// to another at once.
			kctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			r := l.c.api.keepAlive(kctx, nd, id)
			cancel()
			ret := l.rec.now()
			pause = time.Second
			if r.status != http.StatusOK && r.status != http.StatusNotFound {
				pause, home = 100*time.Millisecond, home+1
			}
			l.mu.Lock()
			l.attempts++
			if r.status != http.StatusOK && r.status != http.StatusNotFound {
				if l.failures == nil {
					l.failures = map[string]int{}
				}
				l.failures[fmt.Sprintf("%v %d", r.out, r.status)]++
			}
			l.mu.Unlock()
			if r.out == outOK && r.status == http.StatusOK {
				lastOK = call
				l.mu.Lock()
				l.keepalives++
				l.mu.Unlock()
			} else if r.out == outOK && r.status == http.StatusNotFound {
				if ret < lastOK+int64(keptTTL) {
					l.violation("lease %d gone (keepalive on n%d answered %s at %s) less than its TTL %v after the keepalive invoked at %s succeeded",
						id, nd.id, r.body, fmtNS(ret), keptTTL, fmtNS(lastOK))
				}
				l.mu.Lock()
				l.expired++
				l.mu.Unlock()
				break
			}
			if i%3 == 0 {
				call := l.rec.now()
				_, found, r := l.c.api.get(ctx, nd, key, "linearizable", 0)
				ret := l.rec.now()
				if r.out == outOK && !found && ret < lastOK+int64(keptTTL) {
					l.violation("key %s of lease %d gone (read on n%d at %s..%s) less than its TTL after the keepalive invoked at %s succeeded",
						key, id, nd.id, fmtNS(call), fmtNS(ret), fmtNS(lastOK))
				}
			}
		}
	}
}

// abandoner grants a short lease with a key, never renews it, and watches
// the key go; the time it took is a figure, and at the end every such key
// must be gone (checkAbandoned).
func (l *leaseWorkload) abandoner(stop <-chan struct{}) {
	ctx := context.Background()
	for n := 0; ; n++ {
		if !sleepOrStop(stop, 2*time.Second) {
			return
		}
		nd := l.c.nodes[n%len(l.c.nodes)]
		start := time.Now()
		id, r := l.c.api.grant(ctx, nd, abandonedTTL)
		if r.out != outOK {
			continue
		}
		key := fmt.Sprintf("lease/abandoned/%d", id)
		if _, r := l.c.api.put(ctx, nd, key, "left", url.Values{"lease": {strconv.FormatInt(id, 10)}}); r.out != outOK {
			continue
		}
		l.mu.Lock()
		l.abandoned = append(l.abandoned, id)
		l.mu.Unlock()
		for i := 0; time.Since(start) < time.Minute; i++ {
			if !sleepOrStop(stop, 250*time.Millisecond) {
				return
			}
			_, found, r := l.c.api.get(ctx, l.c.nodes[i%len(l.c.nodes)], key, "linearizable", 0)
			if r.out == outOK && !found {
				l.mu.Lock()
				l.expiry = append(l.expiry, time.Since(start))
				l.mu.Unlock()
				break
			}
		}
	}
}

// checkAbandoned waits (within a bound far past every TTL) until no key
// of an abandoned lease is left, and reports those that stay.
func (l *leaseWorkload) checkAbandoned() []string {
	var left []entryJSON
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
		var err error
		left, err = l.c.api.list(context.Background(), l.c.nodes[0], "lease/abandoned/")
		if err == nil && len(left) == 0 {
			return nil
		}
	}
	var bad []string
	for _, e := range left {
		bad = append(bad, fmt.Sprintf("key %s of an abandoned lease (TTL %v) still there 2 minutes after the run", e.Key, abandonedTTL))
	}
	if len(left) == 0 {
		bad = append(bad, "the abandoned keys could not be listed")
	}
	return bad
}

func durationsFigure(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	var sum, hi time.Duration
	for _, d := range ds {
		sum += d
		hi = max(hi, d)
	}
	return fmt.Sprintf("n=%d mean %v max %v", len(ds), (sum / time.Duration(len(ds))).Round(time.Millisecond), hi.Round(time.Millisecond))
}

func (l *leaseWorkload) figures() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprintf("leases: %d kept leases granted, %d of %d keepalives succeeded (others: %v), %d expired after keepalives failed; %d abandoned, grant to key gone %s\n",
		l.grants, l.keepalives, l.attempts, l.failures, l.expired, len(l.abandoned), durationsFigure(l.expiry))
}
