package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

// Reconnect backoff of kv watch after its stream dropped.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 2 * time.Second
)

// watchEvent is the data of a put, delete or progress event of /v1/watch.
type watchEvent struct {
	Type string `json:"type"`
	entry
	Revision int64  `json:"revision"`
	Prev     *entry `json:"prev,omitempty"`
}

func newKVWatchCmd(c *client) *cobra.Command {
	var (
		from           int64
		prev, progress bool
	)
	cmd := &cobra.Command{
		Use:   "watch [PREFIX]",
		Short: "Print the changes of keys under PREFIX as they happen, until interrupted",
		Long: `Print the changes of keys under PREFIX (every key without it) as they
happen, one line per event, until interrupted (Ctrl-C exits 0):

  PUT key = value (rev N)
  DELETE key (rev N)

-o json prints each event's JSON instead. A dropped connection is resumed
where it left off, with nothing lost or repeated; a compacted history or
another error of the daemon ends the command with exit code 1.`,
		Args: rangeArgs(0, 1),
	}
	cmd.Flags().Int64Var(&from, "from", 0, "start at this revision (0 = with the next change)")
	cmd.Flags().BoolVar(&prev, "prev", false, "add each key's previous value")
	cmd.Flags().BoolVar(&progress, "progress", false, "print progress events too (PROGRESS (rev N)), every 15s or so")
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		if from < 0 {
			return usagef("--from %d: want a revision >= 0", from)
		}
		w := &watcher{c: c, prev: prev, progress: progress, next: from}
		if len(args) == 1 {
			w.prefix = args[0]
		}
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		err := w.run(ctx)
		if ctx.Err() != nil {
			return nil // interrupted: the normal way to end a watch
		}
		if err != nil {
			return fmt.Errorf("kv watch %q: %w", w.prefix, err)
		}
		return nil
	})
	return cmd
}

// watcher follows one /v1/watch stream across reconnects.
type watcher struct {
	c              *client
	prefix         string
	prev, progress bool
	// next is the first revision not yet printed (0 = from now): what a
	// reconnect asks for.
	next int64
}

// run streams until ctx ends or an error that a reconnect would not cure.
// The first connection must succeed; after that, the stream is resumed
// for as long as the daemon is unreachable for less than --timeout.
func (w *watcher) run(ctx context.Context) error {
	// No overall timeout, which would cut the stream; the answer's headers
	// must come within --timeout.
	tr := w.c.transport()
	tr.ResponseHeaderTimeout = w.c.timeout
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	connected := false
	var failingSince time.Time
	backoff := minBackoff
	for {
		body, err := w.connect(ctx, hc)
		if err != nil {
			if ctx.Err() != nil || !connected || !retryable(err) {
				return err
			}
			if failingSince.IsZero() {
				failingSince = time.Now()
			}
			if time.Since(failingSince) > w.c.timeout {
				return fmt.Errorf("the stream dropped and reconnecting failed for %v: %w", w.c.timeout, err)
			}
		} else {
			connected, failingSince = true, time.Time{}
			began := time.Now()
			err = w.read(body)
			body.Close()
			var done *streamEnd
			if ctx.Err() != nil || errors.As(err, &done) {
				return err
			}
			// Dropped: resume at once after a stream that lasted; back
			// off otherwise, so that a daemon ending every stream at once
			// is not hammered.
			if time.Since(began) > maxBackoff {
				backoff = minBackoff
				continue
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// retryable: the daemon is unreachable, or has no quorum for now.
func retryable(err error) bool {
	var ae *apiError
	if !errors.As(err, &ae) {
		return true
	}
	switch ae.Status {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// connect opens the stream at w.next and returns its body.
func (w *watcher) connect(ctx context.Context, hc *http.Client) (io.ReadCloser, error) {
	q := w.c.groupQuery()
	q.Set("prefix", w.prefix)
	if w.prev {
		q.Set("prev", "true")
	}
	req, err := http.NewRequestWithContext(ctx, "GET", w.c.baseURL()+"/v1/watch?"+q.Encode(), nil)
	if err != nil {
		return nil, fmt.Errorf("bad --addr %q: %w", w.c.addr, err)
	}
	req.Header.Set("Accept", "text/event-stream")
	if w.next > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatInt(w.next-1, 10))
	}
	if w.c.token != "" {
		req.Header.Set("Authorization", "Bearer "+w.c.token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the dister daemon at %s: %w", w.c.addr, unwrapURLError(err))
	}
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		return nil, w.c.answerError(resp.StatusCode, data)
	}
	// A stream from now begins right after the daemon's revision: a
	// reconnect before the first event resumes there.
	if w.next == 0 {
		if rev, err := strconv.ParseInt(resp.Header.Get("X-Dister-Revision"), 10, 64); err == nil {
			w.next = rev + 1
		}
	}
	return resp.Body, nil
}

// streamEnd is why a stream ended for good: an error event of the daemon,
// or stdout that cannot be written.
type streamEnd struct{ err error }

func (e *streamEnd) Error() string { return e.err.Error() }
func (e *streamEnd) Unwrap() error { return e.err }

// read prints the events of one connection; a nil or plain error means
// the connection dropped. The events of a revision are printed once the
// last of them (the one with an id) has come, so that a revision cut by a
// dropped connection and sent again on resuming is printed once.
func (w *watcher) read(body io.Reader) error {
	r := bufio.NewReader(body)
	var (
		event, id, data string
		held            []string // lines of the revision under way
	)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		if line != "" {
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "event":
				event = value
			case "id":
				id = value
			case "data":
				data = value
			}
			continue
		}
		if event != "" || data != "" {
			out, err := w.format(event, data)
			if err != nil {
				return err
			}
			if out != "" {
				held = append(held, out)
			}
			if n, err := strconv.ParseInt(id, 10, 64); err == nil {
				for _, l := range held {
					if _, err := fmt.Fprintln(w.c.stdout, l); err != nil {
						return &streamEnd{err}
					}
				}
				held = held[:0]
				w.next = n + 1
			}
		}
		event, id, data = "", "", ""
	}
}

// format is the line to print for an event ("" = none).
func (w *watcher) format(event, data string) (string, error) {
	switch event {
	case "error":
		e := &apiError{Group: w.c.group}
		if err := json.Unmarshal([]byte(data), e); err != nil || e.Code == "" {
			e.Message = data
		}
		return "", &streamEnd{e}
	case "put", "delete", "progress":
	default:
		return "", nil // a kind of event this version does not know
	}
	if event == "progress" && !w.progress {
		return "", nil
	}
	if w.c.json() {
		return data, nil
	}
	var ev watchEvent
	if err := json.Unmarshal([]byte(data), &ev); err != nil {
		return "", &streamEnd{fmt.Errorf("the daemon at %s sent an event that is not the expected JSON: %w", w.c.addr, err)}
	}
	return eventLine(event, &ev), nil
}

// eventLine is the table form of an event.
func eventLine(event string, ev *watchEvent) string {
	var b strings.Builder
	switch event {
	case "put":
		fmt.Fprintf(&b, "PUT %s = %s (rev %d", printable(ev.Key), valueText(&ev.entry), ev.Revision)
	case "delete":
		fmt.Fprintf(&b, "DELETE %s (rev %d", printable(ev.Key), ev.Revision)
	default:
		fmt.Fprintf(&b, "PROGRESS (rev %d", ev.Revision)
	}
	if ev.Prev != nil {
		fmt.Fprintf(&b, ", prev %s", valueText(ev.Prev))
	}
	b.WriteString(")")
	return b.String()
}

// valueText keeps a value on one line.
func valueText(e *entry) string {
	if e.Value == nil && e.ValueBase64 != "" {
		return "(binary)"
	}
	if e.Value == nil {
		return ""
	}
	return printable(*e.Value)
}
