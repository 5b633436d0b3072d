package health

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// DefaultMaxConcurrent is the default bound on probes in flight.
const DefaultMaxConcurrent = 64

// Options configure a Prober.
type Options struct {
	// MaxConcurrent bounds the probes in flight; 0 means
	// DefaultMaxConcurrent. A storm of Probe calls queues instead of
	// opening thousands of sockets or processes at once.
	MaxConcurrent int
	// AllowScript lets the prober run script and custom checks. It repeats
	// the cluster setting that Validate enforces at registration, so a check
	// registered while the setting was on is still not run after it is
	// turned off (see SetAllowScript).
	AllowScript bool
	// OutputBody puts up to MaxOutput bytes of a failing http or web
	// check's response body into its output. Off by default: outputs are
	// readable by anyone who can read the registry, and a body can hold
	// anything the target serves.
	OutputBody bool
	// Targets is what probes may connect to (see TargetPolicy); nil =
	// everything but link-local addresses.
	Targets *TargetPolicy
}

// Prober runs checks. It is safe for concurrent use and starts no
// goroutine of its own: every probe runs on the caller's goroutine.
type Prober struct {
	slots       chan struct{}
	allowScript atomic.Bool
	transport   *http.Transport
	client      *http.Client
	dialer      net.Dialer
	outputBody  bool
	targets     *TargetPolicy
}

// NewProber returns a Prober; Close it to drop idle connections.
func NewProber(o Options) *Prober {
	n := o.MaxConcurrent
	if n <= 0 {
		n = DefaultMaxConcurrent
	}
	p := &Prober{slots: make(chan struct{}, n), outputBody: o.OutputBody, targets: o.Targets}
	p.allowScript.Store(o.AllowScript)
	p.transport = newTransport(p.dial)
	p.client = &http.Client{Transport: p.transport, CheckRedirect: sameHostRedirects}
	return p
}

// SetAllowScript follows the cluster setting while the prober lives.
func (p *Prober) SetAllowScript(on bool) { p.allowScript.Store(on) }

// Close drops idle connections. Probes may still run afterwards; Close only
// guarantees nothing is left behind when none is in flight.
func (p *Prober) Close() error {
	p.transport.CloseIdleConnections()
	return nil
}

// Probe runs c once and reports the outcome. It waits for a free slot at
// most c's timeout (else the result is NotRun); once it has one, the probe is bounded by c.Timeout
// (DefaultTimeout if zero) and ctx. It never panics: an invalid check or an
// internal failure is a Critical result whose Output says why. A Critical
// result returned because ctx ended is not about the target: callers that
// cancel ctx (shutdown, lost leadership) should drop it.
func (p *Prober) Probe(ctx context.Context, c Check) Result {
	return p.probe(ctx, c, nil)
}

// Lane is one user's share of a Prober (the engine gives each group it
// leads one): a lane holds at most half of the prober's slots, so a group
// whose targets all hang cannot take every slot of the server, and the
// other groups' probes still run.
type Lane struct {
	p     *Prober
	slots chan struct{}
}

// Lane returns a new lane of p.
func (p *Prober) Lane() *Lane {
	return &Lane{p: p, slots: make(chan struct{}, max(1, cap(p.slots)/2))}
}

// Probe is Prober.Probe within the lane's share.
func (l *Lane) Probe(ctx context.Context, c Check) Result { return l.p.probe(ctx, c, l.slots) }

// probe waits for a slot of lane (if any) and of the prober, at most the
// check's timeout: a probe that gets none in that time is not run (NotRun;
// the caller keeps the status it had).
func (p *Prober) probe(ctx context.Context, c Check, lane chan struct{}) (r Result) {
	if err := c.Validate(true); err != nil {
		return Result{Status: Critical, Output: cut(err.Error())}
	}
	if c.IsScript() && !p.allowScript.Load() {
		return Result{NotRun: true, Output: "not run: " + c.Type + " checks are not enabled on this leader (the cluster setting and the server's --enable-script-checks must both allow them)"}
	}
	wait := time.NewTimer(c.timeout())
	defer wait.Stop()
	for _, slots := range []chan struct{}{lane, p.slots} {
		if slots == nil {
			continue
		}
		select {
		case slots <- struct{}{}:
			defer func() { <-slots }()
		case <-wait.C:
			return Result{NotRun: true, Output: fmt.Sprintf("not run: no free probe slot within %v (%d probes in flight on this server)", c.timeout(), len(p.slots))}
		case <-ctx.Done():
			return Result{NotRun: true, Output: cut(fmt.Sprintf("not run: no free probe slot: %v", ctx.Err()))}
		}
	}

	start := time.Now()
	defer func() {
		if v := recover(); v != nil {
			r = Result{Status: Critical, Output: cut(fmt.Sprintf("probe failed: internal error: %v", v))}
		}
		r.Took = time.Since(start)
		r.Output = cut(r.Output)
	}()
	timeout := c.timeout()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	switch c.Type {
	case TypeHTTP:
		return p.probeHTTP(ctx, c.Target, timeout, httpStatus)
	case TypeWeb:
		return p.probeHTTP(ctx, c.Target, timeout, webStatus)
	case TypeTCP:
		return p.probeTCP(ctx, c.Target, timeout)
	case TypeMySQL:
		return probeMySQL(ctx, c.Target, timeout, p.dial)
	case TypePgSQL:
		return probePgSQL(ctx, c.Target, timeout, p.dial)
	case TypeScript:
		return probeScript(ctx, c.Target, timeout)
	case TypeCustom:
		return probeCustom(ctx, c.Target, timeout)
	}
	// Unreachable after Validate; kept so a new kind cannot silently pass.
	return Result{Status: Critical, Output: "unknown check type " + c.Type}
}

// timeoutOr explains err, naming the timeout when that is what ended it
// rather than echoing a bare "context deadline exceeded".
func timeoutOr(ctx context.Context, timeout time.Duration, what string, err error) string {
	if ctx.Err() == context.DeadlineExceeded {
		return fmt.Sprintf("%s: timed out after %v", what, timeout)
	}
	return fmt.Sprintf("%s: %v", what, err)
}
