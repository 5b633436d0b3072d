package faults

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const regPrefix = "reg/"

// kvWorkload drives registers (read, write, CAS, session reads) from
// several clients, one writer of keys written once (ack/), and a watcher
// of the register prefix that resumes through faults.
type kvWorkload struct {
	c     *cluster
	rec   *recorder
	keys  atomic.Pointer[[]string] // the registers of the current round
	procs atomic.Int64

	ackMu sync.Mutex
	acked []ackWrite

	watchMu     sync.Mutex
	events      []watchEvent
	resumes     int
	compacted   string // a 410's answer, if one came
	watchLastID atomic.Int64
}

func newKVWorkload(c *cluster, rec *recorder) *kvWorkload {
	w := &kvWorkload{c: c, rec: rec}
	w.setRound(0)
	return w
}

// setRound gives each round keys of its own, so that porcupine checks
// each key's short history alone.
func (w *kvWorkload) setRound(r int) {
	keys := make([]string, 4)
	for i := range keys {
		keys[i] = fmt.Sprintf("%sr%03d/k%d", regPrefix, r, i)
	}
	w.keys.Store(&keys)
}

func (w *kvWorkload) newProc() int { return int(w.procs.Add(1)) - 1 }

// client runs operations one at a time until stop is closed. A request is
// never cancelled by stop: that would make its outcome unknown.
func (w *kvWorkload) client(stop <-chan struct{}, id int) {
	proc := w.newProc()
	rng := rand.New(rand.NewPCG(uint64(id), uint64(time.Now().UnixNano())))
	var floor int64
	lastRead := map[string]string{}
	ctx := context.Background()
	for seq := 0; ; seq++ {
		select {
		case <-stop:
			return
		default:
		}
		keys := *w.keys.Load()
		key := keys[rng.IntN(len(keys))]
		nd := w.c.nodes[rng.IntN(len(w.c.nodes))]
		o := op{client: proc, node: nd.id, key: key, call: w.rec.now()}
		var r reply
		switch p := rng.IntN(100); {
		case p < 35:
			o.kind = opRead
			var e entryJSON
			var found bool
			e, found, r = w.c.api.get(ctx, nd, key, "linearizable", 0)
			if found {
				o.value, o.rev = *e.Value, e.ModRevision
			}
		case p < 50:
			o.kind, o.floor = opSessionRead, floor
			var e entryJSON
			var found bool
			e, found, r = w.c.api.get(ctx, nd, key, "session", floor)
			if found {
				o.value, o.rev = *e.Value, e.ModRevision
			}
		case p < 75:
			o.kind, o.value = opWrite, fmt.Sprintf("c%d-%d", id, seq)
			o.rev, r = w.c.api.put(ctx, nd, key, o.value, nil)
		default:
			o.kind, o.value, o.old = opCAS, fmt.Sprintf("c%d-%d", id, seq), lastRead[key]
			o.ok, o.rev, r = w.c.api.cas(ctx, nd, key, o.old, o.value)
		}
		o.ret, o.out, o.hdr = w.rec.now(), r.out, r.rev
		if r.out != outOK {
			o.detail = r.String()
		}
		w.rec.add(o)
		switch {
		case r.out == outUnknown:
			proc = w.newProc() // the old process may still be in flight
		case r.out == outOK:
			floor = max(floor, o.hdr, o.rev)
			if o.kind == opRead || o.kind == opSessionRead {
				lastRead[key] = o.value
			}
		}
		if r.out != outOK {
			time.Sleep(50 * time.Millisecond) // no busy loop against a down server
		}
	}
}

// ackWriter puts keys written once until stop; the acknowledged ones must
// all be there at the end.
func (w *kvWorkload) ackWriter(stop <-chan struct{}) {
	ctx := context.Background()
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		default:
		}
		nd := w.c.nodes[n%len(w.c.nodes)]
		key, value := fmt.Sprintf("ack/%07d", n), "a"+strconv.Itoa(n)
		rev, r := w.c.api.put(ctx, nd, key, value, nil)
		if r.out == outOK {
			w.ackMu.Lock()
			w.acked = append(w.acked, ackWrite{key: key, value: value, rev: rev})
			w.ackMu.Unlock()
		} else {
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// watcher follows regPrefix from revision 1 until ctx ends, reconnecting
// to the next server with Last-Event-ID after every error, and anyway
// after a few seconds, so that resumes happen through every fault.
func (w *kvWorkload) watcher(ctx context.Context) {
	hc := &http.Client{Transport: w.c.api.http.Transport}
	for i := 0; ctx.Err() == nil; i++ {
		nd := w.c.nodes[i%len(w.c.nodes)]
		w.watchOnce(ctx, hc, nd, time.Duration(3+i%5)*time.Second)
		w.watchMu.Lock()
		w.resumes++
		done := w.compacted != ""
		w.watchMu.Unlock()
		if done {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (w *kvWorkload) watchOnce(ctx context.Context, hc *http.Client, nd *node, life time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, life)
	defer cancel()
	last := w.watchLastID.Load()
	u := "http://" + nd.rest + "/v1/watch?prefix=" + regPrefix
	if last == 0 {
		u += "&from=1"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return
	}
	req.Header.Set("Authorization", "Bearer "+w.c.token)
	if last > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatInt(last, 10))
	}
	resp, err := hc.Do(req)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusGone {
		var b strings.Builder
		bufio.NewReader(resp.Body).WriteTo(&b) //nolint:errcheck
		w.watchMu.Lock()
		w.compacted = fmt.Sprintf("410 after revision %d: %s", last, b.String())
		w.watchMu.Unlock()
		return
	}
	if resp.StatusCode != http.StatusOK {
		return
	}
	// Events are kept only once their revision is complete (the event
	// with id:); a block cut short is received again after the resume.
	var block []watchEvent
	var event, id, data string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = line[len("event: "):]
		case strings.HasPrefix(line, "id: "):
			id = line[len("id: "):]
		case strings.HasPrefix(line, "data: "):
			data = line[len("data: "):]
		case line == "":
			if event == "put" {
				var ev struct {
					Key      string  `json:"key"`
					Value    *string `json:"value"`
					Revision int64   `json:"revision"`
				}
				if json.Unmarshal([]byte(data), &ev) == nil && ev.Value != nil {
					block = append(block, watchEvent{rev: ev.Revision, key: ev.Key, value: *ev.Value, node: nd.id, at: w.rec.now()})
				}
			}
			if event == "error" {
				return
			}
			if id != "" {
				n, err := strconv.ParseInt(id, 10, 64)
				if err == nil && n >= w.watchLastID.Load() {
					w.watchMu.Lock()
					w.events = append(w.events, block...)
					w.watchMu.Unlock()
					w.watchLastID.Store(n)
				}
				block = block[:0]
			}
			event, id, data = "", "", ""
		}
	}
}

// watchSaw reports whether the watcher received value.
func (w *kvWorkload) watchSaw(value string) bool {
	w.watchMu.Lock()
	defer w.watchMu.Unlock()
	for i := len(w.events) - 1; i >= 0; i-- {
		if w.events[i].value == value {
			return true
		}
	}
	return false
}
