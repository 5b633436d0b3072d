package standalone

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"runtime/debug"
	"slices"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
)

// recover answers a panic with 500 instead of dropping the connection.
// No user input should lead here; it is a net for bugs.
func (s *Server) recover(c *gin.Context) {
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		if err, ok := r.(error); ok && errors.Is(err, http.ErrAbortHandler) {
			panic(r) // net/http's own way to abort a response
		}
		s.opts.Logger.Error("panic serving request", "method", c.Request.Method, "path", c.Request.URL.Path,
			"panic", r, "stack", string(debug.Stack()))
		if c.Writer.Written() {
			c.Abort()
			return
		}
		if isLegacyPath(c.Request.URL.Path) {
			s.legacyFail(c, "internal error")
			c.Abort()
			return
		}
		s.failCode(c, http.StatusInternalServerError, codeInternal, "internal error")
	}()
	c.Next()
}

// limitBody caps every request body at Options.MaxBodyBytes; handlers see
// an *http.MaxBytesError past it and answer too_large.
func (s *Server) limitBody(c *gin.Context) {
	if c.Request.Body != nil {
		c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, s.opts.MaxBodyBytes)
	}
	c.Next()
}

// deadline gives the request's ctx a deadline: ?timeout= when param is
// set and the request has one, else Options.RequestTimeout.
func (s *Server) deadline(param bool) gin.HandlerFunc {
	return func(c *gin.Context) {
		d := s.opts.RequestTimeout
		if v, ok := c.GetQuery("timeout"); ok && param {
			t, err := time.ParseDuration(v)
			if err != nil || t <= 0 || t > maxRequestTimeout {
				s.fail(c, invalidf("?timeout=%q: want a Go duration in (0, %v]", v, maxRequestTimeout))
				return
			}
			d = t
		}
		ctx, cancel := context.WithTimeout(c.Request.Context(), d)
		defer cancel()
		c.Request = c.Request.WithContext(ctx)
		// The body is read with io.ReadAll, which knows no ctx: without a
		// read deadline on the connection a body sent a byte at a time held
		// the handler (and up to MaxBodyBytes) past any timeout. It stays
		// set after the handler: the server drains an unread body before it
		// answers, and that must end too; it sets the connection's
		// deadlines afresh for the next request. A second later than ctx's:
		// the server's read that watches for a client leaving (while the
		// handler runs) cancels ctx when it times out, and a handler ending
		// at its own deadline must see that deadline, not a cancel.
		_ = http.NewResponseController(c.Writer).SetReadDeadline(time.Now().Add(d + time.Second))
		c.Next()
	}
}

// commonParams are accepted on every /v1 route.
var commonParams = []string{"group", "timeout"}

// params refuses a query string that does not parse or names a parameter
// the route does not take: an option this version does not know must not
// be silently ignored.
func params(c *gin.Context, allowed ...string) error {
	q, err := url.ParseQuery(c.Request.URL.RawQuery)
	if err != nil {
		return invalidf("query string: %v", err)
	}
	for k := range q {
		if !slices.Contains(allowed, k) && !slices.Contains(commonParams, k) {
			return invalidf("unknown parameter %q", k)
		}
		if len(q[k]) > 1 {
			return invalidf("parameter %q given %d times", k, len(q[k]))
		}
	}
	return nil
}

// isLegacyPath: the v1.5 routes, which answer in their own envelope.
func isLegacyPath(p string) bool {
	switch p {
	case "/kv", "/node", "/service", "/balance":
		return true
	}
	return false
}

// parseInt reads an integer query parameter within [lo, hi]; def when absent.
func parseInt(c *gin.Context, name string, def, lo, hi int64) (int64, error) {
	v, ok := c.GetQuery(name)
	if !ok {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, invalidf("?%s=%q: want an integer in [%d, %d]", name, v, lo, hi)
	}
	return n, nil
}
