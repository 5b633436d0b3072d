package svc

import (
	"container/heap"
	"time"
)

// dueHeap orders the targets that have something due by when it is due,
// so a tick costs the work due rather than a walk of every target.
type dueHeap []*target

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *dueHeap) Push(x any) {
	t := x.(*target)
	t.index = len(*h)
	*h = append(*h, t)
}
func (h *dueHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.index = -1
	return t
}

// popDue removes and returns the targets due at or before now.
func (h *dueHeap) popDue(now time.Time) []*target {
	var out []*target
	for h.Len() > 0 && !(*h)[0].due.After(now) {
		out = append(out, heap.Pop(h).(*target))
	}
	return out
}

// schedule makes t due at due; the zero time takes it out of the heap.
func (c *Checker) schedule(t *target, due time.Time) {
	switch {
	case due.IsZero():
		if t.index >= 0 {
			heap.Remove(&c.due, t.index)
		}
	case t.index >= 0:
		t.due = due
		heap.Fix(&c.due, t.index)
	default:
		t.due = due
		heap.Push(&c.due, t)
	}
}

// earliest is the earlier of two due times, zero meaning none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}
