package fsm

import "encoding/binary"

// Key layout in pebble. Every key starts with a one-byte prefix so each kind
// of data is one contiguous range that can be scanned, trimmed or replaced on
// its own. 'e' (watch events by revision) and 'l' (leases) are reserved for
// later changes: nothing here may use them.
//
//	'm' + name                       meta; "mapplied" -> 8-byte big-endian applied index
//	'k' + user key                   record (see encodeRecord)
//	'd' + session(8 BE) + seq(8 BE)  dedup by id  -> index(8 BE) + encoded result
//	'x' + index(8 BE)                dedup by index -> session(8 BE) + seq(8 BE)
//
// Integers in keys are big-endian so byte order is numeric order: the 'x'
// range is sorted by index, which is what trimming scans.
const (
	prefixMeta     = 'm'
	prefixKey      = 'k'
	prefixDedupID  = 'd'
	prefixDedupIdx = 'x'
)

var metaAppliedKey = []byte{prefixMeta, 'a', 'p', 'p', 'l', 'i', 'e', 'd'}

const (
	dedupIDKeyLen  = 1 + 8 + 8
	dedupIdxKeyLen = 1 + 8
)

func dedupIDKey(dst *[dedupIDKeyLen]byte, session, seq uint64) []byte {
	dst[0] = prefixDedupID
	binary.BigEndian.PutUint64(dst[1:9], session)
	binary.BigEndian.PutUint64(dst[9:17], seq)
	return dst[:]
}

func dedupIdxKey(dst *[dedupIdxKeyLen]byte, index uint64) []byte {
	dst[0] = prefixDedupIdx
	binary.BigEndian.PutUint64(dst[1:9], index)
	return dst[:]
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
