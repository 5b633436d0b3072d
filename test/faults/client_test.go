package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// outcome is what a request tells about its effect. A 503 (no_quorum,
// closed) or a refused connection surely did not apply; a 504, a 500, a
// cut connection or a client timeout may have: unknown, never failed.
type outcome uint8

const (
	outOK outcome = iota
	outFail
	outUnknown
)

func (o outcome) String() string {
	return [...]string{"ok", "fail", "unknown"}[o]
}

const (
	// serverTimeout is the ?timeout= of every request; the client waits
	// longer so that the server's own 504 arrives.
	serverTimeout = 3 * time.Second
	clientTimeout = 6 * time.Second
)

// restClient speaks REST to the daemons through their published ports.
type restClient struct {
	token string
	http  *http.Client
}

func newRESTClient(token string) *restClient {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     30 * time.Second,
	}
	return &restClient{token: token, http: &http.Client{Transport: tr, Timeout: clientTimeout}}
}

// reply is one answer, classified.
type reply struct {
	status int
	body   []byte
	rev    int64 // X-Dister-Revision; 0 when absent
	out    outcome
	err    error
}

func (r reply) String() string {
	if r.err != nil {
		return fmt.Sprintf("%v (%v)", r.out, r.err)
	}
	return fmt.Sprintf("%v %d %s", r.out, r.status, bytes.TrimSpace(r.body))
}

// do sends one request; query gets ?timeout= added.
func (c *restClient) do(ctx context.Context, nd *node, method, path string, query url.Values, body []byte) reply {
	if query == nil {
		query = url.Values{}
	}
	query.Set("timeout", serverTimeout.String())
	u := "http://" + nd.rest + path + "?" + query.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return reply{out: outFail, err: err}
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return reply{out: transportOutcome(err), err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{out: outUnknown, err: err, status: resp.StatusCode}
	}
	r := reply{status: resp.StatusCode, body: b}
	r.rev, _ = strconv.ParseInt(resp.Header.Get("X-Dister-Revision"), 10, 64)
	switch {
	case resp.StatusCode < 300, resp.StatusCode == http.StatusNotFound, resp.StatusCode == http.StatusConflict:
		r.out = outOK // a definite answer; callers read it
	case resp.StatusCode == http.StatusServiceUnavailable:
		r.out = outFail
	default: // 504, 500, or an answer the harness did not expect
		r.out = outUnknown
	}
	return r
}

// transportOutcome: a connection that was never made carried no request.
func transportOutcome(err error) outcome {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return outFail
	}
	return outUnknown
}

type entryJSON struct {
	Key         string  `json:"key"`
	Value       *string `json:"value"`
	ModRevision int64   `json:"mod_revision"`
	Lease       int64   `json:"lease"`
}

// get reads key; found false on 404. consistency: linearizable|session.
func (c *restClient) get(ctx context.Context, nd *node, key, consistency string, floor int64) (entryJSON, bool, reply) {
	q := url.Values{"consistency": {consistency}}
	if floor > 0 {
		q.Set("min_revision", strconv.FormatInt(floor, 10))
	}
	r := c.do(ctx, nd, http.MethodGet, "/v1/kv/"+key, q, nil)
	var e entryJSON
	if r.out != outOK {
		return e, false, r
	}
	if r.status == http.StatusNotFound {
		if !bytes.Contains(r.body, []byte(`"not_found"`)) {
			r.out = outUnknown
		}
		return e, false, r
	}
	if err := json.Unmarshal(r.body, &e); err != nil || e.Value == nil {
		r.out, r.err = outUnknown, fmt.Errorf("entry %q: %v", r.body, err)
	}
	return e, true, r
}

// put writes key; the revision of the write on success.
func (c *restClient) put(ctx context.Context, nd *node, key, value string, q url.Values) (int64, reply) {
	r := c.do(ctx, nd, http.MethodPut, "/v1/kv/"+key, q, []byte(value))
	if r.out != outOK {
		return 0, r
	}
	var out struct {
		Revision int64 `json:"revision"`
	}
	if r.status != http.StatusOK || json.Unmarshal(r.body, &out) != nil || out.Revision == 0 {
		r.out, r.err = outUnknown, fmt.Errorf("put answered %d %s", r.status, r.body)
	}
	return out.Revision, r
}

// cas sets key to value if it holds old (the empty value: absent), in one
// transaction; succeeded and the revision of the transaction.
func (c *restClient) cas(ctx context.Context, nd *node, key, old, value string) (bool, int64, reply) {
	body, _ := json.Marshal(map[string]any{
		"if":   []any{map[string]any{"key": key, "target": "value", "op": "=", "value": old}},
		"then": []any{map[string]any{"op": "put", "key": key, "value": value}},
	})
	r := c.do(ctx, nd, http.MethodPost, "/v1/txn", nil, body)
	if r.out != outOK {
		return false, 0, r
	}
	var out struct {
		Succeeded bool  `json:"succeeded"`
		Revision  int64 `json:"revision"`
	}
	if r.status != http.StatusOK || json.Unmarshal(r.body, &out) != nil {
		r.out, r.err = outUnknown, fmt.Errorf("txn answered %d %s", r.status, r.body)
	}
	return out.Succeeded, out.Revision, r
}

// list reads every key under prefix, page by page, linearizably.
func (c *restClient) list(ctx context.Context, nd *node, prefix string) ([]entryJSON, error) {
	var all []entryJSON
	after := ""
	for {
		q := url.Values{"prefix": {prefix}, "limit": {"500"}, "consistency": {"linearizable"}}
		if after != "" {
			q.Set("after", after)
		}
		r := c.do(ctx, nd, http.MethodGet, "/v1/kv", q, nil)
		if r.out != outOK || r.status != http.StatusOK {
			return nil, fmt.Errorf("list %q on node %d: %v", prefix, nd.id, r)
		}
		var page struct {
			Entries []entryJSON `json:"entries"`
			More    bool        `json:"more"`
		}
		if err := json.Unmarshal(r.body, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Entries...)
		if !page.More || len(page.Entries) == 0 {
			return all, nil
		}
		after = page.Entries[len(page.Entries)-1].Key
	}
}

// leader is the leader of group default as nd sees it; 0 when unknown.
func (c *restClient) leader(ctx context.Context, nd *node) int {
	r := c.do(ctx, nd, http.MethodGet, "/v1/status", url.Values{}, nil)
	if r.status != http.StatusOK {
		return 0
	}
	var st struct {
		Groups []struct {
			Name   string `json:"name"`
			Leader int    `json:"leader"`
		} `json:"groups"`
	}
	if json.Unmarshal(r.body, &st) != nil {
		return 0
	}
	for _, g := range st.Groups {
		if g.Name == "default" {
			return g.Leader
		}
	}
	return 0
}

// ready: /readyz answers 200.
func (c *restClient) ready(nd *node) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	r := c.do(ctx, nd, http.MethodGet, "/readyz", url.Values{}, nil)
	return r.status == http.StatusOK
}
