package standalone

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/dister/dister"
)

// GET /v1/watch/services/{name} streams a service's instance set as
// Server-Sent Events, one message per change:
//
//	event: instances
//	id: R
//	data: {"revision":R,"instances":[...]}     (the whole set, as GET shows it)
//
//	event: error
//	data: {"code":"...","message":"..."}
//
// The first message is the current set (instances may be empty); each
// later one is the set after a revision that changed it. Because every
// message carries the whole set, a client that reconnects needs no
// Last-Event-ID: its new stream starts with the set as it is then.
//
// A bad name or an unknown group is answered with the usual error status
// before the stream begins. An error after it began is sent as event:
// error and ends the stream. The stream ends cleanly when the client goes
// away, at ?timeout= when one is given, or on CloseStreams. A comment line
// comes every 15 s, which keeps proxies from closing an idle stream.

// serviceKeepAlive is how often an idle service stream gets a comment.
const serviceKeepAlive = 15 * time.Second

type serviceEventJSON struct {
	Revision  int64          `json:"revision"`
	Instances []instanceJSON `json:"instances"`
}

func (s *Server) watchServices(c *gin.Context) {
	if err := params(c); err != nil {
		s.fail(c, err)
		return
	}
	ctx, cancel, ok := s.streamContext(c)
	if !ok {
		return
	}
	defer cancel()
	// Resolve the group within a bound: the SDK would wait for an unknown
	// one as long as the stream may last.
	if err := s.groupExists(c); err != nil {
		s.fail(c, err)
		return
	}
	name := c.Param("name")
	events := s.services(c).Watch(ctx, name)
	defer func() {
		// Draining until the SDK closes the channel means its goroutines
		// are done when the handler returns.
		cancel()
		for range events {
		}
	}()

	// The first event (the current set, or why there is none) decides
	// between an error status and a stream; wait for it within the
	// request timeout.
	first, err := s.firstServiceEvent(ctx, events)
	if err != nil {
		if c.Request.Context().Err() == nil {
			s.fail(c, err)
		}
		return
	}

	s.metrics.watchStreams.Inc()
	defer s.metrics.watchStreams.Dec()
	h := c.Writer.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	h.Set(headerRevision, strconv.FormatInt(first.Revision, 10))
	c.Writer.WriteHeader(http.StatusOK)

	if !s.sendServiceEvent(ctx, c, first) {
		return
	}
	tick := time.NewTicker(serviceKeepAlive)
	defer tick.Stop()
	for {
		select {
		case ev, ok := <-events:
			if !ok || !s.sendServiceEvent(ctx, c, ev) {
				return
			}
		case <-tick.C:
			if _, err := io.WriteString(c.Writer, ": keepalive\n\n"); err != nil {
				return
			}
			c.Writer.Flush()
		}
	}
}

// firstServiceEvent waits for the watch's first event within the request
// timeout; an error when it carries one or does not come in time.
func (s *Server) firstServiceEvent(ctx context.Context, events <-chan dister.ServiceEvent) (dister.ServiceEvent, error) {
	timer := time.NewTimer(s.opts.RequestTimeout)
	defer timer.Stop()
	select {
	case ev, ok := <-events:
		switch {
		case !ok:
			return ev, fmt.Errorf("watch ended before it began: %w", dister.ErrClosed)
		case ev.Err != nil:
			return ev, ev.Err
		}
		return ev, nil
	case <-timer.C:
		return dister.ServiceEvent{}, fmt.Errorf("watch: no instance set within %v: %w", s.opts.RequestTimeout, context.DeadlineExceeded)
	case <-ctx.Done():
		return dister.ServiceEvent{}, ctx.Err()
	}
}

// sendServiceEvent writes one event and flushes it; false ends the stream.
func (s *Server) sendServiceEvent(ctx context.Context, c *gin.Context, ev dister.ServiceEvent) bool {
	if !stillAllowed(c) {
		return false
	}
	if ev.Err != nil {
		if ctx.Err() != nil {
			return false // the client left, ?timeout= ran out or the server shuts down
		}
		_, code := classify(ev.Err)
		b, _ := json.Marshal(streamErrorJSON{Code: code, Message: ev.Err.Error()})
		if writeEvent(c.Writer, "error", "", b) == nil {
			c.Writer.Flush()
		}
		s.opts.Logger.Debug("service watch stream ended", "path", c.Request.URL.Path, "err", ev.Err)
		return false
	}
	data := serviceEventJSON{Revision: ev.Revision, Instances: make([]instanceJSON, len(ev.Instances))}
	for i := range ev.Instances {
		data.Instances[i] = toInstanceJSON(&ev.Instances[i])
	}
	b, err := json.Marshal(data)
	if err != nil {
		return false // the package's own types always encode
	}
	if err := writeEvent(c.Writer, "instances", strconv.FormatInt(ev.Revision, 10), b); err != nil {
		return false
	}
	c.Writer.Flush()
	return true
}
