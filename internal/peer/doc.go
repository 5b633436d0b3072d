// Package peer is the node RPC on each server's PeerAddr: servers ask each
// other to join, report how far they applied and renew leases at the
// leader; client-role nodes send their writes (with their own dedup ids),
// reads and watches, and the ops of Call (groups, members, settings,
// services, discovery). It is gRPC over one connection per address with
// dister's own binary encodings (wire.go); see rpc.go for why.
package peer
