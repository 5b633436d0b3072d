package core

import (
	"context"
	"time"
)

// What the two write batchers share: the servers' group commit
// (internal/shard) and a client node's coalescing of writes into
// ProposeMany calls (internal/client). Both cut a queue into batches by
// count and bytes, and try a batch for as long as its most patient caller
// waits.

// BatchLen is how many of the n queued items, whose sizes size(i) gives,
// the next batch takes: at most maxItems, and no more than maxBytes in all,
// except that a first item larger than that goes alone.
func BatchLen(n int, size func(i int) int, maxItems, maxBytes int) int {
	taken, bytes := 0, 0
	for taken < n && taken < maxItems {
		bytes += size(taken)
		if taken > 0 && bytes > maxBytes {
			break
		}
		taken++
	}
	return taken
}

// BatchContext is the ctx of a batch of n callers, whose deadlines
// deadline(i) gives (zero: none): it ends with parent, and at the latest
// deadline when every caller has one.
func BatchContext(parent context.Context, n int, deadline func(i int) time.Time) (context.Context, context.CancelFunc) {
	var last time.Time
	for i := range n {
		d := deadline(i)
		if d.IsZero() {
			return context.WithCancel(parent)
		}
		if d.After(last) {
			last = d
		}
	}
	return context.WithDeadline(parent, last)
}
