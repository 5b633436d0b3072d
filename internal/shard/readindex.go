package shard

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"time"

	"github.com/lni/dragonboat/v4"

	"github.com/dister/dister/internal/errs"
)

// Linearizable reads share ReadIndex rounds, as etcd's read loop does: a
// read joins the next round to start (never one already in flight, whose
// index may predate the read), one ReadIndex call serves the whole round,
// and once it completes the local replica has applied at least that index,
// so each read of the round answers from local state. Under load this turns
// one Raft round trip per read into one per batch of reads.

// readRound is one ReadIndex call shared by the reads that joined it.
type readRound struct {
	done chan struct{}
	err  error // set before done is closed
}

// maxReadRounds is how many rounds of one shard may be in flight at once.
// With one, a read that comes while a round is in flight waits for the
// rest of it and then a whole round; a second round starts at once, so
// reads that come from several client nodes (each sharing one call among
// its own readers) wait about one round.
const maxReadRounds = 2

// readBatcher schedules the rounds of one shard.
type readBatcher struct {
	mu      sync.Mutex
	next    *readRound // collecting reads; starts when a runner is free
	runners int        // goroutines running rounds
}

func (h *Host) batcher(shardID uint64) *readBatcher {
	h.mu.Lock()
	defer h.mu.Unlock()
	b := h.readers[shardID]
	if b == nil {
		b = &readBatcher{}
		h.readers[shardID] = b
	}
	return b
}

// joinRound returns the round a read that starts now must wait for.
func (h *Host) joinRound(shardID uint64) *readRound {
	b := h.batcher(shardID)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.next == nil {
		b.next = &readRound{done: make(chan struct{})}
	}
	r := b.next
	if b.runners < maxReadRounds {
		// rounds.Add must not race Close's rounds.Wait: both happen under
		// h.mu, and nothing starts once closed is set.
		h.mu.Lock()
		closed := h.closed.Load()
		if !closed {
			h.rounds.Add(1)
		}
		h.mu.Unlock()
		if closed {
			b.next = nil
			r.err = errs.Closed
			close(r.done)
			return r
		}
		b.runners++
		go h.runRounds(shardID, b)
	}
	return r
}

// runRounds runs rounds back to back while reads keep joining; up to
// maxReadRounds of it run at once.
func (h *Host) runRounds(shardID uint64, b *readBatcher) {
	defer h.rounds.Done()
	for {
		// Let the reads that are on their way join this round.
		runtime.Gosched()
		b.mu.Lock()
		r := b.next
		b.next = nil
		if r == nil {
			b.runners--
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		ctx, cancel := context.WithTimeout(h.life, h.cfg.AttemptTimeout)
		_, rs, err := h.attempt(ctx, shardID, nil, func(t time.Duration) (*dragonboat.RequestState, error) {
			return h.nh.ReadIndex(shardID, t)
		})
		cancel()
		if rs != nil {
			rs.Release()
		}
		r.err = err
		close(r.done)
	}
}

// Read answers q from the local replica after a ReadIndex round, so it
// reflects every write committed before Read was called (linearizable).
func (h *Host) Read(ctx context.Context, shardID uint64, q any) (any, error) {
	for {
		r := h.joinRound(shardID)
		select {
		case <-r.done:
		case <-ctx.Done():
			var last error
			if _, ok := h.Leader(shardID); !ok {
				last = dragonboat.ErrShardNotReady
			}
			return nil, ctxError(ctx.Err(), last)
		}
		if r.err == nil {
			v, err := h.nh.StaleRead(shardID, q)
			return v, translate(err)
		}
		// The round ran out of its own time (no quorum for a while); join
		// another while the caller still has time.
		if ctx.Err() != nil || h.closed.Load() || !errors.Is(r.err, context.DeadlineExceeded) {
			return nil, r.err
		}
	}
}
