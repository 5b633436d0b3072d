package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"
)

// svcWorkload registers two instances of service "api" with tcp checks on
// endpoints in containers of their own: e1 stays up, e2 is killed and
// started again in cycles. A poller reads the passing set through any
// server. Figures: time from e2's kill to its exclusion and from its
// start to its return; the longest exclusion of e1, which never went down.
type svcWorkload struct {
	c   *cluster
	ep  map[string]string // instance id -> container name
	ips map[string]string

	mu    sync.Mutex
	polls []svcPoll
	kills []svcToggle
}

type svcPoll struct {
	at       time.Time
	ok       bool
	e1, e2   bool
	fromNode int
}

type svcToggle struct{ killed, started time.Time }

// startEndpoints runs two endpoint containers (the dister binary as a
// lone server: its HTTP port is what the tcp checks dial) and registers
// them.
func startEndpoints(t testing.TB, c *cluster) *svcWorkload {
	t.Helper()
	s := &svcWorkload{c: c, ep: map[string]string{}, ips: map[string]string{}}
	for i, id := range []string{"e1", "e2"} {
		name := fmt.Sprintf("%s-%s", c.run, id)
		ip := fmt.Sprintf("%s.%d", c.frontSubnet, 201+i)
		c.extra = append(c.extra, name)
		if _, err := docker(context.Background(), "run", "-d", "--name", name, "--label", c.labelKV,
			"--network", c.front, "--ip", ip, c.image, "server", "--http-addr", "0.0.0.0:8080",
			"--token", c.token, "--data-dir", "/endpoint", "--log-level", "error"); err != nil {
			t.Fatal(err)
		}
		s.ep[id], s.ips[id] = name, ip
	}
	for _, id := range []string{"e1", "e2"} {
		body, _ := json.Marshal(map[string]any{
			"address": s.ips[id] + ":8080",
			"check":   map[string]string{"type": "tcp", "target": s.ips[id] + ":8080", "interval": "1s", "timeout": "500ms"},
		})
		var r reply
		for try := 0; try < 30; try++ {
			r = c.api.do(context.Background(), c.nodes[try%len(c.nodes)], http.MethodPut, "/v1/services/api/instances/"+id, nil, body)
			if r.out == outOK && r.status != http.StatusNotFound {
				break
			}
			time.Sleep(time.Second)
		}
		if r.status != http.StatusOK {
			t.Fatalf("registering %s: %v", id, r)
		}
	}
	return s
}

// poller reads the passing instances every 250 ms until stop.
func (s *svcWorkload) poller(stop <-chan struct{}) {
	ctx := context.Background()
	for i := 0; sleepOrStop(stop, 250*time.Millisecond); i++ {
		nd := s.c.nodes[i%len(s.c.nodes)]
		r := s.c.api.do(ctx, nd, http.MethodGet, "/v1/services/api", url.Values{"passing": {"true"}}, nil)
		p := svcPoll{at: time.Now(), fromNode: nd.id}
		var out struct {
			Instances []struct {
				ID string `json:"id"`
			} `json:"instances"`
		}
		if r.out == outOK && r.status == http.StatusOK && json.Unmarshal(r.body, &out) == nil {
			p.ok = true
			for _, in := range out.Instances {
				p.e1 = p.e1 || in.ID == "e1"
				p.e2 = p.e2 || in.ID == "e2"
			}
		}
		s.mu.Lock()
		s.polls = append(s.polls, p)
		s.mu.Unlock()
	}
}

// toggler kills e2 for 10 s every 20 s until stop; it leaves e2 running.
func (s *svcWorkload) toggler(t testing.TB, stop <-chan struct{}) {
	for sleepOrStop(stop, 10*time.Second) {
		tg := svcToggle{killed: time.Now()}
		if _, err := docker(context.Background(), "kill", "-s", "KILL", s.ep["e2"]); err != nil {
			t.Error(err)
			return
		}
		sleepOrStop(stop, 10*time.Second)
		if _, err := docker(context.Background(), "start", s.ep["e2"]); err != nil {
			t.Error(err)
			return
		}
		tg.started = time.Now()
		s.mu.Lock()
		s.kills = append(s.kills, tg)
		s.mu.Unlock()
	}
}

// svcFigures is what the service polls showed.
type svcFigures struct {
	polls, cycles         int
	toExclusion, toReturn []time.Duration
	longestHealthyOut     time.Duration
	neverExcluded         int // cycles in which no poll saw e2 excluded
}

// check computes the figures, and the violations: e2 must come back
// after its last start (waited for here, within a bound far past every
// check interval) and e1 must be passing at the end.
func (s *svcWorkload) check(stop chan struct{}) (svcFigures, []string) {
	var bad []string
	// Wait until a poll shows both passing again.
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		n := len(s.polls)
		last := svcPoll{}
		if n > 0 {
			last = s.polls[n-1]
		}
		s.mu.Unlock()
		if last.ok && last.e1 && last.e2 {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	close(stop)
	s.mu.Lock()
	defer s.mu.Unlock()
	f := svcFigures{polls: len(s.polls), cycles: len(s.kills)}
	if n := len(s.polls); n == 0 || !(s.polls[n-1].ok && s.polls[n-1].e1 && s.polls[n-1].e2) {
		bad = append(bad, "e1 and e2 not both passing a minute after the run")
	}
	for _, k := range s.kills {
		excluded := false
		for _, p := range s.polls {
			if p.ok && !p.e2 && p.at.After(k.killed) && p.at.Before(k.started) {
				f.toExclusion = append(f.toExclusion, p.at.Sub(k.killed))
				excluded = true
				break
			}
		}
		if !excluded {
			f.neverExcluded++
		}
		for _, p := range s.polls {
			if p.ok && p.e2 && p.at.After(k.started) {
				f.toReturn = append(f.toReturn, p.at.Sub(k.started))
				break
			}
		}
	}
	var out time.Time
	for _, p := range s.polls {
		if !p.ok {
			continue
		}
		if !p.e1 && out.IsZero() {
			out = p.at
		}
		if p.e1 && !out.IsZero() {
			f.longestHealthyOut = max(f.longestHealthyOut, p.at.Sub(out))
			out = time.Time{}
		}
	}
	return f, bad
}

func (f svcFigures) String() string {
	return fmt.Sprintf("services: %d polls, %d down cycles of e2 (never seen excluded in %d); kill to exclusion %s; start to return %s; longest exclusion of the healthy e1 %v\n",
		f.polls, f.cycles, f.neverExcluded, durationsFigure(f.toExclusion), durationsFigure(f.toReturn), f.longestHealthyOut.Round(time.Millisecond))
}
