package standalone

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"

	"github.com/gin-gonic/gin"

	"github.com/dister/dister"
)

// The legacy API of dister v1.5 (docs/legacy.md), over group "default":
//
//	GET    /kv?k=KEY            data: the value as a JSON string
//	GET    /kv                  data: {key: value} of every key (at most
//	                            legacyMaxKeys)
//	POST   /kv  {"k":"v",...}   one atomic write of every pair
//	DELETE /kv  ["k",...]       one atomic write removing the keys
//	GET    /node                data: node objects, this server first
//	POST   /node ["host[:port]",...]   add servers
//	DELETE /node ["host[:port]",...]   remove the servers with those Raft addresses
//
// /service and /balance are in legacy_service.go.
//
// PUT is POST. Every answer is HTTP 200 with {"result":1,"message":"ok",
// "data":...} or {"result":0,"message":"<error>","data":null}. A POST or
// DELETE of /kv takes at most dister.MaxTxnOps keys, the limit of one
// atomic write. Values are strings: a value that is not valid UTF-8 (only
// the /v1 API can write one) reads back with U+FFFD in place of bad bytes.

// legacyMaxKeys is v1.5's limit on GET /kv without a key.
const legacyMaxKeys = 1000

// Messages of v1.5, kept word for word.
const (
	msgOK           = "ok"
	msgDataNotFound = "data not found"
	msgTooManyKeys  = "too large data size, need a key to search"
	msgInvalidType  = "invalid data type: "
)

type envelope struct {
	Result  int    `json:"result"`
	Message string `json:"message"`
	Data    any    `json:"data"`
}

func (s *Server) legacyOK(c *gin.Context, data any, rev int64) {
	s.replyEnd(c, http.StatusOK, envelope{Result: 1, Message: msgOK, Data: data}, rev, "")
}

func (s *Server) legacyFail(c *gin.Context, message string) {
	s.replyEnd(c, http.StatusOK, envelope{Result: 0, Message: message}, noRevision, "")
	c.Abort()
}

// legacyError words an SDK error: input the SDK refused is v1.5's
// "invalid data type", anything else says what happened.
func (s *Server) legacyError(c *gin.Context, err error) {
	if errors.Is(err, dister.ErrInvalid) || errors.Is(err, dister.ErrTooLarge) {
		s.legacyFail(c, msgInvalidType+err.Error())
		return
	}
	s.opts.Logger.Debug("legacy request failed", "method", c.Request.Method, "path", c.Request.URL.Path, "err", err)
	s.legacyFail(c, err.Error())
}

// legacyBody reads a JSON body into v; the error is the whole message.
func legacyBody(c *gin.Context, v any, want string) (string, bool) {
	body, err := io.ReadAll(c.Request.Body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return fmt.Sprintf("%srequest body over %d bytes", msgInvalidType, tooBig.Limit), false
		}
		return msgInvalidType + "reading the request body: " + err.Error(), false
	}
	d := json.NewDecoder(bytes.NewReader(body))
	err = d.Decode(v)
	var syntax *json.SyntaxError
	switch {
	case err == nil:
	case errors.As(err, &syntax):
		return fmt.Sprintf("%smalformed JSON: %v", msgInvalidType, err), false
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return msgInvalidType + "malformed JSON: empty or cut short", false
	default: // valid JSON of another shape; Go's type names would not help
		return msgInvalidType + "want " + want, false
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return msgInvalidType + "malformed JSON: data after the first value", false
	}
	return "", true
}

func (s *Server) legacyGetKV(c *gin.Context) {
	kv := s.node.KV()
	ctx := c.Request.Context()
	if key := c.Query("k"); key != "" {
		e, err := kv.Get(ctx, key)
		if errors.Is(err, dister.ErrNotFound) {
			s.legacyFail(c, msgDataNotFound)
			return
		}
		if err != nil {
			s.legacyError(c, err)
			return
		}
		s.legacyOK(c, string(e.Value), noRevision)
		return
	}
	p, err := kv.ListPage(ctx, "", dister.Limit(legacyMaxKeys))
	if err != nil {
		s.legacyError(c, err)
		return
	}
	if p.More {
		s.legacyFail(c, msgTooManyKeys)
		return
	}
	all := make(map[string]string, len(p.Entries))
	for _, e := range p.Entries {
		all[e.Key] = string(e.Value)
	}
	s.legacyOK(c, all, p.Revision)
}

func (s *Server) legacyPutKV(c *gin.Context) {
	const want = `a JSON object of string values, {"key":"value",...}`
	var raw map[string]json.RawMessage
	if msg, ok := legacyBody(c, &raw, want); !ok {
		s.legacyFail(c, msg)
		return
	}
	if raw == nil { // the body was null
		s.legacyFail(c, msgInvalidType+"want "+want)
		return
	}
	if len(raw) > dister.MaxTxnOps {
		s.legacyFail(c, fmt.Sprintf("%s%d keys, more than %d in one write", msgInvalidType, len(raw), dister.MaxTxnOps))
		return
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	slices.Sort(keys) // a deterministic op order
	var t dister.Txn
	for _, k := range keys {
		var v string
		if err := json.Unmarshal(raw[k], &v); err != nil || bytes.Equal(bytes.TrimSpace(raw[k]), []byte("null")) {
			s.legacyFail(c, fmt.Sprintf("%svalue of key %q is not a string", msgInvalidType, k))
			return
		}
		t.Then = append(t.Then, dister.Put(k, []byte(v)))
	}
	s.legacyTxn(c, t)
}

func (s *Server) legacyDeleteKV(c *gin.Context) {
	const want = `a JSON array of keys, ["key",...]`
	var keys []string
	if msg, ok := legacyBody(c, &keys, want); !ok {
		s.legacyFail(c, msg)
		return
	}
	if keys == nil { // the body was null
		s.legacyFail(c, msgInvalidType+"want "+want)
		return
	}
	if len(keys) > dister.MaxTxnOps {
		s.legacyFail(c, fmt.Sprintf("%s%d keys, more than %d in one write", msgInvalidType, len(keys), dister.MaxTxnOps))
		return
	}
	var t dister.Txn
	for _, k := range keys {
		t.Then = append(t.Then, dister.Del(k))
	}
	s.legacyTxn(c, t)
}

// legacyTxn commits t, one atomic write; nothing to write is a success.
func (s *Server) legacyTxn(c *gin.Context, t dister.Txn) {
	if len(t.Then) == 0 {
		s.legacyOK(c, nil, noRevision)
		return
	}
	r, err := s.node.KV().Txn(c.Request.Context(), t)
	if err != nil {
		s.legacyError(c, err)
		return
	}
	s.legacyOK(c, nil, r.Revision)
}
