// Package standalone serves a dister Node over HTTP: the /v1 REST API of
// docs/rest.md, the legacy API of dister v1.5 (docs/legacy.md: /kv, /node, /service,
// /balance), /healthz, /readyz, /metrics and the web console at /ui (ui.go). It is what the dister daemon runs, and a Go program can
// mount it beside its own routes. It uses only the public dister API.
//
// Conventions of /v1 (see each file for its routes' JSON):
//   - ?group=NAME selects the group (default "default"); an unknown group
//     is 404 group_not_found.
//   - ?timeout=DURATION (a Go duration such as "500ms", at most 5m) bounds
//     the request; without it Options.RequestTimeout applies. When it runs
//     out the answer is 504 timeout, or 503 no_quorum when the cluster had
//     no leader or majority meanwhile. A watch stream (watch.go) is the
//     exception: only ?timeout= ends it.
//   - Unknown query parameters are refused (400 invalid), so that an option
//     this version does not know (or a misspelt one) is never silently
//     ignored.
//   - Every response carries X-Dister-Revision: the revision a read was
//     served at or a write made, otherwise the selected group's revision on
//     this server (omitted only when that cannot be read, e.g. the group
//     does not exist or the Node is closed).
//   - Errors are {"error":{"code":"...","message":"..."}}; codes and HTTP
//     statuses are in errors.go.
package standalone

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dister/dister"
)

// Options configure a Server. Every zero value is documented.
type Options struct {
	// Token, when set, is an admin token: requests need
	// "Authorization: Bearer TOKEN" (401 otherwise), except /healthz,
	// /readyz and /ui. Empty = no single token.
	Token string
	// Tokens, when set, are the tokens with roles and groups that requests
	// need (docs/auth.md); Token, when also set, is one admin token more.
	// Nil (and Token empty) = no auth at all.
	Tokens *dister.Tokens
	// AllowedHosts are the host names (without port) requests may name in
	// their Host header besides IP literals and "localhost": the names the
	// daemon is reached by. "*" allows any. Nil = none; a request naming
	// another host is 403 cross_site (DNS rebinding).
	AllowedHosts []string
	// Logger receives request errors. Nil = slog.Default().
	Logger *slog.Logger
	// Metrics is the registry /metrics serves and where the HTTP series
	// are registered (give the same registry to dister.Options.Metrics to
	// serve the Node's series too). Nil = a new registry of the Server's own,
	// which also gets the Go runtime and process collectors.
	Metrics *prometheus.Registry
	// MaxBodyBytes bounds request bodies. Zero = 2 MiB (a 1 MiB value plus
	// room for JSON escaping).
	MaxBodyBytes int64
	// RequestTimeout bounds a request without ?timeout=. Zero = 10s.
	RequestTimeout time.Duration
	// ReadyTimeout is how long /readyz waits for every group to have a
	// leader before answering 503. Zero = 1s.
	ReadyTimeout time.Duration
}

const (
	defaultMaxBody        = 2 << 20
	defaultRequestTimeout = 10 * time.Second
	defaultReadyTimeout   = time.Second
	maxRequestTimeout     = 5 * time.Minute
)

// Server is the HTTP face of one Node.
type Server struct {
	node    *dister.Node
	opts    Options
	engine  *gin.Engine
	metrics *httpMetrics
	// streams ends every watch stream when CloseStreams cancels it.
	streams    context.Context
	endStreams context.CancelFunc
	// ui holds the console's files, prepared at the first /ui request.
	uiOnce sync.Once
	ui     map[string]*uiAsset
	// crossOrigin refuses browser writes from other sites (auth.go).
	crossOrigin *http.CrossOriginProtection
	// tokens is nil when no token is configured (auth.go).
	tokens       *tokenSet
	allowedHosts []string
	// putLeaseHook, when set (tests only), sees the lease a ?ttl= put
	// granted.
	putLeaseHook func(dister.LeaseID)
}

// New builds the handler for n. It starts no goroutine; serve it with an
// http.Server. Servers may share a registry: the HTTP series are
// registered once and shared.
func New(n *dister.Node, o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Metrics == nil {
		o.Metrics = newOwnRegistry()
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = defaultMaxBody
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = defaultRequestTimeout
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = defaultReadyTimeout
	}
	// Debug mode prints every route to stdout: silence it, but leave a mode
	// the embedding program chose (GIN_MODE or SetMode) alone.
	if gin.Mode() == gin.DebugMode {
		gin.SetMode(gin.ReleaseMode)
	}
	e := gin.New()
	// Keys are the raw rest of the path: "a//b", "/a" and "a/" are keys of
	// their own, so the router must neither clean nor redirect.
	e.RedirectTrailingSlash = false
	e.RedirectFixedPath = false
	e.RemoveExtraSlash = false
	e.UseRawPath = false
	e.UseEscapedPath = false
	e.HandleMethodNotAllowed = true
	s := &Server{node: n, opts: o, engine: e, metrics: newHTTPMetrics(o.Metrics, o.Logger),
		crossOrigin: http.NewCrossOriginProtection()}
	s.streams, s.endStreams = context.WithCancel(context.Background())
	s.tokens = newTokenSet(o.Token, o.Tokens, o.Logger)
	for _, h := range o.AllowedHosts {
		s.allowedHosts = append(s.allowedHosts, hostName(h))
	}
	s.routes()
	return s
}

// ServeHTTP serves every route.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.engine.ServeHTTP(w, r) }

func (s *Server) routes() {
	e := s.engine
	// Metrics outermost so that they count what recovery and auth answer;
	// recovery before auth so that nothing escapes it.
	e.Use(s.observe, s.recover, s.checkHost, s.sameSite, s.auth, s.limitBody)
	e.NoRoute(s.noRoute)
	e.NoMethod(s.noMethod)

	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.deadline(true), s.readyz)
	e.GET("/metrics", s.serveMetrics)
	e.GET("/ui", s.uiRedirect)
	e.GET("/ui/*file", s.uiFile)
	e.HEAD("/ui/*file", s.uiFile)

	v1 := e.Group("/v1", s.deadline(true), s.selectGroup)
	v1.GET("/kv", s.listKV)
	v1.GET("/kv/*key", s.getKV)
	v1.PUT("/kv/*key", s.putKV)
	v1.DELETE("/kv/*key", s.deleteKV)
	v1.POST("/txn", s.txn)
	v1.POST("/leases", s.grantLease)
	v1.GET("/leases/:id", s.getLease)
	v1.PUT("/leases/:id/keepalive", s.keepAliveLease)
	v1.DELETE("/leases/:id", s.revokeLease)
	v1.GET("/groups", s.listGroups)
	v1.GET("/groups/:name", s.getGroup)
	v1.PUT("/groups/:name", s.createGroup)
	v1.DELETE("/groups/:name", s.deleteGroup)
	v1.GET("/members", s.listMembers)
	v1.GET("/members/:id", s.getMember)
	v1.PUT("/members/:id", s.addMember)
	v1.DELETE("/members/:id", s.removeMember)
	v1.GET("/status", s.status)
	v1.GET("/services", s.listServices)
	v1.GET("/services/:name", s.getService)
	v1.PUT("/services/:name/instances/:id", s.registerInstance)
	v1.DELETE("/services/:name/instances/:id", s.deregisterInstance)
	v1.PUT("/services/:name/instances/:id/heartbeat", s.heartbeatInstance)
	v1.GET("/balance/:name", s.balance)
	v1.GET("/settings", s.getSettings)
	v1.PUT("/settings", s.putSettings)

	// Outside /v1's group: its deadline would cut the stream.
	e.GET("/v1/watch", s.selectGroup, s.watch)
	e.GET("/v1/snapshot", s.snapshot)
	e.GET("/v1/watch/services/:name", s.selectGroup, s.watchServices)

	legacy := e.Group("", s.deadline(false))
	legacy.GET("/kv", s.legacyGetKV)
	legacy.POST("/kv", s.legacyPutKV)
	legacy.PUT("/kv", s.legacyPutKV)
	legacy.DELETE("/kv", s.legacyDeleteKV)
	legacy.GET("/node", s.legacyGetNodes)
	legacy.POST("/node", s.legacyAddNodes)
	legacy.PUT("/node", s.legacyAddNodes)
	legacy.DELETE("/node", s.legacyDeleteNodes)
	legacy.GET("/service", s.legacyGetServices)
	legacy.POST("/service", s.legacyPutServices)
	legacy.PUT("/service", s.legacyPutServices)
	legacy.DELETE("/service", s.legacyDeleteServices)
	legacy.GET("/balance", s.legacyBalance)
}
