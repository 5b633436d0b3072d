package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/dister/dister"
)

// benchOptions are the flags of "dister bench".
type benchOptions struct {
	via, mode, consistency string
	readRatio              float64
	clients, valueSize     int
	keys                   int
	duration               time.Duration
	prefix                 string
	keep                   bool
	// --via client: the servers to discover the cluster from, and the
	// transport security of "server --role client".
	servers                           []string
	tlsCA, tlsCert, tlsKey, peerToken string
}

func newBenchCmd(c *client) *cobra.Command {
	var o benchOptions
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Load a running cluster with puts, gets or watches and report ops/s and latency percentiles",
		Long: `Load a running cluster for --duration with --clients concurrent clients and
report, per op type, the count, errors, ops/s and the p50, p90, p99 and max
latency in milliseconds (-o json: the same as JSON).

--via rest (the default) sends HTTP to the daemon at --addr, as the other
commands do; --via client opens a client-role node in this process on the
servers' peer addresses (--server PEERADDR, repeatable; --tls-ca, --tls-cert,
--tls-key and --peer-token as "dister server --role client" takes them).

--mode put writes random keys among --keys under --prefix; get reads them
(written once first, untimed) with --consistency; mix does --read-ratio gets
and puts for the rest (keys written first too); watch has the clients put
while one watcher on --prefix measures put -> event latency (the put's start
time travels in the value's first 8 bytes).

The keys under --prefix are deleted at the end with one prefix delete
unless --keep is given; a --prefix that already holds keys is refused unless
--keep is given. A progress bar goes to stderr when it is a terminal. Ctrl-C
ends the run early and prints what ran. Exit 1 when every op failed.`,
		Args: noArgs,
	}
	f := cmd.Flags()
	f.StringVar(&o.via, "via", "rest", "rest (HTTP to --addr) or client (a client-role node in this process, on --server)")
	f.StringVar(&o.mode, "mode", "put", "put, get, watch or mix")
	f.StringVar(&o.consistency, "consistency", "linearizable", "reads of --mode get and mix: linearizable, session or stale")
	f.Float64Var(&o.readRatio, "read-ratio", 0.5, "share of gets in --mode mix, 0 to 1")
	f.IntVar(&o.clients, "clients", 16, "concurrent clients (writers in --mode watch)")
	f.DurationVar(&o.duration, "duration", 10*time.Second, "how long to run")
	f.IntVar(&o.valueSize, "value-size", 256, "bytes per value (at least 8 for --mode watch)")
	f.IntVar(&o.keys, "keys", 10000, "number of distinct keys")
	f.StringVar(&o.prefix, "prefix", "bench/", "prefix of the bench's keys")
	f.BoolVar(&o.keep, "keep", false, "leave the keys in place at the end (and run on a --prefix that holds keys)")
	f.StringArrayVar(&o.servers, "server", nil, "`PEERADDR` of a running server, for --via client (repeatable)")
	f.StringVar(&o.tlsCA, "tls-ca", "", "`FILE` of the server CA (PEM), for --via client on a cluster with mutual TLS")
	f.StringVar(&o.tlsCert, "tls-cert", "", "`FILE` of the client node's certificate (PEM), for --via client")
	f.StringVar(&o.tlsKey, "tls-key", "", "`FILE` of the client node's private key (PEM), for --via client")
	f.StringVar(&o.peerToken, "peer-token", "", "token the client node presents to the servers, for --via client (default: --token)")
	cmd.RunE = runE(func(cmd *cobra.Command, _ []string) error {
		if err := o.check(cmd); err != nil {
			return err
		}
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		var t benchTarget
		if o.via == "client" {
			nt, err := openNodeTarget(&o, c)
			if err != nil {
				return fmt.Errorf("bench: %w", err)
			}
			t = nt
		} else {
			t = newRESTTarget(c, o.clients, o.consistency)
		}
		defer t.close()
		b := &bench{o: o, c: c, t: t, bar: isTerminal(c.stderr)}
		return b.run(ctx)
	})
	return cmd
}

// check refuses flag values that make no sense, before anything is sent.
func (o *benchOptions) check(cmd *cobra.Command) error {
	changed := cmd.Flags().Changed
	switch o.via {
	case "rest":
		for _, name := range []string{"server", "tls-ca", "tls-cert", "tls-key", "peer-token"} {
			if changed(name) {
				return usagef("--%s is for --via client; --via rest talks to --addr", name)
			}
		}
	case "client":
		if len(o.servers) == 0 {
			return usagef("--via client needs --server PEERADDR (repeatable): a running server's peer address")
		}
		if (o.tlsCert == "") != (o.tlsKey == "") {
			return usagef("--tls-cert and --tls-key go together")
		}
	default:
		return usagef("--via %q: want rest or client", o.via)
	}
	switch o.mode {
	case "put", "get", "watch", "mix":
	default:
		return usagef("--mode %q: want put, get, watch or mix", o.mode)
	}
	switch o.consistency {
	case "linearizable", "session", "stale":
	default:
		return usagef("--consistency %q: want linearizable, session or stale", o.consistency)
	}
	if changed("consistency") && o.mode != "get" && o.mode != "mix" {
		return usagef("--consistency is for --mode get or mix")
	}
	if changed("read-ratio") && o.mode != "mix" {
		return usagef("--read-ratio is for --mode mix")
	}
	if o.readRatio < 0 || o.readRatio > 1 {
		return usagef("--read-ratio %v: want 0 to 1", o.readRatio)
	}
	if o.clients < 1 {
		return usagef("--clients %d: want 1 or more", o.clients)
	}
	if o.duration <= 0 {
		return usagef("--duration %v: want a positive duration", o.duration)
	}
	if o.valueSize < 0 || o.valueSize > dister.MaxValueSize {
		return usagef("--value-size %d: want 0 to %d (the value limit, 1 MiB)", o.valueSize, dister.MaxValueSize)
	}
	if o.mode == "watch" && o.valueSize < 8 {
		return usagef("--value-size %d: --mode watch wants at least 8 (the put's start time)", o.valueSize)
	}
	if o.keys < 1 {
		return usagef("--keys %d: want 1 or more", o.keys)
	}
	if o.prefix == "" {
		return usagef("--prefix \"\": want a prefix (the bench deletes every key under it at the end)")
	}
	if n := len(o.prefix) + len(strconv.Itoa(o.keys-1)); n > dister.MaxKeySize {
		return usagef("--prefix of %d bytes: the keys would be %d bytes, more than %d", len(o.prefix), n, dister.MaxKeySize)
	}
	return nil
}

// Op types, the rows of the report.
const (
	opPut = iota
	opGet
	opWatch
	numOps
)

var opNames = [numOps]string{"put", "get", "watch"}

// tally is what one goroutine measured; merged at the end.
type tally struct {
	h    [numOps]*hist
	errs [numOps]int64
}

func (t *tally) record(op int, d time.Duration) {
	if t.h[op] == nil {
		t.h[op] = &hist{}
	}
	t.h[op].record(d)
}

// bench is one run.
type bench struct {
	o   benchOptions
	c   *client
	t   benchTarget
	bar bool // a progress bar on stderr

	width  int          // digits of a key's number
	value  []byte       // the value every put sends (copied: watch stamps it)
	done   atomic.Int64 // ops done, for the progress bar
	events atomic.Int64 // watch events seen

	mu    sync.Mutex
	first error // the first error of an op
}

func (b *bench) key(i int) string {
	s := strconv.Itoa(i)
	return b.o.prefix + strings.Repeat("0", b.width-len(s)) + s
}

func (b *bench) fail(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.first == nil {
		b.first = err
	}
}

// run checks the target, writes the keys gets need, runs the timed phase,
// deletes the keys and prints the report.
// interruptSettle is how long the cleanup after Ctrl-C waits before it
// looks for writes that applied after its delete.
const interruptSettle = 500 * time.Millisecond

func (b *bench) run(ctx context.Context) (err error) {
	b.width = len(strconv.Itoa(b.o.keys - 1))
	b.value = []byte(strings.Repeat("x", b.o.valueSize))
	cctx, cancel := context.WithTimeout(ctx, b.c.timeout)
	k, err := b.t.firstKey(cctx, b.o.prefix)
	cancel()
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if k != "" && !b.o.keep {
		return fmt.Errorf("bench: --prefix %q already holds keys (%q): the bench deletes every key under it at the end; "+
			"pick another --prefix, delete them (dister kv del --prefix %s) or give --keep", b.o.prefix, k, b.o.prefix)
	}
	if !b.o.keep {
		defer func() {
			// Also after Ctrl-C: a fresh ctx, bounded by --timeout.
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.c.timeout)
			defer cancel()
			_, derr := b.t.deletePrefix(dctx, b.o.prefix)
			if derr == nil && ctx.Err() != nil {
				// Ctrl-C cut writes in flight: one a server had taken may
				// still apply after the delete. Look again once they had
				// time to settle.
				time.Sleep(interruptSettle)
				if k, lerr := b.t.firstKey(dctx, b.o.prefix); lerr != nil {
					derr = lerr
				} else if k != "" {
					_, derr = b.t.deletePrefix(dctx, b.o.prefix)
				}
			}
			if derr != nil && err == nil {
				err = fmt.Errorf("bench: deleting the keys under %q: %w", b.o.prefix, derr)
			}
		}()
	}
	if b.o.mode == "get" || b.o.mode == "mix" {
		if err := b.preload(ctx); err != nil {
			return err
		}
	}
	rep := b.measure(ctx)
	rep.Interrupted = ctx.Err() != nil
	if err := b.print(rep); err != nil {
		return err
	}
	var ok, failed int64
	for _, r := range rep.Ops {
		ok += r.Count
		failed += r.Errors
	}
	switch {
	case failed > 0 && ok == 0:
		return fmt.Errorf("bench: every op failed (%d); the first error: %w", failed, b.first)
	case failed > 0:
		fmt.Fprintf(b.c.stderr, "dister: bench: %d ops failed; the first error: %s\n", failed, oneLine(b.first.Error()))
	}
	if rep.Interrupted {
		fmt.Fprintf(b.c.stderr, "dister: bench: interrupted after %.1fs of %v\n", rep.Elapsed, b.o.duration)
	}
	return nil
}

// preload writes every key once, untimed, so that gets find them.
func (b *bench) preload(ctx context.Context) error {
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		errs = make(chan error, b.o.clients)
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range b.o.clients {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(b.o.keys) {
					return
				}
				if err := b.t.put(ctx, b.key(int(i)), slices.Clone(b.value)); err != nil {
					if ctx.Err() == nil {
						errs <- err
						cancel()
					}
					return
				}
				b.done.Add(1)
			}
		})
	}
	stopBar := b.progress(ctx, "writing keys", int64(b.o.keys), func(time.Time) int64 { return b.done.Load() })
	wg.Wait()
	stopBar()
	b.done.Store(0)
	select {
	case err := <-errs:
		return fmt.Errorf("bench: writing the %d keys for --mode %s: %w", b.o.keys, b.o.mode, err)
	default:
	}
	if ctx.Err() != nil {
		return errors.New("bench: interrupted while writing the keys")
	}
	return nil
}

// measure runs the clients (and the watcher) for --duration or until ctx
// ends, and waits for every goroutine.
func (b *bench) measure(ctx context.Context) benchReport {
	var (
		wg      sync.WaitGroup
		tallies = make([]tally, b.o.clients+1) // the last: the watcher's
		watcher = &tallies[b.o.clients]
	)
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watchDone := make(chan struct{})
	if b.o.mode == "watch" {
		ready := make(chan struct{})
		go func() {
			defer close(watchDone)
			err := b.t.watch(wctx, b.o.prefix, func() { close(ready) }, func(v []byte) {
				if len(v) < 8 {
					return
				}
				if at := int64(binary.BigEndian.Uint64(v)); at > 0 {
					watcher.record(opWatch, max(time.Since(time.Unix(0, at)), 0))
					b.events.Add(1)
				}
			})
			if err != nil && wctx.Err() == nil {
				watcher.errs[opWatch]++
				b.fail(err)
			}
		}()
		select { // the clock starts once the watch is set up
		case <-ready:
		case <-watchDone:
		case <-ctx.Done():
		}
	} else {
		close(watchDone)
	}

	// The end of the run stops the clients from starting ops; the ops in
	// flight finish (each within --timeout). Cancelling them instead would
	// leave writes of unknown outcome that may apply after the cleanup's
	// delete, and keys under the prefix. Only Ctrl-C (ctx) cuts them.
	start := time.Now()
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var over atomic.Bool
	end := time.AfterFunc(b.o.duration, func() { over.Store(true); cancel() })
	defer end.Stop()
	for i := range b.o.clients {
		wg.Go(func() { b.client(ctx, &over, i, &tallies[i]) })
	}
	total := b.o.duration.Milliseconds()
	stopBar := b.progress(rctx, b.o.mode, total, func(now time.Time) int64 { return min(now.Sub(start).Milliseconds(), total) })
	wg.Wait()
	elapsed := time.Since(start)
	stopBar()

	// The watcher gets up to a second to see the events of the puts
	// acknowledged, then stops.
	if b.o.mode == "watch" {
		grace := time.NewTimer(time.Second)
		tick := time.NewTicker(10 * time.Millisecond)
	wait:
		for b.events.Load() < b.done.Load() {
			select {
			case <-tick.C:
			case <-grace.C:
				break wait
			case <-ctx.Done():
				break wait
			case <-watchDone:
				break wait
			}
		}
		grace.Stop()
		tick.Stop()
	}
	stopWatch()
	<-watchDone

	var all tally
	for i := range tallies {
		for op := range numOps {
			all.errs[op] += tallies[i].errs[op]
			if h := tallies[i].h[op]; h != nil {
				if all.h[op] == nil {
					all.h[op] = &hist{}
				}
				all.h[op].merge(h)
			}
		}
	}
	return b.report(&all, elapsed)
}

// client runs ops until the run is over or ctx ends (Ctrl-C); an op cut
// short by ctx is not counted.
func (b *bench) client(ctx context.Context, over *atomic.Bool, id int, t *tally) {
	rng := rand.New(rand.NewPCG(uint64(id), uint64(time.Now().UnixNano())))
	for ctx.Err() == nil && !over.Load() {
		op := opPut
		switch b.o.mode {
		case "get":
			op = opGet
		case "mix":
			if rng.Float64() < b.o.readRatio {
				op = opGet
			}
		}
		key := b.key(rng.IntN(b.o.keys))
		start := time.Now()
		octx, cancel := context.WithTimeout(ctx, b.c.timeout)
		var err error
		if op == opGet {
			err = b.t.get(octx, key)
		} else {
			v := slices.Clone(b.value)
			if b.o.mode == "watch" {
				binary.BigEndian.PutUint64(v, uint64(start.UnixNano()))
			}
			err = b.t.put(octx, key, v)
		}
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			t.errs[op]++
			b.fail(err)
			continue
		}
		t.record(op, time.Since(start))
		b.done.Add(1)
	}
}

// progress shows a bar on stderr (when it is a terminal) until ctx ends or
// the returned func is called, which waits for it to be gone: pos is where
// the bar stands, out of total; the description carries the current ops/s.
func (b *bench) progress(ctx context.Context, what string, total int64, pos func(time.Time) int64) func() {
	if !b.bar {
		return func() {}
	}
	bar := progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(b.c.stderr),
		progressbar.OptionSetWidth(30),
		progressbar.OptionSetPredictTime(false),
		progressbar.OptionSetRenderBlankState(true),
		progressbar.OptionSetDescription(what),
	)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		start := time.Now()
		lastT, lastN := start, b.done.Load()
		for {
			select {
			case <-ctx.Done():
				_ = bar.Clear()
				return
			case now := <-tick.C:
				n := b.done.Load()
				rate := float64(n-lastN) / now.Sub(lastT).Seconds()
				lastT, lastN = now, n
				desc := fmt.Sprintf("%s %.0f ops/s", what, rate)
				if what == b.o.mode {
					desc = fmt.Sprintf("%s %4.1fs/%v %8.0f ops/s", what, now.Sub(start).Seconds(), b.o.duration, rate)
				}
				bar.Describe(desc)
				_ = bar.Set64(pos(now))
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// benchReport is the report, and -o json's shape.
type benchReport struct {
	Via         string     `json:"via"`
	Mode        string     `json:"mode"`
	Consistency string     `json:"consistency,omitempty"`
	Group       string     `json:"group"`
	Clients     int        `json:"clients"`
	Duration    float64    `json:"duration_seconds"`
	Elapsed     float64    `json:"elapsed_seconds"`
	ValueSize   int        `json:"value_size"`
	Keys        int        `json:"keys"`
	Interrupted bool       `json:"interrupted"`
	Ops         []benchRow `json:"ops"`
}

// benchRow is one op type; latencies in milliseconds.
type benchRow struct {
	Op     string  `json:"op"`
	Count  int64   `json:"count"`
	Errors int64   `json:"errors"`
	OpsSec float64 `json:"ops_per_second"`
	P50    float64 `json:"p50_ms"`
	P90    float64 `json:"p90_ms"`
	P99    float64 `json:"p99_ms"`
	Max    float64 `json:"max_ms"`
}

func (b *bench) report(all *tally, elapsed time.Duration) benchReport {
	r := benchReport{Via: b.o.via, Mode: b.o.mode, Group: b.c.group, Clients: b.o.clients,
		Duration: b.o.duration.Seconds(), Elapsed: elapsed.Seconds(), ValueSize: b.o.valueSize, Keys: b.o.keys, Ops: []benchRow{}}
	if r.Group == "" {
		r.Group = "default"
	}
	if b.o.mode == "get" || b.o.mode == "mix" {
		r.Consistency = b.o.consistency
	}
	ms := func(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
	for op := range numOps {
		h := all.h[op]
		wanted := op == opPut && b.o.mode != "get" || op == opGet && (b.o.mode == "get" || b.o.mode == "mix") || op == opWatch && b.o.mode == "watch"
		if !wanted {
			continue
		}
		row := benchRow{Op: opNames[op], Errors: all.errs[op]}
		if h != nil {
			row.Count = h.n
			row.OpsSec = float64(h.n) / max(elapsed.Seconds(), 1e-9)
			row.P50, row.P90, row.P99, row.Max = ms(h.quantile(0.5)), ms(h.quantile(0.9)), ms(h.quantile(0.99)), ms(h.max)
		}
		r.Ops = append(r.Ops, row)
	}
	return r
}

func (b *bench) print(r benchReport) error {
	if b.c.json() {
		return b.c.printJSON(mustJSON(r))
	}
	what := r.Mode
	if r.Consistency != "" {
		what += " (" + r.Consistency + ")"
	}
	fmt.Fprintf(b.c.stdout, "%s via %s, group %s: %d clients, %.2fs, %d-byte values, %d keys\n",
		what, r.Via, r.Group, r.Clients, r.Elapsed, r.ValueSize, r.Keys)
	fmt.Fprintf(b.c.stdout, "%-6s %10s %7s %11s %9s %9s %9s %9s\n", "OP", "COUNT", "ERRORS", "OPS/S", "P50(ms)", "P90(ms)", "P99(ms)", "MAX(ms)")
	for _, row := range r.Ops {
		if _, err := fmt.Fprintf(b.c.stdout, "%-6s %10d %7d %11.1f %9.3f %9.3f %9.3f %9.3f\n",
			row.Op, row.Count, row.Errors, row.OpsSec, row.P50, row.P90, row.P99, row.Max); err != nil {
			return err
		}
	}
	return nil
}
