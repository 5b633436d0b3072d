package standalone

import (
	"encoding/base64"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"github.com/dister/dister"
)

// KV routes of /v1:
//
//	GET    /v1/kv/{key}   entry JSON; ?raw = the value bytes alone
//	                      (application/octet-stream) with X-Dister-Mod-Revision
//	PUT    /v1/kv/{key}   body = the value bytes; ?cas=MOD_REVISION (0 = must
//	                      not exist) -> {"revision":N}, 409 conflict if not;
//	                      ?lease=ID puts the key with that lease (404
//	                      lease_not_found), ?ttl=10s with a new lease of that
//	                      TTL, revoked again if the put fails ->
//	                      {"revision":N,"lease":ID}
//	DELETE /v1/kv/{key}   ?prefix=true removes the subtree; ?cas= as for PUT
//	                      (not with prefix) -> {"revision":N,"deleted":K}
//	GET    /v1/kv         ?prefix=P&limit=N&after=K ->
//	                      {"revision":R,"entries":[...],"more":bool}
//
// Reads take ?consistency=linearizable|session|stale (default session) and
// ?min_revision=R. The key is the rest of the path after /v1/kv/,
// percent-decoded and not cleaned: /v1/kv/a//b is "a//b", /v1/kv//a is
// "/a", /v1/kv/a%2Fb is "a/b".

const kvPrefix = "/v1/kv/"

// entryJSON is one key. Value holds the value when it is valid UTF-8;
// otherwise ValueBase64 does (standard encoding, padded).
type entryJSON struct {
	Key            string  `json:"key"`
	Value          *string `json:"value,omitempty"`
	ValueBase64    string  `json:"value_base64,omitempty"`
	CreateRevision int64   `json:"create_revision"`
	ModRevision    int64   `json:"mod_revision"`
	Version        int64   `json:"version"`
	Lease          int64   `json:"lease"`
}

func toEntryJSON(e *dister.Entry) entryJSON {
	out := entryJSON{Key: e.Key, CreateRevision: e.CreateRevision, ModRevision: e.ModRevision,
		Version: e.Version, Lease: int64(e.Lease)}
	if utf8.Valid(e.Value) {
		v := string(e.Value)
		out.Value = &v
	} else {
		out.ValueBase64 = base64.StdEncoding.EncodeToString(e.Value)
	}
	return out
}

// pathKey is the key of a /v1/kv/{key} request, taken from the escaped
// path so that %2F stays part of a segment and nothing is cleaned.
func pathKey(u *url.URL) (string, error) {
	esc := u.EscapedPath()
	// Skip the escaped form of the prefix: the router matched it on the
	// decoded path, and each "%XX" decodes to one byte.
	i := 0
	for n := 0; n < len(kvPrefix); n++ {
		if i >= len(esc) {
			return "", invalidf("path %q has no key", u.Path)
		}
		if esc[i] == '%' {
			i += 3
		} else {
			i++
		}
	}
	if i > len(esc) {
		return "", invalidf("path %q has no key", u.Path)
	}
	key, err := url.PathUnescape(esc[i:])
	if err != nil {
		return "", invalidf("key in path %q: %v", esc, err)
	}
	return key, nil
}

// readOptions parses ?consistency= and ?min_revision=.
func readOptions(c *gin.Context) ([]dister.ReadOption, error) {
	var opts []dister.ReadOption
	switch v := c.Query("consistency"); v {
	case "", "session":
		opts = append(opts, dister.SessionRead())
	case "linearizable":
		opts = append(opts, dister.Linearizable())
	case "stale":
		opts = append(opts, dister.Stale())
	default:
		return nil, invalidf("?consistency=%q: want linearizable, session or stale", v)
	}
	floor, err := parseInt(c, "min_revision", 0, 0, 1<<62)
	if err != nil {
		return nil, err
	}
	if floor > 0 {
		opts = append(opts, dister.MinRevision(floor))
	}
	return opts, nil
}

// boolParam reads a boolean parameter; a bare "?raw" counts as true.
func boolParam(c *gin.Context, name string) (bool, error) {
	v, ok := c.GetQuery(name)
	if !ok {
		return false, nil
	}
	if v == "" {
		return true, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, invalidf("?%s=%q: want true or false", name, v)
	}
	return b, nil
}

func (s *Server) getKV(c *gin.Context) {
	if err := params(c, "raw", "consistency", "min_revision"); err != nil {
		s.fail(c, err)
		return
	}
	key, err := pathKey(c.Request.URL)
	if err != nil {
		s.fail(c, err)
		return
	}
	raw, err := boolParam(c, "raw")
	if err != nil {
		s.fail(c, err)
		return
	}
	opts, err := readOptions(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	// A client-role node tells whether its cache answered.
	client := s.node.Role() == dister.RoleClient
	var hit bool
	if client {
		opts = append(opts, dister.CacheInfo(&hit))
	}
	e, rev, err := s.kv(c).GetWithRevision(c.Request.Context(), key, opts...)
	if client {
		c.Header(headerCache, map[bool]string{true: "hit", false: "miss"}[hit])
	}
	if err != nil {
		s.fail(c, err)
		return
	}
	if raw {
		s.stamp(c, rev)
		c.Header(headerModRevision, strconv.FormatInt(e.ModRevision, 10))
		c.Data(http.StatusOK, "application/octet-stream", e.Value)
		return
	}
	s.reply(c, http.StatusOK, toEntryJSON(e), rev)
}

// putJSON answers a PUT; lease is set when the key was put with one.
type putJSON struct {
	Revision int64 `json:"revision"`
	Lease    int64 `json:"lease,omitempty"`
}

func (s *Server) putKV(c *gin.Context) {
	if err := params(c, "cas", "lease", "ttl"); err != nil {
		s.fail(c, err)
		return
	}
	key, err := pathKey(c.Request.URL)
	if err != nil {
		s.fail(c, err)
		return
	}
	var opts []dister.WriteOption
	if _, ok := c.GetQuery("cas"); ok {
		r, err := parseInt(c, "cas", 0, 0, 1<<62)
		if err != nil {
			s.fail(c, err)
			return
		}
		opts = append(opts, dister.IfModRevision(r))
	}
	lease, ttl, err := putLease(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	value, err := io.ReadAll(c.Request.Body)
	if err != nil {
		s.fail(c, bodyError(err))
		return
	}
	// Grant last, after everything that can refuse the request for what
	// it says, so that fewer leases are granted only to be revoked.
	if ttl != 0 {
		if lease, err = s.leases(c).Grant(c.Request.Context(), ttl); err != nil {
			s.fail(c, err)
			return
		}
		if s.putLeaseHook != nil {
			s.putLeaseHook(lease)
		}
	}
	if lease != 0 {
		opts = append(opts, dister.WithLease(lease))
	}
	rev, err := s.kv(c).Put(c.Request.Context(), key, value, opts...)
	if err != nil {
		if ttl != 0 {
			s.dropLease(c, lease)
		}
		s.fail(c, err)
		return
	}
	s.reply(c, http.StatusOK, putJSON{Revision: rev, Lease: int64(lease)}, rev)
}

func (s *Server) deleteKV(c *gin.Context) {
	if err := params(c, "prefix", "cas"); err != nil {
		s.fail(c, err)
		return
	}
	key, err := pathKey(c.Request.URL)
	if err != nil {
		s.fail(c, err)
		return
	}
	var opts []dister.WriteOption
	prefix, err := boolParam(c, "prefix")
	if err != nil {
		s.fail(c, err)
		return
	}
	if prefix {
		opts = append(opts, dister.WithPrefix())
	}
	if _, ok := c.GetQuery("cas"); ok {
		r, err := parseInt(c, "cas", 0, 0, 1<<62)
		if err != nil {
			s.fail(c, err)
			return
		}
		opts = append(opts, dister.IfModRevision(r))
	}
	res, err := s.kv(c).Delete(c.Request.Context(), key, opts...)
	if err != nil {
		s.fail(c, err)
		return
	}
	s.reply(c, http.StatusOK, map[string]int64{"revision": res.Revision, "deleted": res.Deleted}, res.Revision)
}

type pageJSON struct {
	Revision int64       `json:"revision"`
	Entries  []entryJSON `json:"entries"`
	More     bool        `json:"more"` // keys remain: continue with ?after= the last key
}

func (s *Server) listKV(c *gin.Context) {
	if err := params(c, "prefix", "limit", "after", "consistency", "min_revision"); err != nil {
		s.fail(c, err)
		return
	}
	opts, err := readOptions(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	limit, err := parseInt(c, "limit", 0, 1, dister.MaxListLimit)
	if err != nil {
		s.fail(c, err)
		return
	}
	if limit > 0 {
		opts = append(opts, dister.Limit(int(limit)))
	}
	if after, ok := c.GetQuery("after"); ok {
		opts = append(opts, dister.After(after))
	}
	p, err := s.kv(c).ListPage(c.Request.Context(), c.Query("prefix"), opts...)
	if err != nil {
		s.fail(c, err)
		return
	}
	out := pageJSON{Revision: p.Revision, Entries: make([]entryJSON, len(p.Entries)), More: p.More}
	for i := range p.Entries {
		out.Entries[i] = toEntryJSON(&p.Entries[i])
	}
	s.reply(c, http.StatusOK, out, p.Revision)
}
