package core

import (
	"context"
	"testing"
	"time"
)

func TestBatchLen(t *testing.T) {
	sizes := []int{10, 10, 10, 100, 5}
	size := func(i int) int { return sizes[i] }
	for _, c := range []struct{ n, items, bytes, want int }{
		{5, 10, 1000, 5}, // everything fits
		{5, 2, 1000, 2},  // cut by count
		{5, 10, 25, 2},   // cut by bytes
		{5, 10, 5, 1},    // a first item over the bytes goes alone
		{0, 10, 1000, 0}, // nothing queued
	} {
		if got := BatchLen(c.n, size, c.items, c.bytes); got != c.want {
			t.Errorf("BatchLen(%d, %d items, %d bytes) = %d, want %d", c.n, c.items, c.bytes, got, c.want)
		}
	}
}

func TestBatchContext(t *testing.T) {
	now := time.Now()
	ds := []time.Time{now.Add(time.Minute), now.Add(time.Hour)}
	ctx, cancel := BatchContext(context.Background(), 2, func(i int) time.Time { return ds[i] })
	defer cancel()
	if d, ok := ctx.Deadline(); !ok || !d.Equal(ds[1]) {
		t.Fatalf("deadline %v %v, want the latest, %v", d, ok, ds[1])
	}
	ds[0] = time.Time{}
	ctx2, cancel2 := BatchContext(context.Background(), 2, func(i int) time.Time { return ds[i] })
	defer cancel2()
	if _, ok := ctx2.Deadline(); ok {
		t.Fatal("a caller without a deadline: the batch has none")
	}
	parent, stop := context.WithCancel(context.Background())
	ctx3, cancel3 := BatchContext(parent, 2, func(i int) time.Time { return ds[i] })
	defer cancel3()
	stop()
	<-ctx3.Done() // ends with its parent
}
