package dister

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/dister/dister/internal/cluster"
	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
	"github.com/dister/dister/internal/svc"
)

// Instance limits, enforced by Register.
const (
	MaxNameLen      = svc.MaxNameLen    // service name and instance id: [A-Za-z0-9_.-], not starting with '.' or '-'
	MaxAddressLen   = svc.MaxAddressLen // bytes
	MaxPriority     = svc.MaxPriority
	MaxTags         = svc.MaxTags // each 1..256 bytes
	MaxMeta         = svc.MaxMeta // keys 1..128 bytes, values up to 1 KiB
	DefaultInterval = svc.DefaultInterval
	MinInterval     = svc.MinInterval
)

// CheckType names how an instance is checked.
type CheckType string

// Check types. Script and custom checks run a command (without a shell) on
// the group leader: they are refused unless the cluster setting
// Settings.ScriptChecks is on.
const (
	CheckNone   CheckType = ""       // no check: always passing
	CheckHTTP   CheckType = "http"   // GET Target: 2xx passing, 429 warning, else critical
	CheckWeb    CheckType = "web"    // dister v1.5: GET Target: 200 passing, else critical
	CheckTCP    CheckType = "tcp"    // connect to Target host:port
	CheckMySQL  CheckType = "mysql"  // Target: go-sql-driver DSN; connect and ping
	CheckPgSQL  CheckType = "pgsql"  // Target: pgx connection string or URL; connect and ping
	CheckScript CheckType = "script" // Target: command line; exit 0 passing, 1 warning, else critical
	CheckCustom CheckType = "custom" // dister v1.5: command line; passing iff trimmed stdout is "1"
	CheckTTL    CheckType = "ttl"    // the instance must heartbeat within TTL
	// CheckNever: stored but never checked, so critical and never picked
	// (dister v1.5's services of unknown types).
	CheckNever CheckType = "never"
)

// Check is an instance's health check.
type Check struct {
	Type   CheckType
	Target string
	// Interval between probes. Zero = DefaultInterval (10s); at least
	// MinInterval (100ms). Not used by ttl checks.
	Interval time.Duration
	// Timeout of one probe. Zero = the smaller of 2s and Interval.
	Timeout time.Duration
	// TTL of a ttl check: 1s..24h.
	TTL time.Duration
	// DeregisterCriticalAfter removes the instance once it has been
	// critical this long, counted by the group leader from the stored time
	// it became critical (or was last registered, if later): a leader
	// change does not restart the count. The count uses the servers'
	// clocks, which should agree within a fraction of it. Zero = never.
	DeregisterCriticalAfter time.Duration
}

// HealthStatus is an instance's health as the cluster last recorded it.
type HealthStatus string

// Health statuses.
const (
	StatusPassing  HealthStatus = svc.Passing
	StatusWarning  HealthStatus = svc.Warning
	StatusCritical HealthStatus = svc.Critical
)

// Instance is one running copy of a service.
type Instance struct {
	Service string
	ID      string
	// Address is where clients reach the instance: host:port or a URL. A
	// loopback host is accepted only while every server is on loopback too.
	Address string
	// Priority weighs the instance in priority-weighted picks; 0 = used
	// only when no instance with a positive priority is usable.
	Priority int
	Tags     []string
	Meta     map[string]string
	Check    Check
	// Extra is opaque data kept with the instance for a compatibility
	// layer (the v1.5 REST API keeps its node objects here); the /v1 REST
	// API does not show it. At most 64 KiB. With Extra set, Address may be
	// empty.
	Extra []byte

	// Set by the cluster; ignored by Register.
	Status HealthStatus
	// LastChecked is when the check produced the current status (zero when
	// not checked yet); Output is that result's output. Both change only
	// with the status: a steady instance is not rewritten.
	LastChecked time.Time
	Output      string
	// ModRevision is the group revision of the instance's last change.
	ModRevision int64
}

// ServiceInfo summarizes one service.
type ServiceInfo struct {
	Name      string
	Instances int
	Passing   int
}

// ServiceEvent is one change of a service's instance set: the whole set
// after the change. The first event of a watch is the set it started from.
// The last event of a watch has Err set.
type ServiceEvent struct {
	Revision  int64
	Instances []Instance
	Err       error
}

// Services registers and finds the instances of one group's services.
// Services live apart from KV: KV reads, lists and watches never show them.
type Services struct {
	n     *Node
	group string
}

// Services is the service registry of group "default".
func (n *Node) Services() *Services { return n.def.Services() }

// Services is the group's service registry.
func (g *Group) Services() *Services { return &Services{n: g.n, group: g.name} }

// RegisterOption tunes Register.
type RegisterOption func(*registerOptions)

type registerOptions struct{ external bool }

// ExternalHeartbeat makes a ttl instance depend on Services.Heartbeat calls
// alone. By default the registering Node keeps a ttl instance alive itself
// for as long as it runs, so the instance turns critical when the Node's
// process stops (or Close is called); should its lease be lost while the
// Node runs (a partition longer than the TTL), the Node registers it again
// with a new lease, unless it was deregistered or registered again by
// someone else meanwhile.
func ExternalHeartbeat() RegisterOption { return func(o *registerOptions) { o.external = true } }

// Register adds inst, or replaces the instance with the same Service and ID
// (keeping its known status when the address and check are unchanged). It
// returns once the write is committed. Bad names, addresses, priorities or
// checks are ErrInvalid, as is a script check while the cluster setting
// is off.
func (s *Services) Register(ctx context.Context, inst Instance, opts ...RegisterOption) error {
	ctx, cancel := s.n.bound(ctx)
	defer cancel()
	var o registerOptions
	for _, f := range opts {
		f(&o)
	}
	r := toRecord(inst)
	mu := s.n.keep.stripe(s.group, inst.Service, inst.ID)
	mu.Lock()
	defer mu.Unlock()
	if err := s.n.e.Register(ctx, s.group, r); err != nil {
		return fmt.Errorf("register %s/%s: %w", errs.Cut(inst.Service), errs.Cut(inst.ID), err)
	}
	if r.Check.Type == svc.TypeTTL && !o.external {
		s.n.keep.add(s.group, r.Lease, r.Check.TTL, toRecord(inst))
	} else {
		s.n.keep.removeInstance(s.group, inst.Service, inst.ID)
	}
	return nil
}

// Deregister removes an instance; ErrNotFound when there is none.
func (s *Services) Deregister(ctx context.Context, service, id string) error {
	ctx, cancel := s.n.bound(ctx)
	defer cancel()
	mu := s.n.keep.stripe(s.group, service, id)
	mu.Lock()
	defer mu.Unlock()
	s.n.keep.removeInstance(s.group, service, id)
	found, err := s.n.e.Deregister(ctx, s.group, service, id)
	if err == nil && !found {
		err = errs.NotFound
	}
	if err != nil {
		return fmt.Errorf("deregister %s/%s: %w", errs.Cut(service), errs.Cut(id), err)
	}
	return nil
}

// Replace replaces every instance of the named services with instances
// (each of which must belong to one of them), in one write: readers see
// the old sets or the new ones, never a mix. ttl checks are not allowed
// here. Like every write it is bounded: the services' deletes plus the
// instances' puts are at most 128.
func (s *Services) Replace(ctx context.Context, services []string, instances []Instance) error {
	ctx, cancel := s.n.bound(ctx)
	defer cancel()
	recs := make([]*svc.Record, len(instances))
	for i, in := range instances {
		if !slices.Contains(services, in.Service) {
			return fmt.Errorf("replace services: instance %s/%s is not of a named service: %w", errs.Cut(in.Service), errs.Cut(in.ID), errs.Invalid)
		}
		recs[i] = toRecord(in)
	}
	if err := s.n.e.ReplaceServices(ctx, s.group, services, recs); err != nil {
		return fmt.Errorf("replace services %s: %w", quoteNames(services), err)
	}
	return nil
}

// Heartbeat keeps a ttl instance alive for another TTL (for instances
// registered with ExternalHeartbeat, or through the REST API). It is not a
// Raft write unless the instance's lease had already expired.
func (s *Services) Heartbeat(ctx context.Context, service, id string) error {
	ctx, cancel := s.n.bound(ctx)
	defer cancel()
	if err := s.n.e.Heartbeat(ctx, s.group, service, id); err != nil {
		return fmt.Errorf("heartbeat %s/%s: %w", errs.Cut(service), errs.Cut(id), err)
	}
	return nil
}

// QueryOption tunes Get.
type QueryOption func(*queryOptions)

type queryOptions struct {
	passing bool
	read    []ReadOption
}

// Redacted is a copy of in fit to show people: passwords in the check
// target (DB connection strings, URLs with user info) and in a URL address
// replaced by "xxxxx", and no Extra.
func (in Instance) Redacted() Instance {
	out := in
	out.Address = svc.RedactAddress(in.Address)
	out.Check.Target = svc.Redacted(svc.Check{Type: string(in.Check.Type), Target: in.Check.Target})
	out.Extra = nil
	return out
}

// Passing keeps only passing instances.
func Passing() QueryOption { return func(o *queryOptions) { o.passing = true } }

// WithRead applies read options (consistency, MinRevision) to Get and List.
func WithRead(opts ...ReadOption) QueryOption {
	return func(o *queryOptions) { o.read = append(o.read, opts...) }
}

// Get returns a service's instances, sorted by id (none is not an error).
func (s *Services) Get(ctx context.Context, service string, opts ...QueryOption) ([]Instance, error) {
	if service == "" {
		return nil, fmt.Errorf("get service: empty name: %w", errs.Invalid)
	}
	out, err := s.read(ctx, service, opts)
	if err != nil {
		return nil, fmt.Errorf("get service %s: %w", quoteKey(service), err)
	}
	return out, nil
}

// All returns every instance of the group, sorted by service and id, read
// at one revision.
func (s *Services) All(ctx context.Context, opts ...QueryOption) ([]Instance, error) {
	out, err := s.read(ctx, "", opts)
	if err != nil {
		return nil, fmt.Errorf("all instances: %w", err)
	}
	return out, nil
}

// read reads the instances of service ("" = all) at one revision.
func (s *Services) read(ctx context.Context, service string, opts []QueryOption) ([]Instance, error) {
	ctx, cancel := s.n.bound(ctx)
	defer cancel()
	var o queryOptions
	for _, f := range opts {
		f(&o)
	}
	ro := readOpts(o.read)
	stored, _, err := s.n.e.Instances(ctx, s.group, service, ro.cluster())
	s.n.shareCPU(ro.consistency)
	if err != nil {
		return nil, err
	}
	out := make([]Instance, 0, len(stored))
	for _, st := range stored {
		if !o.passing || st.Record.Status == svc.Passing {
			out = append(out, toInstance(st))
		}
	}
	return out, nil
}

// List returns every service of the group with its instance counts,
// sorted by name (with Passing(): the services with passing instances).
func (s *Services) List(ctx context.Context, opts ...QueryOption) ([]ServiceInfo, error) {
	all, err := s.read(ctx, "", opts)
	if err != nil {
		return nil, fmt.Errorf("list services: %w", err)
	}
	var out []ServiceInfo
	for _, in := range all {
		if len(out) == 0 || out[len(out)-1].Name != in.Service {
			out = append(out, ServiceInfo{Name: in.Service})
		}
		last := &out[len(out)-1]
		last.Instances++
		if in.Status == StatusPassing {
			last.Passing++
		}
	}
	return out, nil
}

// Watch streams a service's instance set: first the current set, then the
// set after every revision that changed it, until ctx ends. Like KV.Watch
// it works on any server and ends with one event whose Err is set (then
// the channel closes); drain it or cancel ctx.
func (s *Services) Watch(ctx context.Context, service string) <-chan ServiceEvent {
	out := make(chan ServiceEvent, 16)
	run := func() {
		err := s.follow(ctx, service, func(rev int64, set map[string]Instance) bool {
			ev := ServiceEvent{Revision: rev, Instances: sortedInstances(set)}
			select {
			case out <- ev:
				return true
			case <-ctx.Done():
				return false
			case <-s.n.life.Done():
				return false // Close does not wait for a consumer that does not read
			}
		})
		endWatch(ctx, out, ServiceEvent{Err: fmt.Errorf("watch service %s: %w", quoteKey(service), err)})
	}
	if !s.n.spawn(run) {
		out <- ServiceEvent{Err: fmt.Errorf("watch service %s: %w", quoteKey(service), errs.Closed)}
		close(out)
	}
	return out
}

func sortedInstances(set map[string]Instance) []Instance {
	out := make([]Instance, 0, len(set))
	for _, id := range slices.Sorted(maps.Keys(set)) {
		out = append(out, set[id])
	}
	return out
}

// follow reads service's instances and then follows its changes, calling
// publish with the whole set after the read and after each revision that
// changed it. It returns why it stopped (ctx.Err() when ctx ended or the
// Node closed, errs.Closed) — never nil. publish returning false stops it.
func (s *Services) follow(ctx context.Context, service string, publish func(rev int64, set map[string]Instance) bool) error {
	var set map[string]Instance
	return s.feed(ctx, service, feedFuncs{
		load: func(rev int64, insts []*Instance) bool {
			set = make(map[string]Instance, len(insts))
			for _, in := range insts {
				set[in.ID] = *in
			}
			return publish(rev, set)
		},
		put:    func(in *Instance) { set[in.ID] = *in },
		del:    func(id string) { delete(set, id) },
		commit: func(rev int64) bool { return publish(rev, set) },
	})
}

// feedFuncs receive a service's instances and their changes from feed.
type feedFuncs struct {
	load     func(rev int64, insts []*Instance) bool // the whole set, at the start
	put      func(in *Instance)                      // one change of a revision...
	del      func(id string)
	commit   func(rev int64) bool // ...and the end of that revision
	progress func(rev int64)      // optional: every change up to rev was delivered
	// coalesce: commit only once the revisions that came meanwhile are
	// applied too, so a slow consumer keeps up with a burst of changes.
	coalesce bool
}

// maxCoalesce bounds how many revisions a coalescing feed applies before it
// commits, so a steady stream of changes cannot hold its consumer back.
const maxCoalesce = 64

// feed reads service's instances and then follows its changes one at a
// time, so a consumer can apply them incrementally. It returns why it
// stopped (ctx.Err() when ctx ended, errs.Closed when the Node closed) —
// never nil. load or commit returning false stops it.
func (s *Services) feed(parent context.Context, service string, f feedFuncs) (err error) {
	ctx, stop := context.WithCancel(parent)
	defer stop()
	defer func() {
		// Stopped by the Node's Close, not by the caller: say so.
		if (err == nil || errors.Is(err, context.Canceled)) && parent.Err() == nil && s.n.life.Err() != nil {
			err = errs.Closed
		}
	}()
	// The Node's own end stops the watch too.
	go func() {
		select {
		case <-s.n.life.Done():
			stop()
		case <-ctx.Done():
		}
	}()
	rctx, cancel := s.n.bound(ctx)
	stored, rev, err := s.n.e.Instances(rctx, s.group, service, cluster.ReadOpts{})
	cancel()
	if err != nil {
		return err
	}
	insts := make([]*Instance, len(stored))
	for i, st := range stored {
		in := toInstance(st)
		insts[i] = &in
	}
	if !f.load(rev, insts) {
		return ctx.Err()
	}
	insts = nil
	batches := make(chan cluster.WatchBatch, 64)
	ended := make(chan error, 1)
	err = s.n.e.Watch(ctx, cluster.WatchRequest{
		Group: s.group, Prefix: svc.ServicePrefix(service), From: rev + 1,
		Send: func(b cluster.WatchBatch, stopped <-chan struct{}) bool {
			select {
			case batches <- b:
				return true
			case <-stopped:
				return false
			case <-ctx.Done():
				return false
			}
		},
		TryPush: func(b cluster.WatchBatch) bool {
			select {
			case batches <- b:
				return true
			default:
				return false
			}
		},
		End: func(err error, _ int64) { ended <- err },
	})
	if err != nil {
		return err
	}
	held := 0      // revisions applied but not committed (coalesce)
	var last int64 // the newest revision applied
	for {
		select {
		case b := <-batches:
			if len(b.Events) == 0 {
				// What was held back is published before the note says
				// the consumer is current: a note may be all that was
				// queued behind it, and nothing else may come for long.
				if held > 0 {
					held = 0
					if !f.commit(last) {
						return ctx.Err()
					}
				}
				if f.progress != nil {
					f.progress(b.Revision)
				}
				continue
			}
			for _, ev := range b.Events {
				_, id, _ := svc.SplitKey(ev.KV.Key)
				if ev.Type == fsm.EventPut {
					r, err := svc.Decode(ev.KV.Value)
					if err != nil {
						return err
					}
					in := toInstance(svc.Stored{Record: r, ModRevision: ev.KV.ModRevision})
					f.put(&in)
				} else {
					f.del(id)
				}
			}
			last = b.Revision
			if f.coalesce && len(batches) > 0 && held < maxCoalesce {
				held++
				continue
			}
			held = 0
			if !f.commit(b.Revision) {
				return ctx.Err()
			}
		case err := <-ended:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err == nil {
				err = errors.New("watch ended")
			}
			return err
		}
	}
}

func toRecord(in Instance) *svc.Record {
	return &svc.Record{
		Service: in.Service, ID: in.ID, Address: in.Address, Priority: in.Priority,
		Tags: slices.Clone(in.Tags), Meta: maps.Clone(in.Meta), Extra: slices.Clone(in.Extra),
		Check: svc.Check{Type: string(in.Check.Type), Target: in.Check.Target, Interval: in.Check.Interval,
			Timeout: in.Check.Timeout, TTL: in.Check.TTL, DeregisterCriticalAfter: in.Check.DeregisterCriticalAfter},
	}
}

func toInstance(st svc.Stored) Instance {
	r := st.Record
	return Instance{
		Service: r.Service, ID: r.ID, Address: r.Address, Priority: r.Priority, Tags: r.Tags, Meta: r.Meta, Extra: r.Extra,
		Check: Check{Type: CheckType(r.Check.Type), Target: r.Check.Target, Interval: r.Check.Interval,
			Timeout: r.Check.Timeout, TTL: r.Check.TTL, DeregisterCriticalAfter: r.Check.DeregisterCriticalAfter},
		Status: HealthStatus(r.Status), LastChecked: r.LastChecked(), Output: r.Output, ModRevision: st.ModRevision,
	}
}

// quoteNames is a list of names as error messages show it: the first few,
// each cut as quoteKey cuts it, and how many more.
func quoteNames(names []string) string {
	const shown = 5
	q := make([]string, 0, min(len(names), shown))
	for _, n := range names[:min(len(names), shown)] {
		q = append(q, quoteKey(n))
	}
	out := "[" + strings.Join(q, " ") + "]"
	if len(names) > shown {
		out += fmt.Sprintf(" and %d more", len(names)-shown)
	}
	return out
}
