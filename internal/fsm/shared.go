package fsm

import (
	"runtime"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/vfs"
)

// Shared is what the state machines of one host share, so that memory and
// goroutines do not grow with the number of groups: pebble's block cache,
// and its table cache, which runs goroutines of its own per shard. Without
// it, each pebble instance would make its own of each.
type Shared struct {
	cache      *pebble.Cache
	tableCache *pebble.TableCache
}

// sharedTableCacheSize bounds the sstables the host's state machines keep
// open together (pebble's own default is about 1,000 per instance).
const sharedTableCacheSize = 4096

// NewShared makes the shared parts with a block cache of cacheBytes. Close
// it after every state machine that used it has closed.
func NewShared(cacheBytes int64) *Shared {
	s := &Shared{cache: pebble.NewCache(cacheBytes)}
	s.tableCache = pebble.NewTableCache(s.cache, runtime.GOMAXPROCS(0), sharedTableCacheSize)
	return s
}

// Close releases the shared parts.
func (s *Shared) Close() {
	_ = s.tableCache.Unref()
	s.cache.Unref()
}

// options fills in the parts of opts this Shared provides (nil = pebble's
// own per instance). The file system is the plain one: pebble's default
// wraps it in disk health checks, one ticker goroutine per instance, that
// report slow disks to an event listener that dister does not set.
func (s *Shared) options(opts *pebble.Options) {
	opts.FS = vfs.Default
	if s == nil {
		opts.Cache = pebble.NewCache(8 << 20) // the caller drops its reference after Open
		return
	}
	opts.Cache, opts.TableCache = s.cache, s.tableCache
}
