package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/bits"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/dister/dister"
)

// benchTarget is what "dister bench" drives: the daemon's REST API or a
// client-role node opened in this process.
type benchTarget interface {
	put(ctx context.Context, key string, value []byte) error
	get(ctx context.Context, key string) error
	// watch follows the keys under prefix until ctx ends, calling ready
	// once the watch is set up and event with the value of each put. It
	// returns nil when ctx ended it.
	watch(ctx context.Context, prefix string, ready func(), event func(value []byte)) error
	// firstKey is the first key under prefix ("" = none); it also checks
	// that the cluster answers, with the token and group given.
	firstKey(ctx context.Context, prefix string) (string, error)
	// deletePrefix removes every key under prefix with one delete.
	deletePrefix(ctx context.Context, prefix string) (int64, error)
	close()
}

// restTarget talks to the daemon the way the other commands do (client.send),
// over keep-alive connections, one per bench client.
type restTarget struct {
	c           *client
	group, read url.Values // ?group= for writes; with ?consistency= for reads
	hc          *http.Client
}

func newRESTTarget(c *client, clients int, consistency string) *restTarget {
	tr := c.transport()
	tr.MaxIdleConns = clients + 4
	tr.MaxIdleConnsPerHost = clients + 4
	hc := &http.Client{Timeout: c.timeout, Transport: tr}
	c.http = hc
	read := c.groupQuery()
	read.Set("consistency", consistency)
	return &restTarget{c: c, group: c.groupQuery(), read: read, hc: hc}
}

func (t *restTarget) put(ctx context.Context, key string, value []byte) error {
	_, _, err := t.c.send(ctx, "PUT", keyPath(key), t.group, bytes.NewReader(value))
	return err
}

func (t *restTarget) get(ctx context.Context, key string) error {
	_, _, err := t.c.send(ctx, "GET", keyPath(key), t.read, nil)
	return err
}

func (t *restTarget) firstKey(ctx context.Context, prefix string) (string, error) {
	q := t.c.groupQuery()
	q.Set("prefix", prefix)
	q.Set("limit", "1")
	var page listAnswer
	if _, err := t.c.call(ctx, "GET", "/v1/kv", q, nil, &page); err != nil {
		return "", err
	}
	if len(page.Entries) == 0 {
		return "", nil
	}
	return page.Entries[0].Key, nil
}

func (t *restTarget) deletePrefix(ctx context.Context, prefix string) (int64, error) {
	q := t.c.groupQuery()
	q.Set("prefix", "true")
	var ans struct {
		Deleted int64 `json:"deleted"`
	}
	_, err := t.c.call(ctx, "DELETE", keyPath(prefix), q, nil, &ans)
	return ans.Deleted, err
}

// watch reads one /v1/watch stream (Server-Sent Events); a dropped stream
// is an error, not resumed: the bench measures, it does not recover.
func (t *restTarget) watch(ctx context.Context, prefix string, ready func(), event func([]byte)) error {
	tr := t.c.transport()
	tr.ResponseHeaderTimeout = t.c.timeout
	defer tr.CloseIdleConnections()
	q := t.c.groupQuery()
	q.Set("prefix", prefix)
	req, err := http.NewRequestWithContext(ctx, "GET", t.c.baseURL()+"/v1/watch?"+q.Encode(), nil)
	if err != nil {
		return fmt.Errorf("bad --addr %q: %w", t.c.addr, err)
	}
	req.Header.Set("Accept", "text/event-stream")
	if t.c.token != "" {
		req.Header.Set("Authorization", "Bearer "+t.c.token)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("cannot reach the dister daemon at %s: %w", t.c.addr, unwrapURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		return t.c.answerError(resp.StatusCode, data)
	}
	ready()
	r := bufio.NewReader(resp.Body)
	var kind, data string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("the watch stream ended: %w", err)
		}
		line = strings.TrimRight(line, "\r\n")
		if line != "" {
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "event":
				kind = value
			case "data":
				data = value
			}
			continue
		}
		switch kind {
		case "error":
			e := &apiError{Group: t.c.group}
			if err := json.Unmarshal([]byte(data), e); err != nil || e.Code == "" {
				e.Message = data
			}
			return e
		case "put":
			var ev watchEvent
			if err := json.Unmarshal([]byte(data), &ev); err != nil {
				return fmt.Errorf("the daemon sent an event that is not the expected JSON: %w", err)
			}
			v, err := ev.bytes()
			if err != nil {
				return err
			}
			event(v)
		}
		kind, data = "", ""
	}
}

func (t *restTarget) close() { t.hc.CloseIdleConnections() }

// nodeTarget is a client-role node in this process: what an application
// embedding the SDK gets.
type nodeTarget struct {
	n    *dister.Node
	kv   *dister.KV
	read dister.ReadOption
}

func openNodeTarget(o *benchOptions, c *client) (*nodeTarget, error) {
	opts := dister.Options{Role: dister.RoleClient, Servers: o.servers, Token: o.peerToken,
		Logger: slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	if opts.Token == "" {
		opts.Token = c.token
	}
	if o.tlsCA != "" || o.tlsCert != "" || o.tlsKey != "" {
		opts.TLS = &dister.TLS{CAFile: o.tlsCA, CertFile: o.tlsCert, KeyFile: o.tlsKey}
	}
	n, err := dister.Open(context.Background(), opts)
	if err != nil {
		return nil, err
	}
	t := &nodeTarget{n: n, kv: n.Group(c.group).KV()}
	switch o.consistency {
	case "session":
		t.read = dister.SessionRead()
	case "stale":
		t.read = dister.Stale()
	default:
		t.read = dister.Linearizable()
	}
	return t, nil
}

func (t *nodeTarget) put(ctx context.Context, key string, value []byte) error {
	_, err := t.kv.Put(ctx, key, value)
	return err
}

func (t *nodeTarget) get(ctx context.Context, key string) error {
	_, err := t.kv.Get(ctx, key, t.read)
	return err
}

func (t *nodeTarget) firstKey(ctx context.Context, prefix string) (string, error) {
	p, err := t.kv.ListPage(ctx, prefix, dister.Limit(1))
	if err != nil || len(p.Entries) == 0 {
		return "", err
	}
	return p.Entries[0].Key, nil
}

func (t *nodeTarget) deletePrefix(ctx context.Context, prefix string) (int64, error) {
	r, err := t.kv.Delete(ctx, prefix, dister.WithPrefix())
	return r.Deleted, err
}

func (t *nodeTarget) watch(ctx context.Context, prefix string, ready func(), event func([]byte)) error {
	events := t.kv.Watch(ctx, prefix)
	ready()
	for ev := range events {
		switch {
		case ev.Err != nil:
			if ctx.Err() != nil {
				continue // the end of the run; the channel closes next
			}
			return ev.Err
		case ev.Type == dister.EventPut:
			event(ev.Entry.Value)
		}
	}
	return nil
}

func (t *nodeTarget) close() { _ = t.n.Close() }

// hist counts latencies in buckets less than 1% wide: percentiles close
// enough, in memory that does not grow with the run.
type hist struct {
	counts [64 * histSub]int64
	n      int64
	max    time.Duration
}

// histSub is the number of buckets per power of two (below it, one per ns).
const histSub = 128

func bucketOf(v int64) int {
	if v < histSub {
		return int(max(v, 0))
	}
	e := bits.Len64(uint64(v)) - 8 // v>>e has 8 bits: in [128, 256)
	return (e+1)*histSub + int(v>>e) - histSub
}

// bucketTop is the largest value of bucket i.
func bucketTop(i int) int64 {
	if i < histSub {
		return int64(i)
	}
	e := i/histSub - 1
	m := int64(i%histSub + histSub)
	return (m+1)<<e - 1
}

func (h *hist) record(d time.Duration) {
	h.counts[bucketOf(int64(d))]++
	h.n++
	h.max = max(h.max, d)
}

func (h *hist) merge(o *hist) {
	for i, n := range o.counts {
		h.counts[i] += n
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// quantile is the latency q (0..1) of the ops fall under: the top of its
// bucket, never above the maximum seen.
func (h *hist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := int64(q*float64(h.n) + 0.999999)
	rank = min(max(rank, 1), h.n)
	var seen int64
	for i, n := range h.counts {
		if seen += n; seen >= rank {
			return min(time.Duration(bucketTop(i)), h.max)
		}
	}
	return h.max
}
