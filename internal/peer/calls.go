package peer

import "time"

// The ops of Call: JSON requests and answers for everything that is not on
// the hot path (membership, groups, settings, services, discovery).
const (
	OpJoin          = "join"            // JoinRequest -> JoinResponse
	OpStatus        = "status"          // nothing -> Status
	OpKeepAlive     = "keepalive"       // KeepAliveRequest -> KeepAliveResponse
	OpKeepAlives    = "keepalive.batch" // KeepAliveBatchRequest -> KeepAliveBatchResponse
	OpTopology      = "topology"        // nothing -> Topology
	OpProgress      = "progress"        // GroupRequest -> nothing
	OpGroups        = "groups"          // nothing -> []string
	OpCreateGroup   = "group.create"    // GroupRequest -> nothing
	OpDeleteGroup   = "group.delete"    // GroupRequest -> nothing
	OpMembers       = "members"         // nothing -> []Member
	OpAddServer     = "server.add"      // JoinRequest -> JoinResponse
	OpRemoveServer  = "server.remove"   // ServerRequest -> nothing
	OpSettings      = "settings"        // nothing -> Settings
	OpSetSettings   = "settings.set"    // Settings -> nothing
	OpRegister      = "svc.register"    // RegisterRequest -> RegisterResponse
	OpDeregister    = "svc.deregister"  // InstanceRequest -> DeregisterResponse
	OpHeartbeat     = "svc.heartbeat"   // InstanceRequest -> RevisionResponse
	OpInstances     = "svc.instances"   // InstancesRequest -> InstancesResponse
	OpReplace       = "svc.replace"     // ReplaceRequest -> RevisionResponse
	OpLeaseGet      = "lease.get"       // KeepAliveRequest -> LeaseDetail (linearizable)
	OpGroupRevision = "group.revision"  // GroupRequest -> RevisionResponse (ReadIndex on the leader)
	OpLeaseLeft     = "lease.left"      // ShardRequest -> LeaseLeftResponse (the shard's leader only)
)

// The ops that are RPC methods of their own rather than Call ops, as
// metrics name them.
const (
	OpPropose  = "propose"
	OpRead     = "read"
	OpWatch    = "watch"
	OpSnapshot = "snapshot"
	// OpScriptCheck is not called: it is what registering a script or
	// custom check (svc.register, svc.replace) needs on top of the op's
	// own role, as Authorizers see it.
	OpScriptCheck = "svc.script"
)

// KnownOp tells whether op is one the API has (Call's ops and the methods').
func KnownOp(op string) bool {
	switch op {
	case OpJoin, OpStatus, OpKeepAlive, OpKeepAlives, OpTopology, OpProgress, OpGroups,
		OpCreateGroup, OpDeleteGroup, OpMembers, OpAddServer, OpRemoveServer, OpSettings,
		OpSetSettings, OpRegister, OpDeregister, OpHeartbeat, OpInstances, OpReplace,
		OpLeaseGet, OpGroupRevision, OpLeaseLeft, OpPropose, OpRead, OpWatch, OpSnapshot, OpScriptCheck:
		return true
	}
	return false
}

// ShardRequest names a shard.
type ShardRequest struct {
	Shard uint64 `json:"shard"`
}

// LeaseLeftResponse is the remaining time of every lease a group leader's
// lessor counts down (ms), for a backup.
type LeaseLeftResponse struct {
	Left map[int64]int64 `json:"left"`
}

// JoinRequest asks a running server to add the sender to the cluster.
type JoinRequest struct {
	NodeID   uint64 `json:"node_id"` // 0 = assign the next free id
	RaftAddr string `json:"raft_addr"`
	PeerAddr string `json:"peer_addr"`
}

// JoinResponse carries the id the sender was added with.
type JoinResponse struct {
	NodeID uint64 `json:"node_id"`
}

// Status is what a server reports about itself.
type Status struct {
	NodeID  uint64            `json:"node_id"`
	Applied map[uint64]uint64 `json:"applied"` // shard id -> last applied index
	// Left: the server has learned that it was removed from the cluster and
	// stopped its group replicas; the system shard may drop it now.
	Left bool `json:"left,omitempty"`
}

// GroupRequest names a group.
type GroupRequest struct {
	Group string `json:"group"`
}

// ServerRequest names a server.
type ServerRequest struct {
	ID uint64 `json:"id"`
}

// RevisionResponse carries a group revision.
type RevisionResponse struct {
	Revision int64 `json:"revision"`
}

// Topology is what a server knows of the cluster: every server and, per
// group, the leader it knows of; what a client node routes by.
type Topology struct {
	NodeID  uint64       `json:"node_id"`
	Servers []ServerInfo `json:"servers"`
	Groups  []GroupState `json:"groups"`
}

// ShardOf is the shard of the newest group named name that t lists (a
// server may list a group deleted and one created again under its name
// while it applies the change; shard ids only grow), and whether t lists
// one at all (its shard is 0 from servers that did not report shards).
func (t *Topology) ShardOf(name string) (shard uint64, listed bool) {
	for _, g := range t.Groups {
		if g.Name == name {
			shard, listed = max(shard, g.Shard), true
		}
	}
	return shard, listed
}

// ServerInfo is one server of a Topology or a member list.
type ServerInfo struct {
	ID       uint64 `json:"id"`
	RaftAddr string `json:"raft_addr"`
	PeerAddr string `json:"peer_addr"`
	Voter    bool   `json:"voter,omitempty"`
	Leader   bool   `json:"leader,omitempty"` // leads group "default" (members)
	Alive    bool   `json:"alive,omitempty"`  // members
}

// GroupState is one group as a server sees it.
type GroupState struct {
	Name     string `json:"name"`
	Leader   uint64 `json:"leader"`
	Revision int64  `json:"revision"`
	// Shard tells a group from an earlier one of the same name (0: a
	// server of an earlier version).
	Shard uint64 `json:"shard,omitempty"`
}

// Settings are the cluster settings.
type Settings struct {
	ScriptChecks bool `json:"script_checks"`
}

// LeaseDetail describes a lease.
type LeaseDetail struct {
	TTL  time.Duration `json:"ttl"`
	Keys []string      `json:"keys"`
}

// RegisterRequest registers an instance (Record is the service layer's
// JSON record); the lease of a ttl instance is the caller's to renew.
type RegisterRequest struct {
	Group  string `json:"group"`
	Record []byte `json:"record"`
}

// RegisterResponse returns the record as stored (with its lease).
// Revision, here and in the other answers to service writes, is the
// group's revision on the answering server after the write applied there:
// a client node raises its session floor to it, so it reads its own
// service writes.
type RegisterResponse struct {
	Record   []byte `json:"record"`
	Revision int64  `json:"revision"`
}

// InstanceRequest names one instance.
type InstanceRequest struct {
	Group   string `json:"group"`
	Service string `json:"service"`
	ID      string `json:"id"`
}

// DeregisterResponse tells whether there was an instance.
type DeregisterResponse struct {
	Found    bool  `json:"found"`
	Revision int64 `json:"revision"`
}

// InstancesRequest reads the instances of a service ("" = all).
type InstancesRequest struct {
	Group       string      `json:"group"`
	Service     string      `json:"service"`
	Consistency Consistency `json:"consistency"`
	MinRevision int64       `json:"min_revision"`
}

// InstancesResponse carries records (the service layer's JSON) with their
// mod revisions, and the revision they were read at.
type InstancesResponse struct {
	Records      [][]byte `json:"records"`
	ModRevisions []int64  `json:"mod_revisions"`
	Revision     int64    `json:"revision"`
}

// ReplaceRequest replaces every instance of the named services.
type ReplaceRequest struct {
	Group    string   `json:"group"`
	Services []string `json:"services"`
	Records  [][]byte `json:"records"`
}
