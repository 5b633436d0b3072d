package standalone

import (
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// httpMetrics are the Server's Prometheus series.
type httpMetrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	// watchStreams counts open SSE streams: each holds a connection and
	// a watch for as long as its client stays.
	watchStreams prometheus.Gauge
	handler      http.Handler
}

func newOwnRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// newHTTPMetrics registers the HTTP series on reg, or adopts the ones a
// Server registered there before (one process may build several Servers
// over one registry, e.g. after reopening its Node).
func newHTTPMetrics(reg *prometheus.Registry, log *slog.Logger) *httpMetrics {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dister_http_requests_total",
			Help: "HTTP requests served, by route template, method and status code.",
		}, []string{"route", "method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "dister_http_request_duration_seconds",
			Help:    "Time to serve an HTTP request, by route template.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16),
		}, []string{"route"}),
		watchStreams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dister_http_watch_streams",
			Help: "Watch streams (Server-Sent Events) open now.",
		}),
		handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
	}
	m.requests = register(reg, log, m.requests)
	m.latency = register(reg, log, m.latency)
	m.watchStreams = register(reg, log, m.watchStreams)
	return m
}

func register[C prometheus.Collector](reg *prometheus.Registry, log *slog.Logger, c C) C {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var dup prometheus.AlreadyRegisteredError
	if errors.As(err, &dup) {
		if old, ok := dup.ExistingCollector.(C); ok {
			return old
		}
	}
	// Something else holds our names: serve without these series rather
	// than refuse to serve at all.
	log.Warn("HTTP metrics not registered", "err", err)
	return c
}

// observe records every request, under its route template so that keys
// and ids do not each make a series of their own.
func (s *Server) observe(c *gin.Context) {
	start := time.Now()
	c.Next()
	route := c.FullPath()
	if route == "" {
		route = "unmatched"
	}
	s.metrics.requests.WithLabelValues(route, methodLabel(c.Request.Method), strconv.Itoa(c.Writer.Status())).Inc()
	s.metrics.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
}

// methodLabel bounds the method label to the standard methods.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "other"
}

// serveMetrics serves the registry in the Prometheus text format.
func (s *Server) serveMetrics(c *gin.Context) {
	if err := params(c); err != nil {
		s.fail(c, err)
		return
	}
	s.stamp(c, noRevision)
	s.metrics.handler.ServeHTTP(c.Writer, c.Request)
}
