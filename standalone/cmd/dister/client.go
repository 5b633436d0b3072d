package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// client is what the client commands share: where the daemon is and how to
// print. Its fields are bound to the persistent flags of every client
// command.
type client struct {
	addr, token, group, output string
	timeout                    time.Duration
	// REST over TLS (restsec.go): the flags and the config they make.
	cacert, cert, key string
	tls               *tls.Config

	stdin          io.Reader
	stdout, stderr io.Writer
	http           *http.Client
}

// bindFlags gives cmd the client flags; --addr and --token fall back to
// DISTER_ADDR and DISTER_TOKEN.
func (c *client) bindFlags(cmd *cobra.Command, getenv env) {
	addr := getenv("DISTER_ADDR")
	if addr == "" {
		addr = "127.0.0.1:4168"
	}
	f := cmd.PersistentFlags()
	f.StringVar(&c.addr, "addr", addr, "the daemon's REST address, host:port or URL (env DISTER_ADDR)")
	// Not defaulted from the environment: help would print the secret.
	f.StringVar(&c.token, "token", "", "bearer token of the daemon (env DISTER_TOKEN)")
	f.StringVar(&c.group, "group", "", "group to work in (default: the group \"default\")")
	f.StringVarP(&c.output, "output", "o", "", "output format: table (the default) or json; balance also addr (v1.5's commands print as v1.5 did unless -o is given)")
	f.DurationVar(&c.timeout, "timeout", 30*time.Second, "how long to wait for the daemon's answer")
	c.bindTLSFlags(cmd, getenv)
	cmd.PersistentPreRunE = func(run *cobra.Command, _ []string) error {
		if !run.Flags().Changed("token") {
			c.token = getenv("DISTER_TOKEN")
		}
		switch c.output {
		case "", "table", "json":
		case "addr":
			if run.Name() != "balance" {
				return usagef("-o addr is for balance only; %s takes -o table or -o json", run.CommandPath())
			}
		default:
			if run.Name() == "balance" {
				return usagef("-o %q: want table, json or addr", c.output)
			}
			return usagef("-o %q: want table or json", c.output)
		}
		if c.timeout <= 0 {
			return usagef("--timeout %v: want a positive duration", c.timeout)
		}
		tlsCfg, err := c.tlsConfig()
		if err != nil {
			return err
		}
		c.tls = tlsCfg
		c.http = &http.Client{Timeout: c.timeout, Transport: c.transport()}
		return nil
	}
}

func (c *client) json() bool { return c.output == "json" }

// v15 reports that a v1.5 command prints v1.5's output: no -o was given.
func (c *client) v15() bool { return c.output == "" }

// apiError is a /v1 error answer: {"error":{"code","message"}}.
type apiError struct {
	Status  int
	Group   string // the --group asked for, to name it in group_not_found
	Code    string `json:"code"`
	Message string `json:"message"`
	// CompactRevision comes with "compacted": the oldest revision a watch
	// can start from.
	CompactRevision int64 `json:"compact_revision"`
}

// Error says what went wrong in a few words; the server's message repeats
// the operation, which the command line already names, so it is kept only
// where the code alone says too little.
func (e *apiError) Error() string {
	switch e.Code {
	case "not_found":
		return "not found"
	case "group_not_found":
		if e.Group != "" {
			return fmt.Sprintf("group %q not found", e.Group)
		}
		return "group not found"
	case "unauthorized":
		return "unauthorized: the daemon wants a valid --token (or DISTER_TOKEN)"
	case "forbidden":
		return "forbidden: " + e.Message
	case "compacted":
		return fmt.Sprintf("the history before revision %d is compacted: start at --from %d or later (compacted)",
			e.CompactRevision, e.CompactRevision)
	case "":
		if e.Message != "" {
			return fmt.Sprintf("HTTP %d: %s", e.Status, e.Message)
		}
		return fmt.Sprintf("HTTP %d", e.Status)
	}
	// The SDK ends its messages with the sentinel's text ("...: dister:
	// conflict"), which the code says again.
	msg := e.Message
	if i := strings.LastIndex(msg, ": dister: "); i > 0 {
		msg = msg[:i]
	}
	if msg == "" {
		return strings.ReplaceAll(e.Code, "_", " ")
	}
	return fmt.Sprintf("%s (%s)", msg, e.Code)
}

// baseURL accepts host:port or a full URL.
func (c *client) baseURL() string {
	a := strings.TrimSuffix(c.addr, "/")
	if strings.HasPrefix(a, "http://") || strings.HasPrefix(a, "https://") {
		return a
	}
	return c.scheme() + "://" + a
}

// transport is a fresh transport with the TLS settings of the flags.
func (c *client) transport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if c.tls != nil {
		tr.TLSClientConfig = c.tls.Clone()
	}
	return tr
}

// send makes one request. path is already escaped. A non-2xx answer
// becomes an *apiError; a 2xx body is returned whole.
func (c *client) send(ctx context.Context, method, path string, q url.Values, body io.Reader) ([]byte, http.Header, error) {
	u := c.baseURL() + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, nil, fmt.Errorf("bad --addr %q: %w", c.addr, err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot reach the dister daemon at %s: %w", c.addr, unwrapURLError(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the answer of %s: %w", c.addr, err)
	}
	if resp.StatusCode/100 != 2 {
		e := c.answerError(resp.StatusCode, data)
		e.Message = flagNames(e.Message, q)
		return nil, resp.Header, e
	}
	return data, resp.Header, nil
}

// flagNames rewrites the REST parameters a message names ("?ttl=...") as
// the flags they came from ("--ttl ..."; the commands name their flags
// after the parameters they set): the command line has no parameters.
func flagNames(msg string, q url.Values) string {
	for name := range q {
		msg = strings.ReplaceAll(msg, "?"+name+"=", "--"+strings.ReplaceAll(name, "_", "-")+" ")
	}
	return msg
}

// answerError decodes a non-2xx answer.
func (c *client) answerError(status int, data []byte) *apiError {
	e := &apiError{Status: status, Group: c.group}
	var wrapped struct {
		Error *apiError `json:"error"`
	}
	if json.Unmarshal(data, &wrapped) == nil && wrapped.Error != nil {
		e.Code, e.Message, e.CompactRevision = wrapped.Error.Code, wrapped.Error.Message, wrapped.Error.CompactRevision
	} else {
		e.Message = strings.TrimSpace(string(data))
		if len(e.Message) > 200 {
			e.Message = e.Message[:200] + "..."
		}
	}
	return e
}

// unwrapURLError drops the method and URL that net/http puts before the
// cause: the command line says what was asked.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// call sends a request and decodes a JSON answer into out (nil = ignore).
// It returns the raw answer too, for -o json.
func (c *client) call(ctx context.Context, method, path string, q url.Values, body io.Reader, out any) ([]byte, error) {
	data, _, err := c.send(ctx, method, path, q, body)
	if err != nil {
		return nil, err
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return nil, fmt.Errorf("the daemon at %s answered something other than the expected JSON: %w", c.addr, err)
		}
	}
	return data, nil
}

// groupQuery carries --group.
func (c *client) groupQuery() url.Values {
	q := url.Values{}
	if c.group != "" {
		q.Set("group", c.group)
	}
	return q
}

// printJSON writes a REST answer indented.
func (c *client) printJSON(data []byte) error { return c.printIndent(data, "  ") }

// printIndent writes a JSON answer indented by indent (as it came when it
// is not JSON).
func (c *client) printIndent(data []byte, indent string) error {
	var buf bytes.Buffer
	// The daemon ends its JSON with a newline; one is added below.
	data = bytes.TrimRight(data, " \t\r\n")
	if err := json.Indent(&buf, data, "", indent); err != nil {
		buf.Reset()
		buf.Write(data)
	}
	buf.WriteByte('\n')
	_, err := c.stdout.Write(buf.Bytes())
	return err
}

// jsonBody encodes v for a request.
func jsonBody(v any) io.Reader {
	data, _ := json.Marshal(v)
	return bytes.NewReader(data)
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// mustJSON encodes a value the CLI built itself (it cannot fail).
func mustJSON(v any) []byte {
	data, _ := json.Marshal(v)
	return data
}
