package core

import "sync"

// ProposerIDs hands out this proposer's command sequence numbers and keeps
// the mark every command carries: the lowest sequence number whose call has
// not returned yet (see fsm.Command). A call that returns, with an answer
// or an unknown outcome, is no longer outstanding: the state machine may
// forget its result, and refuses a late copy of it.
type ProposerIDs struct {
	mu      sync.Mutex
	last    uint64
	pending []uint64            // handed out and not yet ended, ascending (front may hold ended ones)
	ended   map[uint64]struct{} // ended while an earlier one is still pending
}

// Begin returns the next sequence number and the mark to send with it.
func (p *ProposerIDs) Begin() (seq, mark uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.last++
	p.pending = append(p.pending, p.last)
	return p.last, p.pending[0]
}

// End records that the call of seq returned.
func (p *ProposerIDs) End(seq uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.pending) == 0 || p.pending[0] != seq {
		if p.ended == nil {
			p.ended = map[uint64]struct{}{}
		}
		p.ended[seq] = struct{}{}
		return
	}
	p.pending = p.pending[1:]
	for len(p.pending) > 0 {
		if _, ok := p.ended[p.pending[0]]; !ok {
			break
		}
		delete(p.ended, p.pending[0])
		p.pending = p.pending[1:]
	}
	if len(p.pending) == 0 {
		p.pending = p.pending[:0:0] // let the old array go
	}
}
