package shard

import (
	"fmt"
	"strings"
	"sync"
)

// dragonboat logs a failed Raft connection on every retry (several a
// second per unreachable or refusing peer). A peer whose certificate is
// refused keeps failing the same way, so each distinct failure is logged
// once per remote address, until a connection to it succeeds again.
var connFailures struct {
	mu   sync.Mutex
	last map[string]string // format + remote -> the failure last logged
}

// connFailureFormats are the messages deduplicated; the remote address is
// their second argument and the failure their third.
var connFailureFormats = []string{
	"Nodehost %s failed to get a connection to %s",
	"breaker %s to %s failed, connect and process failed",
}

// repeatedConnFailure is true for a connection failure already logged.
func repeatedConnFailure(format string, args []any) bool {
	if len(args) < 3 {
		return false
	}
	for _, f := range connFailureFormats {
		if !strings.HasPrefix(format, f) {
			continue
		}
		key := f + "|" + fmt.Sprint(args[1])
		text := fmt.Sprint(args[2])
		connFailures.mu.Lock()
		defer connFailures.mu.Unlock()
		if connFailures.last == nil || len(connFailures.last) > 4096 {
			connFailures.last = map[string]string{}
		}
		if connFailures.last[key] == text {
			return true
		}
		connFailures.last[key] = text
		return false
	}
	return false
}

// connEstablished forgets the failures logged for addr.
func connEstablished(addr string) {
	connFailures.mu.Lock()
	defer connFailures.mu.Unlock()
	for _, f := range connFailureFormats {
		delete(connFailures.last, f+"|"+addr)
	}
}
