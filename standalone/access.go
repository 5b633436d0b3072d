package standalone

import (
	"log/slog"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/dister/dister"
)

// scope says which group a route acts on, for tokens limited to groups.
type scope int

const (
	// scopeQuery: the group of ?group= ("default" without it).
	scopeQuery scope = iota
	// scopeName: the group named by the path (/v1/groups/{name}).
	scopeName
	// scopeDefault: group "default" (the legacy API knows no other).
	scopeDefault
	// scopeCluster: the whole cluster (members, settings, snapshots,
	// status, metrics, /node): refused to tokens limited to groups.
	scopeCluster
	// scopeFiltered: every group, and the handler shows a token limited to
	// groups only its own (GET /v1/groups).
	scopeFiltered
)

// access is what a route needs; public routes need no token at all.
type access struct {
	need   dister.Access
	scope  scope
	public bool
}

var (
	public       = access{public: true}
	read         = access{need: dister.AccessRead}
	write        = access{need: dister.AccessWrite}
	admin        = access{need: dister.AccessAdmin, scope: scopeCluster}
	readCluster  = access{need: dister.AccessRead, scope: scopeCluster}
	legacyRead   = access{need: dister.AccessRead, scope: scopeDefault}
	legacyWrite  = access{need: dister.AccessWrite, scope: scopeDefault}
	adminOfGroup = access{need: dister.AccessAdmin, scope: scopeName}
)

// routeAccess is the role every route needs, by "METHOD PATTERN" as gin
// reports it (Routes(), FullPath()). A route missing here is refused to
// every token (and fails TestEveryRouteHasARole): a new route must be
// given its role on purpose.
var routeAccess = map[string]access{
	"GET /healthz":   public,
	"GET /readyz":    public,
	"GET /ui":        public,
	"GET /ui/*file":  public,
	"HEAD /ui/*file": public,
	"GET /metrics":   readCluster,
	"GET /v1/status": readCluster,

	"GET /v1/kv":                                     read,
	"GET /v1/kv/*key":                                read,
	"GET /v1/watch":                                  read,
	"GET /v1/leases/:id":                             read,
	"GET /v1/services":                               read,
	"GET /v1/services/:name":                         read,
	"GET /v1/watch/services/:name":                   read,
	"GET /v1/balance/:name":                          read,
	"PUT /v1/kv/*key":                                write,
	"DELETE /v1/kv/*key":                             write,
	"POST /v1/txn":                                   write,
	"POST /v1/leases":                                write,
	"PUT /v1/leases/:id/keepalive":                   write,
	"DELETE /v1/leases/:id":                          write,
	"PUT /v1/services/:name/instances/:id":           write,
	"DELETE /v1/services/:name/instances/:id":        write,
	"PUT /v1/services/:name/instances/:id/heartbeat": write,

	"GET /v1/groups":          {need: dister.AccessAdmin, scope: scopeFiltered},
	"GET /v1/groups/:name":    adminOfGroup,
	"PUT /v1/groups/:name":    adminOfGroup,
	"DELETE /v1/groups/:name": adminOfGroup,
	"GET /v1/members":         admin,
	"GET /v1/members/:id":     admin,
	"PUT /v1/members/:id":     admin,
	"DELETE /v1/members/:id":  admin,
	"GET /v1/settings":        admin,
	"PUT /v1/settings":        admin,
	"GET /v1/snapshot":        admin,

	// Legacy API: GET reads, any other method writes, /node is admin.
	"GET /kv":         legacyRead,
	"POST /kv":        legacyWrite,
	"PUT /kv":         legacyWrite,
	"DELETE /kv":      legacyWrite,
	"GET /service":    legacyRead,
	"POST /service":   legacyWrite,
	"PUT /service":    legacyWrite,
	"DELETE /service": legacyWrite,
	"GET /balance":    legacyRead,
	"GET /node":       admin,
	"POST /node":      admin,
	"PUT /node":       admin,
	"DELETE /node":    admin,
}

// tokenSet is Options.Tokens with Options.Token as one admin token more.
type tokenSet struct{ set, single *dister.Tokens }

func newTokenSet(token string, set *dister.Tokens, logger *slog.Logger) *tokenSet {
	if token == "" && set == nil {
		return nil
	}
	ts := &tokenSet{set: set}
	if token != "" {
		single, err := dister.LoadTokens("", map[string]dister.Grant{token: {Access: dister.AccessAdmin}}, logger)
		if err != nil {
			// A token with white space cannot be sent in a header: no
			// request passes rather than every one.
			logger.Error("Options.Token refused; every request needing a token will be 401", "err", err)
		}
		ts.single = single
	}
	return ts
}

func (ts *tokenSet) Lookup(token string) (dister.Grant, bool) {
	if g, ok := ts.single.Lookup(token); ok {
		return g, true
	}
	return ts.set.Lookup(token)
}

// keyGrant holds the request's token grant (gin context), for handlers
// that filter what a token limited to groups may see.
const keyGrant = "dister.grant"

// authOn reports whether requests need a token.
func (s *Server) authOn() bool { return s.tokens != nil }

// authorize checks the request's token against what its route needs:
// 401 unauthorized without a known token, 403 forbidden for a token
// without the role or the group. An unknown path or method needs only a
// known token, so that it then reads 404 or 405.
func (s *Server) authorize(c *gin.Context) {
	route := c.FullPath()
	acc, known := routeAccess[c.Request.Method+" "+route]
	if acc.public {
		c.Next()
		return
	}
	grant, ok := s.tokens.Lookup(bearer(c))
	if !ok {
		c.Header("WWW-Authenticate", `Bearer realm="dister"`)
		s.failCode(c, http.StatusUnauthorized, codeUnauthorized, "missing or wrong token: send Authorization: Bearer TOKEN")
		return
	}
	c.Set(keyGrant, grant)
	if route == "" {
		c.Next()
		return
	}
	if !known {
		// A bug, not the caller's fault; refuse rather than guess.
		s.opts.Logger.Error("route has no role assigned; refused", "method", c.Request.Method, "route", route)
		s.failCode(c, http.StatusForbidden, codeForbidden, "this route has no role assigned")
		return
	}
	var group string
	switch acc.scope {
	case scopeQuery:
		group = c.Query("group")
		if group == "" {
			group = "default"
		}
	case scopeName:
		group = c.Param("name")
	case scopeDefault:
		group = "default"
	case scopeCluster:
		group = ""
	case scopeFiltered:
		if grant.Access >= acc.need {
			c.Next()
			return
		}
	}
	if !grant.Allows(acc.need, group) {
		msg := "a " + grant.Access.String() + " token may not do this: it needs " + acc.need.String()
		if grant.Access >= acc.need {
			msg = "this token is limited to groups " + quoteList(grant.Groups)
			if group == "" {
				msg += "; this route acts on the whole cluster"
			}
		}
		s.failCode(c, http.StatusForbidden, codeForbidden, msg)
		return
	}
	token := bearer(c)
	c.Set(keyRecheck, func() bool {
		g, ok := s.tokens.Lookup(token)
		return ok && g.Allows(acc.need, group)
	})
	c.Next()
}

// keyRecheck holds, for a request that needed a token, a func telling
// whether the token still grants what the route needed (gin context).
const keyRecheck = "dister.recheck"

// stillAllowed reports whether the request's token still grants what its
// route needed: a stream (SSE watch) asks before each event, so a token
// removed from the token file, or given less, reads nothing more through
// a stream it opened before.
func stillAllowed(c *gin.Context) bool {
	v, ok := c.Get(keyRecheck)
	if !ok {
		return true // no token needed
	}
	return v.(func() bool)()
}

// visibleGroup reports whether the request's token may see group: false
// only for a token limited to other groups.
func visibleGroup(c *gin.Context, group string) bool {
	v, ok := c.Get(keyGrant)
	if !ok {
		return true
	}
	g := v.(dister.Grant)
	return !g.Limited() || g.Allows(dister.AccessRead, group)
}

// mayRunCommands reports whether the request may register a script or
// custom check, which runs a command on the servers: only an admin token
// limited to no group (or a daemon without tokens) may; a write token, or
// one of a tenant's groups, would otherwise run commands on every tenant's
// servers.
func mayRunCommands(c *gin.Context) bool {
	v, ok := c.Get(keyGrant)
	if !ok {
		return true
	}
	g := v.(dister.Grant)
	return g.Access >= dister.AccessAdmin && !g.Limited()
}

// msgCommandsNeedAdmin is the refusal of a script or custom check.
const msgCommandsNeedAdmin = "script and custom checks run commands on the servers: registering one needs an admin token not limited to groups"

func quoteList(l []string) string {
	s := ""
	for i, x := range l {
		if i > 0 {
			s += ", "
		}
		s += `"` + x + `"`
	}
	return s
}
