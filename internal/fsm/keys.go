package fsm

import "encoding/binary"

// Key layout in pebble. Every key starts with a one-byte prefix so each kind
// of data is one contiguous range that can be scanned, trimmed or replaced on
// its own.
//
//	'm' + name                       meta, 8-byte big-endian values: "mapplied" applied index;
//	                                 "mrevision" the group's revision (absent = the applied
//	                                 index: a data dir from before revisions were a counter);
//	                                 "mcompact" compact revision (absent = 1: nothing trimmed
//	                                 yet); "mlessor" lessor epoch (absent = 0); "mclock" the
//	                                 newest command time (sessions.go); "mleasebase" added to
//	                                 the Raft index to make a lease id (absent = 0; set by a
//	                                 restore, backup.go)
//	'k' + user key                   record (see encodeRecord)
//	's' + session(8 BE)              client session -> mark(8 BE) + last time(8 BE)
//	'd' + session(8 BE) + seq(8 BE)  stored result -> index(8 BE) + encoded result
//	'x' + index(8 BE)                old dedup index (data dirs from before sessions;
//	                                 deleted by the first session sweep)
//	'e' + revision(8 BE) + seq(4 BE) watch event (see events.go); seq counts
//	                                 the events of one revision from 0
//	'l' + lease id(8 BE)             lease (see lease.go)
//	'a' + lease id(8 BE) + user key  "" : key is attached to the lease
//
// Integers in keys are big-endian so byte order is numeric order: the 'x'
// range is sorted by index, which is what trimming scans, and the 'e' range
// by (revision, seq), which is the order events are served and trimmed in.
const (
	prefixMeta     = 'm'
	prefixKey      = 'k'
	prefixDedupID  = 'd'
	prefixDedupIdx = 'x'
	prefixEvent    = 'e'
	prefixLease    = 'l'
	prefixAttach   = 'a'
)

var (
	metaAppliedKey  = []byte{prefixMeta, 'a', 'p', 'p', 'l', 'i', 'e', 'd'}
	metaCompactKey  = []byte{prefixMeta, 'c', 'o', 'm', 'p', 'a', 'c', 't'}
	metaRevisionKey = []byte{prefixMeta, 'r', 'e', 'v', 'i', 's', 'i', 'o', 'n'}
	metaEpochKey    = []byte{prefixMeta, 'l', 'e', 's', 's', 'o', 'r'}
)

const (
	dedupIDKeyLen  = 1 + 8 + 8
	dedupIdxKeyLen = 1 + 8
	eventKeyLen    = 1 + 8 + 4
	leaseKeyLen    = 1 + 8
	// attachHeaderLen is the length of 'a' + id, before the user key.
	attachHeaderLen = 1 + 8
)

func dedupIDKey(dst *[dedupIDKeyLen]byte, session, seq uint64) []byte {
	dst[0] = prefixDedupID
	binary.BigEndian.PutUint64(dst[1:9], session)
	binary.BigEndian.PutUint64(dst[9:17], seq)
	return dst[:]
}

func eventKey(dst *[eventKeyLen]byte, rev uint64, seq uint32) []byte {
	dst[0] = prefixEvent
	binary.BigEndian.PutUint64(dst[1:9], rev)
	binary.BigEndian.PutUint32(dst[9:13], seq)
	return dst[:]
}

func leaseKey(dst *[leaseKeyLen]byte, id int64) []byte {
	dst[0] = prefixLease
	binary.BigEndian.PutUint64(dst[1:9], uint64(id))
	return dst[:]
}

// appendAttachKey returns 'a'+id+key appended to dst[:0].
func appendAttachKey(dst []byte, id int64, key []byte) []byte {
	dst = append(dst[:0], prefixAttach)
	dst = binary.BigEndian.AppendUint64(dst, uint64(id))
	return append(dst, key...)
}

// lastOf returns the last of the items packed in buf, which end at ends.
func lastOf(buf []byte, ends []int) []byte {
	start := 0
	if len(ends) > 1 {
		start = ends[len(ends)-2]
	}
	return buf[start:ends[len(ends)-1]]
}

// appendUserKey returns 'k'+key appended to dst[:0], reusing its storage.
func appendUserKey(dst []byte, key string) []byte {
	dst = append(dst[:0], prefixKey)
	return append(dst, key...)
}

// prefixEnd returns the smallest key greater than every key starting with p,
// or nil when there is none (p is all 0xff).
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] != 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// The reserved namespace: keys that start with a NUL byte. Clients cannot
// name them (a client key never contains NUL, see ValidateUserKey), so the
// layers above keep their own data there — service instances — in the
// same revisioned, watched, leased key space as everything else. The empty
// prefix of a list or a prefix delete means "every client key" and skips
// the reserved namespace; a watch filters it out the same way.
const (
	reservedByte = 0
	// ReservedPrefix starts every reserved key.
	ReservedPrefix = "\x00"
)

// IsReserved reports whether key belongs to the reserved namespace.
func IsReserved(key string) bool { return len(key) > 0 && key[0] == reservedByte }

// userKeysStart is the lowest stored key of a client key: 'k' and the
// smallest non-NUL byte.
var userKeysStart = []byte{prefixKey, 1}

// ReservedGeneration returns a counter that changes whenever a committed
// Update changed a reserved key (or state was loaded), so a reader can tell
// cheaply when to read the reserved namespace again.
func (s *StateMachine) ReservedGeneration() uint64 { return s.reservedGen.Load() }
