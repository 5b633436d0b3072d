package standalone

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/dister/dister"
)

// GET /v1/watch?prefix=P&from=REV streams the changes of keys under P
// (all keys without it) as Server-Sent Events, one message per event:
//
//	event: put | delete | progress | error
//	id: R     (only on the last event of revision R, and on progress)
//	data: {"type":"put","key":...,"value":...,"create_revision":...,
//	       "mod_revision":...,"version":...,"lease":...,"revision":R,
//	       "prev":{entry}}                       (prev only with ?prev=true)
//	data: {"type":"delete","key":...,"mod_revision":R,...,"revision":R}
//	data: {"type":"progress","revision":R}
//	data: {"code":"...","message":"..."[,"compact_revision":C]}
//
// A delete's entry carries no value (its "prev" does, with ?prev=true).
// Because id is set only where a revision is complete, a client that
// reconnects with "Last-Event-ID: R" (as EventSource does) resumes at R+1
// with nothing lost or repeated; the header wins over ?from. ?from=0 or no
// ?from starts after the revision in X-Dister-Revision, this server's
// revision when the stream began, so resuming with that number is exact
// too. A start below the retained history is 410 compacted with
// compact_revision, before any stream byte; other start errors are the
// usual error answers. An error after the stream began (compaction while
// catching up, Node closed, group deleted) is sent as
// event: error, and the stream ends.
//
// The stream ends cleanly when the client goes away, at ?timeout= when one
// is given (Options.RequestTimeout does not apply: it only bounds the
// start), or on CloseStreams. A progress event comes every 15 s, which
// keeps proxies from closing an idle stream.
//
// Streams are not bounded in number here: each costs two goroutines and a
// bounded queue, and a watcher that cannot keep up is cancelled by the
// SDK. Bound connections in front of the daemon (or with the embedding
// http.Server's listener) where that matters.

// watchEventJSON is the data of a put, delete or progress event.
type watchEventJSON struct {
	Type string `json:"type"`
	*entryJSON
	Revision int64      `json:"revision"`
	Prev     *entryJSON `json:"prev,omitempty"`
}

// streamErrorJSON is the data of an error event.
type streamErrorJSON struct {
	Code            string `json:"code"`
	Message         string `json:"message"`
	CompactRevision int64  `json:"compact_revision,omitempty"`
}

func (s *Server) watch(c *gin.Context) {
	if err := params(c, "prefix", "from", "prev"); err != nil {
		s.fail(c, err)
		return
	}
	prev, err := boolParam(c, "prev")
	if err != nil {
		s.fail(c, err)
		return
	}
	from, err := parseInt(c, "from", 0, 0, 1<<62)
	if err != nil {
		s.fail(c, err)
		return
	}
	resume := false
	if v := c.GetHeader("Last-Event-ID"); v != "" {
		last, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil || last < 0 || last >= 1<<62 {
			s.fail(c, invalidf("Last-Event-ID %q: want a revision", v))
			return
		}
		from, resume = last+1, true
	}
	ctx, cancel, ok := s.streamContext(c)
	if !ok {
		return
	}
	defer cancel()
	// The local revision both stamps the answer and pins "from now", and
	// reading it first resolves the group within a bound: Watch itself
	// would wait for an unknown group as long as the stream may last.
	kv := s.kv(c)
	start, err := s.startRevision(c, kv)
	if err != nil {
		s.fail(c, err)
		return
	}
	if from == 0 {
		from = start + 1
	}
	if resume && from-1 > start {
		// A resume past this server's revision: the server lags, or the
		// id is not the group's (the group was deleted and created again
		// since, and its revisions started again at 1): a watch from the
		// future would miss every event up to there.
		if err := s.reached(c, kv, from-1); err != nil {
			s.fail(c, fmt.Errorf("Last-Event-ID %d: %w", from-1, err))
			return
		}
	}
	opts := []dister.WatchOption{dister.FromRevision(from)}
	if prev {
		opts = append(opts, dister.WithPrevEntry())
	}
	events := kv.Watch(ctx, c.Query("prefix"), opts...)
	defer func() {
		// Draining until the SDK closes the channel means its goroutines
		// are done when the handler returns.
		cancel()
		for range events {
		}
	}()

	first, ok := firstEvent(events)
	if ok && first.Err != nil {
		if ctx.Err() != nil {
			return // the client left before the stream began
		}
		var body errorBody
		status, code := classify(first.Err)
		body.Error = apiError{Code: code, Message: first.Err.Error()}
		if errors.Is(first.Err, dister.ErrCompacted) {
			body.Error.CompactRevision = first.CompactRevision
		}
		s.reply(c, status, body, start)
		c.Abort()
		return
	}

	s.metrics.watchStreams.Inc()
	defer s.metrics.watchStreams.Dec()
	h := c.Writer.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	// Proxies such as nginx buffer responses unless told not to.
	h.Set("X-Accel-Buffering", "no")
	h.Set(headerRevision, strconv.FormatInt(start, 10))
	c.Writer.WriteHeader(http.StatusOK)
	c.Writer.Flush()

	st := &stream{s: s, c: c, ctx: ctx, pos: from - 1}
	if ok && !st.send(first) {
		return
	}
	for ev := range events {
		if !st.send(ev) {
			return
		}
	}
}

// startRevision is the group's revision on this server, read within the
// request timeout.
func (s *Server) startRevision(c *gin.Context, kv *dister.KV) (int64, error) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), s.opts.RequestTimeout)
	defer cancel()
	return kv.Revision(ctx, dister.Stale())
}

// reached waits, within the request timeout, until this server has applied
// revision rev; ErrInvalid when the group has not reached it.
func (s *Server) reached(c *gin.Context, kv *dister.KV, rev int64) error {
	ctx, cancel := context.WithTimeout(c.Request.Context(), s.opts.RequestTimeout)
	defer cancel()
	_, err := kv.Revision(ctx, dister.Stale(), dister.MinRevision(rev))
	return err
}

// firstEvent takes an event that is already there: the SDK reports a start
// below the history (and other start errors) before Watch returns, so they
// can be answered with a status instead of inside the stream.
func firstEvent(events <-chan dister.WatchEvent) (dister.WatchEvent, bool) {
	select {
	case ev, ok := <-events:
		return ev, ok
	default:
		return dister.WatchEvent{}, false
	}
}

// stream is one open SSE answer.
type stream struct {
	s   *Server
	c   *gin.Context
	ctx context.Context
	// pos is the revision the client can resume after: the last id sent,
	// or where the stream began.
	pos int64
}

// send writes one event, flushing at the end of its revision; false ends
// the stream.
func (st *stream) send(ev dister.WatchEvent) bool {
	if !stillAllowed(st.c) {
		return false
	}
	if ev.Err != nil {
		if st.ctx.Err() == nil {
			st.sendError(ev)
		}
		return false
	}
	if ev.Type == dister.EventProgress {
		// A server whose feed lags behind where the stream began (a resume
		// on a follower further behind than the last server) reports
		// progress below it; an id going back would make the client's
		// next resume repeat events.
		ev.Revision = max(ev.Revision, st.pos)
	}
	data := watchEventJSON{Type: ev.Type.String(), Revision: ev.Revision}
	switch ev.Type {
	case dister.EventPut:
		e := toEntryJSON(&ev.Entry)
		data.entryJSON = &e
	case dister.EventDelete:
		data.entryJSON = &entryJSON{Key: ev.Entry.Key, ModRevision: ev.Entry.ModRevision}
	}
	if ev.PrevEntry != nil {
		p := toEntryJSON(ev.PrevEntry)
		data.Prev = &p
	}
	b, err := json.Marshal(data)
	if err != nil {
		return false // the package's own types always encode
	}
	id := ""
	if ev.LastInRevision {
		id = strconv.FormatInt(ev.Revision, 10)
		st.pos = ev.Revision
	}
	if err := writeEvent(st.c.Writer, ev.Type.String(), id, b); err != nil {
		return false
	}
	if ev.LastInRevision {
		st.c.Writer.Flush()
	}
	return true
}

func (st *stream) sendError(ev dister.WatchEvent) {
	_, code := classify(ev.Err)
	data := streamErrorJSON{Code: code, Message: ev.Err.Error()}
	if errors.Is(ev.Err, dister.ErrCompacted) {
		data.CompactRevision = ev.CompactRevision
	}
	b, _ := json.Marshal(data)
	if writeEvent(st.c.Writer, "error", "", b) == nil {
		st.c.Writer.Flush()
	}
	st.s.opts.Logger.Debug("watch stream ended", "path", st.c.Request.URL.Path, "err", ev.Err)
}

// writeEvent writes one SSE message; data is JSON, so it has no newline.
func writeEvent(w io.Writer, event, id string, data []byte) error {
	var b strings.Builder
	b.Grow(len(data) + 32)
	fmt.Fprintf(&b, "event: %s\n", event)
	if id != "" {
		fmt.Fprintf(&b, "id: %s\n", id)
	}
	b.WriteString("data: ")
	b.Write(data)
	b.WriteString("\n\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// CloseStreams ends every open watch stream, and those started later, as
// if their clients had gone: each client sees its stream end without an
// error event and resumes with Last-Event-ID wherever it reconnects.
// Register it with http.Server.RegisterOnShutdown: Shutdown waits for
// active requests, and a stream is never done by itself.
func (s *Server) CloseStreams() { s.endStreams() }

// streamContext is the context of one SSE stream: it ends with the
// request, after ?timeout= when one is given, and when the server closes
// its streams. ok = false: the failure was answered.
func (s *Server) streamContext(c *gin.Context) (ctx context.Context, cancel context.CancelFunc, ok bool) {
	var limit time.Duration
	if v, given := c.GetQuery("timeout"); given {
		var err error
		if limit, err = time.ParseDuration(v); err != nil || limit <= 0 || limit > maxRequestTimeout {
			s.fail(c, invalidf("?timeout=%q: want a Go duration in (0, %v]", v, maxRequestTimeout))
			return nil, nil, false
		}
	}
	if s.streams.Err() != nil {
		s.fail(c, fmt.Errorf("watch: the server is shutting down: %w", dister.ErrClosed))
		return nil, nil, false
	}
	var end context.CancelFunc
	if limit > 0 {
		ctx, end = context.WithTimeout(c.Request.Context(), limit)
	} else {
		ctx, end = context.WithCancel(c.Request.Context())
	}
	stop := context.AfterFunc(s.streams, end)
	return ctx, func() { stop(); end() }, true
}
