package cache

import (
	"fmt"
	"slices"
	"testing"
)

// byLen hashes a key to its length: keys of one length share a hash.
func byLen(k string) uint64 { return uint64(len(k)) }

func filtered(t *testing.T, size int) *Cache[string] {
	t.Helper()
	c := NewFiltered[string](size, 100, byLen)
	c.Reset(10)
	return c
}

func cached(c *Cache[string], key string) (string, bool) {
	v, _, _, ok, _ := c.Lookup(key)
	return v, ok
}

// A read-through value is cached only once the key's follow is acked, and
// only if it is not older than the ack: a value read at 11 while the
// server began sending the key's events after 12 may have missed a write
// at 12.
func TestFollowFillWaitsForAck(t *testing.T) {
	c := filtered(t, 4)
	c.Follow("a")
	c.Follow("bb")
	ch := c.TakeChange(10)
	slices.Sort(ch.Add)
	if ch.Seq != 1 || !slices.Equal(ch.Add, []uint64{1, 2}) || len(ch.Remove) != 0 {
		t.Fatalf("change %+v", ch)
	}
	if c.Fill("a", "a@11", true, 11) || c.Fill("bb", "bb@13", true, 13) {
		t.Fatal("a fill before the ack was cached")
	}
	if _, ok := cached(c, "a"); ok {
		t.Fatal("cached before the ack")
	}
	c.Ack(1, 12)
	if _, ok := cached(c, "a"); ok {
		t.Fatal("a value read at 11 cached under a follow acked at 12")
	}
	if v, ok := cached(c, "bb"); !ok || v != "bb@13" {
		t.Fatalf("bb: %q %v, want the value read at 13", v, ok)
	}
	if pos, _ := c.Pos(); pos != 13 && pos != 12 {
		t.Fatalf("pos %d: the ack is a progress note", pos)
	}
	// a is no longer followed: the next change removes its hash.
	if ch := c.TakeChange(10); ch == nil || !slices.Equal(ch.Remove, []uint64{1}) {
		t.Fatalf("after the refused fill: %+v, want a's hash removed", ch)
	}
}

// The ack may come before the read's answer: the follow stays, and the
// fill decides when it comes.
func TestFollowAckBeforeFill(t *testing.T) {
	c := filtered(t, 4)
	c.Follow("a")
	c.Follow("bb")
	ch := c.TakeChange(10)
	c.Ack(ch.Seq, 12)
	if c.TakeChange(10) != nil {
		t.Fatal("a follow acked before its fill was dropped")
	}
	if !c.Fill("a", "a@12", true, 12) {
		t.Fatal("a fill at the ack's revision refused")
	}
	if c.Fill("bb", "bb@11", true, 11) {
		t.Fatal("a fill older than the ack cached")
	}
	if ch := c.TakeChange(10); ch == nil || !slices.Equal(ch.Remove, []uint64{2}) {
		t.Fatalf("%+v, want bb's hash removed", ch)
	}
}

// A read that failed leaves no follow behind once acked.
func TestFollowAbandoned(t *testing.T) {
	c := filtered(t, 4)
	c.Follow("a")
	ch := c.TakeChange(10)
	c.Unfollow("a") // its read failed before the ack
	c.Ack(ch.Seq, 12)
	if ch := c.TakeChange(10); ch == nil || !slices.Equal(ch.Remove, []uint64{1}) {
		t.Fatalf("%+v, want a's hash removed", ch)
	}
}

// Events reach acked follows only (cached or not); a waiting follow's
// events belong to an earlier follow of its hash and are ignored.
func TestFollowEvents(t *testing.T) {
	c := filtered(t, 4)
	c.Follow("a")
	c.Follow("bb")
	ch := c.TakeChange(10)
	c.Apply(11, []Event[string]{{Key: "a", Value: "a@11", Found: true}})
	if _, ok := cached(c, "a"); ok {
		t.Fatal("an event cached a key whose follow was not acked")
	}
	c.Ack(ch.Seq, 11)
	c.Apply(12, []Event[string]{{Key: "a", Value: "a@12", Found: true}, {Key: "bb", Found: false}, {Key: "ccc", Value: "x", Found: true}})
	if v, ok := cached(c, "a"); !ok || v != "a@12" {
		t.Fatalf("a: %q %v", v, ok)
	}
	if _, found, _, ok, _ := c.Lookup("bb"); !ok || found {
		t.Fatal("bb's deletion not cached as absence")
	}
	if _, ok := cached(c, "ccc"); ok {
		t.Fatal("a key not followed entered the cache")
	}
	// A fill older than the event leaves the event's value.
	if c.Fill("a", "a@11", true, 11) {
		t.Fatal("an older fill replaced an event")
	}
}

// The LRU's evictions unfollow; a hash two keys share stays followed
// until neither needs it.
func TestFollowEvictionAndSharedHash(t *testing.T) {
	c := filtered(t, 2)
	for _, k := range []string{"a", "b", "cc"} {
		c.Follow(k)
	}
	ch := c.TakeChange(10)
	slices.Sort(ch.Add)
	if !slices.Equal(ch.Add, []uint64{1, 2}) {
		t.Fatalf("adds %v: a and b share hash 1", ch.Add)
	}
	c.Ack(ch.Seq, 10)
	c.Fill("a", "a", true, 10)
	c.Fill("b", "b", true, 10)
	c.Fill("cc", "cc", true, 10) // evicts a
	if _, ok := cached(c, "a"); ok {
		t.Fatal("a not evicted")
	}
	if ch := c.TakeChange(10); ch != nil {
		t.Fatalf("%+v: a's hash removed while b still needs it", ch)
	}
	c.Apply(11, []Event[string]{{Key: "b", Value: "b@11", Found: true}})
	if v, _ := cached(c, "b"); v != "b@11" {
		t.Fatalf("b %q: its events stopped", v)
	}
	c.Fill("a", "a", true, 11) // not followed any more
	if _, ok := cached(c, "a"); ok {
		t.Fatal("an unfollowed key filled")
	}
}

// A new stream's request carries every followed hash; its start acks the
// follows that waited. Changes not sent are dropped (the request has
// their result), removed hashes are not in it.
func TestFollowReopen(t *testing.T) {
	c := filtered(t, 4)
	c.Follow("a")
	ch := c.TakeChange(10)
	c.Ack(ch.Seq, 10)
	c.Fill("a", "a", true, 10)
	c.Follow("bb")
	c.TakeChange(10) // sent on a stream that broke: never acked
	c.Follow("ccc")  // not sent yet
	if !c.Fill("a", "a2", true, 11) {
		t.Fatal("fill")
	}
	hashes, waiting := c.FollowedHashes()
	slices.Sort(hashes)
	slices.Sort(waiting)
	if !slices.Equal(hashes, []uint64{1, 2, 3}) || !slices.Equal(waiting, []string{"bb", "ccc"}) {
		t.Fatalf("hashes %v waiting %v", hashes, waiting)
	}
	if ch := c.TakeChange(10); ch != nil {
		t.Fatalf("change %+v after the request took them", ch)
	}
	c.Fill("bb", "bb", true, 12)
	c.Opened(waiting, 12)
	if v, ok := cached(c, "bb"); !ok || v != "bb" {
		t.Fatal("the stream's start did not settle bb")
	}
	// Reset forgets everything followed.
	c.Reset(20)
	if hashes, waiting := c.FollowedHashes(); len(hashes)+len(waiting) != 0 {
		t.Fatalf("after Reset: %v %v", hashes, waiting)
	}
}

// Warm-up values wait for their ack like fills, and then take free room
// only: keys read meanwhile are never evicted for them.
func TestFollowWarmNeverEvicts(t *testing.T) {
	c := filtered(t, 2)
	if !c.Warm("w1", "w1", 10) || !c.Warm("w2", "w2", 10) {
		t.Fatal("warm refused with room")
	}
	if c.Warm("w3", "w3", 10) {
		t.Fatal("warm took more follows than the cache holds")
	}
	c.Follow("r1")
	c.Follow("r2")
	ch := c.TakeChange(10)
	c.Fill("r1", "r1", true, 10)
	c.Fill("r2", "r2", true, 10)
	c.Ack(ch.Seq, 10)
	for _, k := range []string{"r1", "r2"} {
		if _, ok := cached(c, k); !ok {
			t.Fatalf("%s evicted by the warm-up", k)
		}
	}
}

// TakeChange splits a large change; the keys of adds that did not fit are
// acked by a later change.
func TestFollowChangeSplit(t *testing.T) {
	c := NewFiltered[string](100, 100, func(k string) uint64 { return uint64(k[0]) })
	c.Reset(1)
	for _, k := range []string{"a", "b", "c"} {
		c.Follow(k)
	}
	first := c.TakeChange(2)
	second := c.TakeChange(2)
	if len(first.Add) != 2 || second == nil || len(second.Add) != 1 {
		t.Fatalf("changes %+v %+v", first, second)
	}
	c.Ack(first.Seq, 5)
	c.Ack(second.Seq, 6)
	for _, k := range []string{"a", "b", "c"} {
		if !c.Fill(k, k, true, 6) {
			t.Fatalf("%s not acked by either change", k)
		}
	}
}

// Values read while their follows wait for acks (a stream that stalls)
// are kept for at most twice as many keys as the cache holds; the keys of the
// others are unfollowed at their acks. (Before the bound a cache of 4 keys
// kept 1,000 values of 1 MiB here.)
func TestFollowWaitingFillsBounded(t *testing.T) {
	const size = 4
	c := NewFiltered[[]byte](size, 1<<18, func(k string) uint64 { return uint64(len(k))<<32 | uint64(k[len(k)-1]) })
	c.Reset(10)
	val := make([]byte, 1<<20)
	for i := range 100 {
		k := fmt.Sprintf("key-%03d", i)
		c.Follow(k)
		c.Fill(k, slices.Clone(val), true, 11)
	}
	held := 0
	for _, fl := range c.filter.follows {
		if fl.fill != nil {
			held++
		}
	}
	if held > 2*size {
		t.Fatalf("a cache of %d keys holds %d values in follows waiting for their ack", size, held)
	}
	for ch := c.TakeChange(1000); ch != nil; ch = c.TakeChange(1000) {
		c.Ack(ch.Seq, 11)
	}
	if n := c.Len(); n != size {
		t.Fatalf("%d keys cached after the acks, want %d", n, size)
	}
	if hashes, _ := c.FollowedHashes(); len(hashes) != size {
		t.Fatalf("%d hashes followed after the acks, want only the %d cached", len(hashes), size)
	}
}
