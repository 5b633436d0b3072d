package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// maxRedirects bounds same-host redirects; more is a loop, not a service.
const maxRedirects = 5

func newTransport(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Transport {
	return &http.Transport{
		// No proxy from the environment: a check must reach the instance
		// itself, not a proxy's opinion of it.
		Proxy:       nil,
		DialContext: dial,
		// Each probe opens a fresh connection: that is what tells whether
		// the instance still accepts new clients, and a thousand checked
		// instances do not pin a thousand idle sockets on the leader.
		DisableKeepAlives:     true,
		MaxIdleConns:          1,
		TLSHandshakeTimeout:   MaxTimeout,
		ResponseHeaderTimeout: MaxTimeout,
		ForceAttemptHTTP2:     false,
	}
}

// sameHostRedirects follows redirects only within the checked host:port.
// The instance is what is being checked; a redirect elsewhere (a login page,
// a CDN) says nothing about it and would let a registrant aim the leader at
// arbitrary hosts. The 3xx itself is then judged, which is critical.
func sameHostRedirects(req *http.Request, via []*http.Request) error {
	if req.URL.Host != via[0].URL.Host || req.URL.Scheme != via[0].URL.Scheme {
		return http.ErrUseLastResponse
	}
	if len(via) >= maxRedirects {
		return http.ErrUseLastResponse
	}
	return nil
}

// httpStatus is the http kind's rule: any 2xx passes, 429 (the instance is
// alive but shedding load) warns, anything else is critical.
func httpStatus(code int) Status {
	switch {
	case code >= 200 && code < 300:
		return Passing
	case code == http.StatusTooManyRequests:
		return Warning
	}
	return Critical
}

// webStatus is v1.5's rule for its web type: alive only on 200.
func webStatus(code int) Status {
	if code == http.StatusOK {
		return Passing
	}
	return Critical
}

func (p *Prober) probeHTTP(ctx context.Context, target string, timeout time.Duration, judge func(int) Status) Result {
	u, err := parseHTTPURL(target)
	if err != nil {
		return Result{Status: Critical, Output: err.Error()}
	}
	shown := shownURL(u)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return Result{Status: Critical, Output: fmt.Sprintf("GET %s: %v", shown, err)}
	}
	req.Header.Set("User-Agent", "dister-health/1")
	resp, err := p.client.Do(req)
	if err != nil {
		// url.Error would repeat the unredacted URL; unwrap to the cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return Result{Status: Critical, Output: timeoutOr(ctx, timeout, "GET "+shown, err)}
	}
	defer resp.Body.Close()
	s := judge(resp.StatusCode)
	out := fmt.Sprintf("GET %s: %s", shown, resp.Status)
	if s != Passing {
		if loc := resp.Header.Get("Location"); resp.StatusCode >= 300 && resp.StatusCode < 400 && loc != "" {
			shownLoc := "elsewhere"
			if lu, err := resp.Request.URL.Parse(loc); err == nil {
				shownLoc = shownURL(lu)
			}
			out += " (redirect to " + shownLoc + " not followed: another host or too many hops)"
		}
		// A little of the body usually says why (an error page, a JSON
		// reason), but it may hold anything the target serves: shown only
		// when the server was started to show it.
		if p.outputBody {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, MaxOutput))
			if b := strings.TrimSpace(string(body)); b != "" {
				out += ": " + b
			}
		}
	}
	return Result{Status: s, Output: out}
}

// shownURL is u as a probe output may show it: without the userinfo
// password, and with every query value replaced (tokens and passwords
// travel in queries as often as not).
func shownURL(u *url.URL) string {
	c := *u
	if _, has := c.User.Password(); has {
		c.User = url.UserPassword(c.User.Username(), "xxxxx")
	}
	if c.RawQuery != "" {
		q := c.Query()
		for k := range q {
			q[k] = []string{"xxxxx"}
		}
		c.RawQuery = q.Encode()
	}
	c.Fragment, c.RawFragment = "", ""
	return c.String()
}
