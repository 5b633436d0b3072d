package cache

import (
	"context"
	"testing"
	"time"
)

func lookup(t *testing.T, c *Cache[string], key string) (string, bool, int64, bool) {
	t.Helper()
	v, found, at, ok, _ := c.Lookup(key)
	return v, found, at, ok
}

func TestEventsUpdateCachedKeys(t *testing.T) {
	c := New[string](10)
	c.Reset(5)
	if !c.Fill("a", "a5", true, 5) || !c.Fill("gone", "", false, 5) {
		t.Fatal("fill at the watch position refused")
	}
	c.Apply(6, []Event[string]{{Key: "a", Value: "a6", Found: true}, {Key: "b", Value: "b6", Found: true}})
	c.Apply(7, []Event[string]{{Key: "gone", Value: "g7", Found: true}})
	if v, found, at, ok := lookup(t, c, "a"); !ok || !found || v != "a6" || at != 7 {
		t.Fatalf("a: %q %v at %d ok %v; want a6 at 7", v, found, at, ok)
	}
	if v, found, _, ok := lookup(t, c, "gone"); !ok || !found || v != "g7" {
		t.Fatalf("cached absence not replaced by the put: %q %v %v", v, found, ok)
	}
	if v, _, at, ok := lookup(t, c, "b"); !ok || v != "b6" || at != 7 {
		t.Fatalf("a put did not warm a cache with room: %q at %d ok %v", v, at, ok)
	}
	c.Apply(8, []Event[string]{{Key: "a"}})
	if _, found, _, ok := lookup(t, c, "a"); !ok || found {
		t.Fatal("a delete did not cache the absence")
	}
	// A repeat of an old revision (a resumed watch) changes nothing.
	c.Apply(6, []Event[string]{{Key: "a", Value: "a6", Found: true}})
	if _, found, _, _ := lookup(t, c, "a"); found {
		t.Fatal("a repeated old revision was applied")
	}
}

// Events of keys nobody read fill free room only: they never evict a key,
// and a delete of a key not cached caches nothing.
func TestEventsFillOnlyFreeRoom(t *testing.T) {
	c := New[string](2)
	c.Reset(1)
	c.Apply(2, []Event[string]{{Key: "gone"}})
	if _, _, _, ok := lookup(t, c, "gone"); ok {
		t.Fatal("a delete of a key not cached was cached")
	}
	c.Fill("a", "a1", true, 2)
	c.Apply(3, []Event[string]{{Key: "b", Value: "b3", Found: true}, {Key: "c", Value: "c3", Found: true}})
	if _, _, _, ok := lookup(t, c, "b"); !ok {
		t.Fatal("b not cached with room for it")
	}
	if _, _, _, ok := lookup(t, c, "c"); ok {
		t.Fatal("c cached in a full cache")
	}
	if v, _, _, ok := lookup(t, c, "a"); !ok || v != "a1" {
		t.Fatal("an event of a key nobody read evicted a read key")
	}
}

// A warm-up entry follows Fill's rule and fills free room only; it
// reports a full cache so the warm-up stops.
func TestWarmNeverEvicts(t *testing.T) {
	c := New[string](2)
	c.Reset(5)
	if !c.Warm("a", "a4", 4) {
		t.Fatal("room reported missing in an empty cache")
	}
	if _, _, _, ok := lookup(t, c, "a"); ok {
		t.Fatal("a page older than the watch position was cached")
	}
	c.Fill("read", "r", true, 6)
	if !c.Warm("a", "a6", 6) {
		t.Fatal("room reported missing with one key of two")
	}
	if c.Warm("b", "b6", 6) {
		t.Fatal("a full cache reported room")
	}
	if _, _, _, ok := lookup(t, c, "b"); ok {
		t.Fatal("b evicted a key to enter")
	}
	if v, _, _, ok := lookup(t, c, "read"); !ok || v != "r" {
		t.Fatal("a warm-up entry evicted a key that was read")
	}
	c.Apply(7, []Event[string]{{Key: "a", Value: "a7", Found: true}})
	if !c.Warm("a", "a6", 6) { // a cached key: no room needed, older value refused
		t.Fatal("a cached key reported no room")
	}
	if v, _, _, _ := lookup(t, c, "a"); v != "a7" {
		t.Fatalf("a page older than the key's event replaced it: %q", v)
	}
}

// The fill race: a read served at revision 5 arrives after the watch
// delivered revision 6, which changed the key while it was not cached.
func TestFillRace(t *testing.T) {
	c := New[string](1)
	c.Reset(4)
	c.Fill("other", "o", true, 4) // a full cache: the event does not enter
	c.Apply(6, []Event[string]{{Key: "k", Value: "new", Found: true}})
	if c.Fill("k", "old", true, 5) {
		t.Fatal("a read older than the watch position was cached")
	}
	if _, _, _, ok := lookup(t, c, "k"); ok {
		t.Fatal("k cached")
	}
	// A read newer than the watch enters; the watch's older events for
	// the key then leave it alone, newer ones replace it.
	if !c.Fill("k", "v9", true, 9) {
		t.Fatal("fill refused")
	}
	c.Apply(8, []Event[string]{{Key: "k", Value: "v8", Found: true}})
	if v, _, at, _ := lookup(t, c, "k"); v != "v9" || at != 9 {
		t.Fatalf("older event replaced a newer fill: %q at %d", v, at)
	}
	c.Apply(10, []Event[string]{{Key: "k", Value: "v10", Found: true}})
	if v, _, _, _ := lookup(t, c, "k"); v != "v10" {
		t.Fatalf("newer event not applied: %q", v)
	}
}

func TestTrustAndWait(t *testing.T) {
	c := New[string](2)
	if _, trusted := c.Pos(); trusted {
		t.Fatal("new cache trusted before Reset")
	}
	c.Reset(3)
	c.Untrust()
	if _, trusted := c.Pos(); trusted {
		t.Fatal("still trusted after Untrust")
	}
	c.Trust()
	go func() {
		time.Sleep(10 * time.Millisecond)
		c.Progress(7)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if !c.WaitPos(ctx, 7) {
		t.Fatal("WaitPos did not see the progress")
	}
	short, cancel2 := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel2()
	if c.WaitPos(short, 8) {
		t.Fatal("WaitPos reported a position not reached")
	}
	// The LRU bound holds.
	c.Fill("a", "", false, 7)
	c.Fill("b", "", false, 7)
	c.Fill("c", "", false, 7)
	if c.Len() != 2 {
		t.Fatalf("%d keys in a cache of 2", c.Len())
	}
}

// A txn that changes a key twice sends both events in one revision: the
// key's state is its last event's, whether the key was cached or not (the
// first event won before: a put then a delete left the put cached).
func TestEventsOfOneRevisionLastWins(t *testing.T) {
	c := New[string](10)
	c.Reset(5)
	if !c.Fill("cached", "c5", true, 5) {
		t.Fatal("fill refused")
	}
	c.Apply(6, []Event[string]{
		{Key: "cached", Value: "first", Found: true}, {Key: "cached"}, // put, delete
		{Key: "new", Value: "first", Found: true}, {Key: "new", Value: "second", Found: true}, // put, put
		{Key: "gone", Value: "x", Found: true}, {Key: "gone"}, // put, delete of an uncached key
	})
	if _, found, _, ok := lookup(t, c, "cached"); !ok || found {
		t.Fatalf("put then delete: found %v ok %v, want cached as absent", found, ok)
	}
	if v, found, _, ok := lookup(t, c, "new"); !ok || !found || v != "second" {
		t.Fatalf("put then put: %q found %v ok %v, want second", v, found, ok)
	}
	if v, found, _, ok := lookup(t, c, "gone"); ok && found {
		t.Fatalf("put then delete of an uncached key: %q cached as present", v)
	}
}
