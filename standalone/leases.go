package standalone

import (
	"context"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/dister/dister"
)

// Lease routes of /v1:
//
//	POST   /v1/leases                 body {"ttl":"10s"} -> 201 {"id":N,"ttl":"10s"}
//	GET    /v1/leases/{id}            {"id":N,"ttl":"10s","keys":["k",...]}
//	PUT    /v1/leases/{id}/keepalive  {"id":N,"ttl":"10s"}: the countdown
//	                                  restarts at the full TTL
//	DELETE /v1/leases/{id}            {"id":N}; the lease's keys are deleted
//
// A TTL is a Go duration within dister.MinLeaseTTL..MaxLeaseTTL (400
// invalid otherwise); an unknown, expired or revoked lease is 404
// lease_not_found. The server never renews a lease granted here (no
// AutoRenew): its REST client does, so that the client's keys vanish
// when the client does. PUT /v1/kv/{key} takes ?lease=ID, or ?ttl= to
// grant a lease for that key alone (kv.go).

type grantJSON struct {
	TTL string `json:"ttl"`
}

type leaseJSON struct {
	ID  int64  `json:"id"`
	TTL string `json:"ttl"`
}

type leaseInfoJSON struct {
	ID   int64    `json:"id"`
	TTL  string   `json:"ttl"`
	Keys []string `json:"keys"`
}

// leases is the Leases of the selected group.
func (s *Server) leases(c *gin.Context) *dister.Leases {
	return s.node.Group(c.GetString(keyGroup)).Leases()
}

// parseTTL reads a lease TTL; the SDK checks its range.
func parseTTL(what, v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, invalidf("%s %q: want a Go duration such as \"10s\"", what, v)
	}
	return d, nil
}

func leaseID(c *gin.Context) (dister.LeaseID, error) {
	v := c.Param("id")
	id, err := strconv.ParseInt(v, 10, 64)
	if err != nil || id <= 0 {
		return 0, invalidf("lease id %q: want an integer > 0", v)
	}
	return dister.LeaseID(id), nil
}

func (s *Server) grantLease(c *gin.Context) {
	if err := params(c); err != nil {
		s.fail(c, err)
		return
	}
	var in grantJSON
	if err := readJSON(c, &in); err != nil {
		s.fail(c, err)
		return
	}
	ttl, err := parseTTL("ttl", in.TTL)
	if err != nil {
		s.fail(c, err)
		return
	}
	id, err := s.leases(c).Grant(c.Request.Context(), ttl)
	if err != nil {
		s.fail(c, err)
		return
	}
	s.reply(c, http.StatusCreated, leaseJSON{ID: int64(id), TTL: ttl.String()}, noRevision)
}

func (s *Server) getLease(c *gin.Context) {
	if err := params(c); err != nil {
		s.fail(c, err)
		return
	}
	id, err := leaseID(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	li, err := s.leases(c).Get(c.Request.Context(), id)
	if err != nil {
		s.fail(c, err)
		return
	}
	out := leaseInfoJSON{ID: int64(li.ID), TTL: li.TTL.String(), Keys: li.Keys}
	if out.Keys == nil {
		out.Keys = []string{}
	}
	s.reply(c, http.StatusOK, out, noRevision)
}

func (s *Server) keepAliveLease(c *gin.Context) {
	if err := params(c); err != nil {
		s.fail(c, err)
		return
	}
	id, err := leaseID(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	// The TTL tells the client how soon to renew again.
	ttl, err := s.leases(c).Renew(c.Request.Context(), id)
	if err != nil {
		s.fail(c, err)
		return
	}
	s.reply(c, http.StatusOK, leaseJSON{ID: int64(id), TTL: ttl.String()}, noRevision)
}

func (s *Server) revokeLease(c *gin.Context) {
	if err := params(c); err != nil {
		s.fail(c, err)
		return
	}
	id, err := leaseID(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	if err := s.leases(c).Revoke(c.Request.Context(), id); err != nil {
		s.fail(c, err)
		return
	}
	s.reply(c, http.StatusOK, map[string]int64{"id": int64(id)}, noRevision)
}

// putLease reads ?lease= and ?ttl= of PUT /v1/kv/{key}: the lease to put
// the key with (0 = none), or the TTL of a lease to grant for it (0 =
// none). Grant checks the TTL's range.
func putLease(c *gin.Context) (dister.LeaseID, time.Duration, error) {
	id, err := parseInt(c, "lease", 0, 1, math.MaxInt64)
	if err != nil {
		return 0, 0, err
	}
	v, ok := c.GetQuery("ttl")
	if !ok {
		return dister.LeaseID(id), 0, nil
	}
	if id != 0 {
		return 0, 0, invalidf("?lease= and ?ttl= exclude each other")
	}
	ttl, err := parseTTL("?ttl=", v)
	if err == nil && ttl <= 0 {
		// Zero would read as "no lease" below.
		err = invalidf("?ttl=%q: want a positive duration", v)
	}
	return 0, ttl, err
}

// dropLease revokes the lease a ?ttl= put granted when the put failed, so
// that it does not linger until it expires. Failing that, it expires.
func (s *Server) dropLease(c *gin.Context, id dister.LeaseID) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request.Context()), s.opts.RequestTimeout)
	defer cancel()
	if err := s.leases(c).Revoke(ctx, id); err != nil {
		s.opts.Logger.Debug("revoking the lease of a failed put", "lease", id, "err", err)
	}
}
