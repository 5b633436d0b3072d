package dister

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dister/dister/internal/cluster"
	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/health"
)

// Role is what a Node is in the cluster.
type Role int

// The roles.
const (
	// RoleServer (the zero value) votes in Raft and stores data.
	RoleServer Role = 0
	// RoleClient stores nothing and votes in nothing: it sends writes to
	// the group leaders and reads to the servers (Options.Servers are its
	// seeds), and answers Gets from a cache that a watch keeps current.
	RoleClient Role = 1
)

// String is the role's name: "server" or "client".
func (r Role) String() string {
	switch r {
	case RoleServer:
		return "server"
	case RoleClient:
		return "client"
	}
	return fmt.Sprintf("role(%d)", int(r))
}

// Peer is a server's two addresses.
type Peer struct {
	RaftAddr string // dragonboat transport, host:port
	PeerAddr string // node RPC (joins, liveness), host:port
}

// Options configure Open. Every zero value has a documented meaning.
type Options struct {
	// Role: zero = RoleServer. A RoleClient node needs Servers alone: it
	// has no NodeID, DataDir, RaftAddr, PeerAddr, InitialMembers or Join
	// (setting them is ErrInvalid), nor any of the Raft and server tuning
	// below, which it ignores.
	Role Role
	// NodeID is the server's id, unique in the cluster and > 0. Zero is
	// allowed with Join (the cluster assigns the next free id) and on a
	// restart (the id is read from DataDir).
	NodeID uint64
	// DataDir holds the Raft log, the state and the server's identity.
	// Required.
	DataDir string
	// RaftAddr is the host:port of the Raft transport. Required; it cannot
	// change after the first start.
	RaftAddr string
	// PeerAddr is the host:port of the node RPC. Required.
	PeerAddr string
	// InitialMembers are the servers bootstrapping a new cluster, this one
	// included. Nil on a first start without Join = a cluster of this server
	// alone. Ignored on a restart.
	InitialMembers map[uint64]Peer
	// Join: this server joins a running cluster through Servers. Ignored on
	// a restart.
	Join bool
	// Servers are PeerAddrs of running servers, asked in turn to add this
	// one when Join is set. Required with Join, and for RoleClient (from
	// any one of them the client discovers the others, and follows
	// membership changes).
	Servers []string
	// CacheSize (RoleClient) is how many keys the client caches per group.
	// Zero = 10,000; negative = no cache (every read goes to a server).
	CacheSize int

	// Token is the bearer token this node presents on its peer calls: a
	// client-role node on all of them, a server on its calls to other
	// servers (joins, liveness, lease renewals). Empty = none. See
	// PeerTokens and docs/auth.md.
	Token string
	// PeerTokens (server) are the tokens the peer API accepts, with the
	// same roles and groups as the REST API (peerauth.go lists what each
	// operation needs); a call without a known token, or whose token lacks
	// the role or group, fails with ErrForbidden. Nil = the peer API checks
	// no token (anyone who reaches PeerAddr is trusted, as on one host).
	PeerTokens *Tokens

	// RequestTimeout bounds a call whose ctx has no deadline. Zero = 10s.
	RequestTimeout time.Duration
	// RTT is the Raft tick, the unit of ElectionRTT and HeartbeatRTT.
	// Zero = 20ms: 5ms caused spurious elections whenever the two cores of
	// the reference machine saturated.
	RTT time.Duration
	// ElectionRTT: ticks without a leader before an election. Zero = 10
	// (200-400ms with the default RTT).
	ElectionRTT uint64
	// HeartbeatRTT: ticks between leader heartbeats. Zero = 1.
	HeartbeatRTT uint64
	// SnapshotEntries: applied entries between snapshots, after which the
	// log is compacted. Zero = 10,000.
	SnapshotEntries uint64
	// CompactionOverhead: entries kept in the log behind a snapshot, so a
	// follower slightly behind catches up without a snapshot. Zero = 5,000.
	CompactionOverhead uint64
	// EventHistory is how many revisions of watch events each group keeps
	// (a watch can start that far back). Zero = 100,000. Every server of a
	// cluster must use the same value: trimming is part of the replicated
	// state.
	EventHistory uint64
	// LeaseCheckpoint is how often a group's leader records the remaining
	// TTL of its leases through Raft, bounding how long leader churn can
	// keep an unrenewed lease alive. Zero = 5 minutes.
	LeaseCheckpoint time.Duration
	// CheckDamping is how many consecutive health-check results must agree
	// before the group leader changes an instance's status (flap damping;
	// a never-checked instance takes its first result at once). Zero = 2.
	// At most 100.
	CheckDamping int
	// EnableScriptChecks lets this server run script and custom health
	// checks (commands, without a shell, as the server's user) of the
	// groups it leads. Such a check runs only while the cluster setting
	// Settings.ScriptChecks is on too, and can be registered only while the
	// group's leader has this flag: the setting alone, which any REST
	// client may change, never lets anyone run commands. Zero = off (like
	// Consul's enable_script_checks). Each server records its flag in the
	// catalog; under a leader without it a script check is not run and
	// its status stays as it was.
	EnableScriptChecks bool
	// CheckOutputBody puts up to 1 KiB of a failing http or web check's
	// response body into the instance's output. Zero = off: outputs are
	// readable by anyone who can read the registry, and a body may hold
	// anything the target serves.
	CheckOutputBody bool
	// CheckTargets are what the health checks of the groups this server
	// leads may connect to: CIDRs ("10.0.0.0/8"), IP addresses and host
	// names (allowed whatever they resolve to). Applied at dial time, to
	// the address actually connected after name resolution. Zero (empty) =
	// everything except link-local addresses (169.254.0.0/16, fe80::/10:
	// cloud metadata services); set, only what it lists. A check denied
	// here is critical with an output saying so.
	CheckTargets []string
	// BalancerStaleAfter bounds how long a Balancer's local view of a
	// service may go without hearing from the cluster (an event, or a
	// progress note confirmed against the group's leader, which the
	// Balancer asks for every third of this bound, when it also checks the
	// views) before a Pick from it fails with ErrStaleView instead of
	// serving instances that may be long gone (a partitioned node): within
	// the bound and two thirds more. Zero = 30 s; negative = never stale;
	// at least 300 ms.
	// Pick with Fresh() reads the registry instead of the view.
	BalancerStaleAfter time.Duration
	// Metrics receives the Node's Prometheus series (proposals by group and
	// result, proposal latency, leader changes, each group's revision and
	// leader). Nil = none. A registry takes one Node at a time; Close
	// unregisters its series.
	Metrics prometheus.Registerer
	// Logger receives the Node's logs and the Raft engine's. Nil = WARN and
	// above to slog.Default() (a healthy cluster then logs nothing). The
	// engine's routine events (elections, requests dropped while there is
	// no leader, the unencrypted-transport notice on loopback) are INFO,
	// its chatter DEBUG; its real warnings stay WARN. The engine's logger
	// is process-wide: with several Nodes in one process, engine messages
	// go to the last opened one's.
	Logger *slog.Logger

	// TLS turns on mutual TLS between nodes: on the Raft transport and on
	// the peer API (see the TLS type). Nil = plaintext, which a server
	// accepts only on loopback addresses unless InsecureTransport is set.
	TLS *TLS
	// InsecureTransport lets a server whose RaftAddr or PeerAddr is not on
	// a loopback host start without TLS (inside a private network that is
	// itself trusted). Zero = refused with ErrInsecureTransport.
	InsecureTransport bool
}

const (
	defaultRequestTimeout = 10 * time.Second
	defaultCacheSize      = 10_000
)

func (o *Options) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("dister.Open: "+format+": %w", append(args, errs.Invalid)...)
	}
	if strings.ContainsAny(o.Token, " \t\r\n") {
		return bad("Token contains white space")
	}
	if o.Role == RoleClient && o.PeerTokens != nil {
		return bad("PeerTokens is for servers; a client node serves no peer API")
	}
	if o.RequestTimeout < 0 {
		return bad("RequestTimeout cannot be negative")
	}
	if o.BalancerStaleAfter > 0 && o.BalancerStaleAfter < minStaleAfter {
		return bad("BalancerStaleAfter %v is below %v", o.BalancerStaleAfter, minStaleAfter)
	}
	if err := o.validateTLS(bad); err != nil {
		return err
	}
	switch o.Role {
	case RoleServer:
	case RoleClient:
		return o.validateClient(bad)
	default:
		return bad("Role %d is not a known role", o.Role)
	}
	if o.DataDir == "" {
		return bad("DataDir is required")
	}
	if err := cluster.ValidAddr("RaftAddr", o.RaftAddr); err != nil {
		return fmt.Errorf("dister.Open: %w", err)
	}
	if err := cluster.ValidAddr("PeerAddr", o.PeerAddr); err != nil {
		return fmt.Errorf("dister.Open: %w", err)
	}
	if o.RaftAddr == o.PeerAddr {
		return bad("RaftAddr and PeerAddr are both %q; they need their own ports", o.RaftAddr)
	}
	if o.Join {
		if len(o.Servers) == 0 {
			return bad("Join needs Servers (PeerAddrs of running servers)")
		}
		if len(o.InitialMembers) > 0 {
			return bad("InitialMembers and Join exclude each other")
		}
	}
	if len(o.InitialMembers) > 0 {
		if o.NodeID == 0 {
			return bad("NodeID is required with InitialMembers")
		}
		self, ok := o.InitialMembers[o.NodeID]
		if !ok {
			return bad("InitialMembers does not include this server (NodeID %d)", o.NodeID)
		}
		if self.RaftAddr != o.RaftAddr {
			return bad("InitialMembers[%d].RaftAddr is %q but RaftAddr is %q", o.NodeID, self.RaftAddr, o.RaftAddr)
		}
		seen := map[string]uint64{}
		for id, p := range o.InitialMembers {
			if id == 0 {
				return bad("InitialMembers has id 0; ids are > 0")
			}
			if err := cluster.ValidAddr(fmt.Sprintf("InitialMembers[%d].RaftAddr", id), p.RaftAddr); err != nil {
				return fmt.Errorf("dister.Open: %w", err)
			}
			if err := cluster.ValidAddr(fmt.Sprintf("InitialMembers[%d].PeerAddr", id), p.PeerAddr); err != nil {
				return fmt.Errorf("dister.Open: %w", err)
			}
			if other, dup := seen[p.RaftAddr]; dup {
				return bad("servers %d and %d share RaftAddr %q", other, id, p.RaftAddr)
			}
			seen[p.RaftAddr] = id
		}
	}
	if o.RequestTimeout < 0 || o.RTT < 0 || o.LeaseCheckpoint < 0 {
		return bad("RequestTimeout, RTT and LeaseCheckpoint cannot be negative")
	}
	if _, err := health.ParseTargets(o.CheckTargets); err != nil {
		return fmt.Errorf("dister.Open: CheckTargets: %w", err)
	}
	if o.CheckDamping < 0 || o.CheckDamping > 100 {
		return bad("CheckDamping %d is outside 0..100", o.CheckDamping)
	}
	if o.RTT != 0 && o.RTT < time.Millisecond {
		return bad("RTT %v is below 1ms", o.RTT)
	}
	if o.ElectionRTT != 0 && o.ElectionRTT <= 2*max(o.HeartbeatRTT, 1) {
		return bad("ElectionRTT %d must exceed twice HeartbeatRTT", o.ElectionRTT)
	}
	return nil
}

func (o *Options) validateClient(bad func(string, ...any) error) error {
	if len(o.Servers) == 0 {
		return bad("RoleClient needs Servers (PeerAddrs of running servers)")
	}
	for i, a := range o.Servers {
		if err := cluster.ValidAddr(fmt.Sprintf("Servers[%d]", i), a); err != nil {
			return fmt.Errorf("dister.Open: %w", err)
		}
	}
	switch {
	case o.NodeID != 0:
		return bad("NodeID is for servers; a client node has none")
	case o.DataDir != "":
		return bad("DataDir is for servers; a client node stores nothing")
	case o.RaftAddr != "" || o.PeerAddr != "":
		return bad("RaftAddr and PeerAddr are for servers; a client node listens on neither")
	case len(o.InitialMembers) > 0 || o.Join:
		return bad("InitialMembers and Join are for servers; a client node uses Servers")
	}
	return nil
}

// ReadOption tunes one read.
type ReadOption func(*readOptions)

type readOptions struct {
	consistency cluster.Consistency
	cacheHit    *bool
	minRevision int64
	limit       int
	after       string
}

// Linearizable reads through a ReadIndex round with the leader: the read
// reflects every write acknowledged before it started, on any server.
func Linearizable() ReadOption {
	return func(o *readOptions) { o.consistency = cluster.Linearizable }
}

// SessionRead (the default) reads the local replica once it has applied
// every revision this Node wrote or returned before in the group, so a
// Node always sees its own writes and never goes back in time.
func SessionRead() ReadOption { return func(o *readOptions) { o.consistency = cluster.Session } }

// Stale reads the local replica as it is, without waiting.
func Stale() ReadOption { return func(o *readOptions) { o.consistency = cluster.Stale } }

// MinRevision makes the read wait until the local replica has applied
// revision r (for a session carried across servers, e.g. from
// X-Dister-Revision). It applies to Stale and SessionRead. An r the group
// has not reached (checked with its leader once the wait passed 250 ms)
// is ErrInvalid: no wait would serve it.
func MinRevision(r int64) ReadOption { return func(o *readOptions) { o.minRevision = r } }

// CacheInfo makes a Get tell in *hit whether it was answered from the
// client node's cache (always false on a server, and for other reads).
func CacheInfo(hit *bool) ReadOption { return func(o *readOptions) { o.cacheHit = hit } }

// Limit caps how many entries List returns (1..MaxListLimit).
func Limit(n int) ReadOption { return func(o *readOptions) { o.limit = n } }

// After makes List start strictly after key (for paging).
func After(key string) ReadOption { return func(o *readOptions) { o.after = key } }

// WriteOption tunes one write.
type WriteOption func(*writeOptions)

type writeOptions struct {
	cas    bool
	modRev int64
	prefix bool
	lease  LeaseID
}

// IfModRevision makes a Put or Delete conditional: it applies only if the
// key's ModRevision is r (0 = the key must not exist); ErrConflict otherwise.
func IfModRevision(r int64) WriteOption {
	return func(o *writeOptions) { o.cas, o.modRev = true, r }
}

// WithLease ties a Put's key to a lease: the key is deleted when the lease
// expires or is revoked. ErrLeaseNotFound if the lease does not exist.
func WithLease(id LeaseID) WriteOption { return func(o *writeOptions) { o.lease = id } }

// WithPrefix makes Delete remove every key starting with the given key.
func WithPrefix() WriteOption { return func(o *writeOptions) { o.prefix = true } }

// defaultStaleAfter is BalancerStaleAfter's zero value; minStaleAfter its
// least positive value (the Balancer confirms its views every third of it,
// with a linearizable read each time).
const (
	defaultStaleAfter = 30 * time.Second
	minStaleAfter     = 300 * time.Millisecond
)

// staleAfter applies BalancerStaleAfter's default; 0 = never stale.
func staleAfter(d time.Duration) time.Duration {
	switch {
	case d == 0:
		return defaultStaleAfter
	case d < 0:
		return 0
	}
	return d
}
