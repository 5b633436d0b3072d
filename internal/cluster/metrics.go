package cluster

import (
	"errors"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dister/dister/internal/peer"
)

// metrics are the engine's Prometheus series; nil when no registry was
// given, and every method is a no-op then.
type metrics struct {
	reg           prometheus.Registerer
	collectors    []prometheus.Collector
	proposals     *prometheus.CounterVec
	proposalTime  prometheus.Histogram
	leaderChanges *prometheus.CounterVec
	peerRequests  *prometheus.CounterVec
	// The hot methods' counters, looked up once: a client node's every
	// put and get is a peer Propose or Read.
	peerPropose, peerRead prometheus.Counter
}

func newMetrics(e *Engine, reg prometheus.Registerer) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &metrics{
		proposals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dister_proposals_total",
			Help: "Raft proposals made by this server, by group and result (ok, conflict, error).",
		}, []string{"group", "result"}),
		proposalTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "dister_proposal_duration_seconds",
			Help:    "Time from proposing to the state machine's answer on this server.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		leaderChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dister_leader_changes_total",
			Help: "Leader changes this server observed, by group.",
		}, []string{"group"}),
		peerRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dister_peer_requests_total",
			Help: "Requests this server's peer API received (from client-role nodes and other servers), by op.",
		}, []string{"op"}),
	}
	m.peerPropose = m.peerRequests.WithLabelValues(peer.OpPropose)
	m.peerRead = m.peerRequests.WithLabelValues(peer.OpRead)
	m.reg = reg
	notRun := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "dister_probes_not_run_total",
		Help: "Health-check probes this server's checkers could not run (script checks not enabled here, no free probe slot in time); the status stayed as it was.",
	}, func() float64 { return float64(e.notRun.Load()) })
	for _, c := range []prometheus.Collector{m.proposals, m.proposalTime, m.leaderChanges, m.peerRequests, notRun, (*stateCollector)(e)} {
		if err := reg.Register(c); err != nil {
			m.unregister()
			var dup prometheus.AlreadyRegisteredError
			if errors.As(err, &dup) {
				return nil, errors.New("metrics already registered: give each Node its own registry")
			}
			return nil, err
		}
		m.collectors = append(m.collectors, c)
	}
	return m, nil
}

// unregister removes the engine's series, so that a Node opened again with
// the same registry can register them anew.
func (m *metrics) unregister() {
	if m == nil {
		return
	}
	for _, c := range m.collectors {
		m.reg.Unregister(c)
	}
	m.collectors = nil
}

// proposal counts a proposal of group ("" = the default group, as callers
// name it) and its time.
func (m *metrics) proposal(group string, start time.Time, err error, succeeded bool) {
	if m == nil {
		return
	}
	if group == "" {
		group = DefaultGroup
	}
	result := "ok"
	switch {
	case err != nil:
		result = "error"
	case !succeeded:
		result = "conflict"
	}
	m.proposals.WithLabelValues(group, result).Inc()
	m.proposalTime.Observe(time.Since(start).Seconds())
}

func (m *metrics) leaderChange(group string) {
	if m == nil {
		return
	}
	m.leaderChanges.WithLabelValues(group).Inc()
}

// peerRequest counts a request of the peer API. op comes off the wire:
// only the ops the API has become labels, so a caller cannot grow the
// series without bound.
func (m *metrics) peerRequest(op string) {
	if m == nil {
		return
	}
	switch {
	case op == peer.OpPropose:
		m.peerPropose.Inc()
		return
	case op == peer.OpRead:
		m.peerRead.Inc()
		return
	case !peer.KnownOp(op):
		op = "unknown"
	}
	m.peerRequests.WithLabelValues(op).Inc()
}

// stateCollector reports per-group gauges read at scrape time.
type stateCollector Engine

var (
	revisionDesc = prometheus.NewDesc("dister_group_revision",
		"Last revision applied by this server's replica of the group.", []string{"group"}, nil)
	appliedDesc = prometheus.NewDesc("dister_group_applied_index",
		"Last Raft log index applied by this server's replica of the group: it moves with every committed entry, also those that change no key (a steady cluster's stays put).", []string{"group"}, nil)
	leaderDesc = prometheus.NewDesc("dister_group_leader",
		"Id of the group's leader as this server knows it (0 = none).", []string{"group"}, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- revisionDesc
	ch <- appliedDesc
	ch <- leaderDesc
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	e := (*Engine)(c)
	for shardID, name := range e.shardNames() {
		leader, _ := e.host.Leader(shardID)
		ch <- prometheus.MustNewConstMetric(revisionDesc, prometheus.GaugeValue, float64(e.host.Revision(shardID)), name)
		ch <- prometheus.MustNewConstMetric(appliedDesc, prometheus.GaugeValue, float64(e.host.Applied(shardID)), name)
		ch <- prometheus.MustNewConstMetric(leaderDesc, prometheus.GaugeValue, float64(leader), name)
	}
}

// shardNames maps the shards this server runs to group names ("_system"
// for the catalog).
func (e *Engine) shardNames() map[uint64]string {
	e.mu.Lock()
	names := make(map[uint64]string, len(e.groups)+2)
	for name, g := range e.groups {
		names[g.Shard] = name
	}
	e.mu.Unlock()
	names[SystemShard], names[DefaultShard] = "_system", DefaultGroup
	out := make(map[uint64]string, len(names))
	for _, s := range e.host.Shards() {
		if n, ok := names[s]; ok {
			out[s] = n
		} else {
			out[s] = "shard-" + strconv.FormatUint(s, 10)
		}
	}
	return out
}
