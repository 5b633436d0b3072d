package dister_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/dister/dister/internal/peer"
	"github.com/dister/dister/internal/testcluster"
)

// A feed client that stops reading (a stalled or partitioned client node)
// keeps the server's stream blocked in send. The feed's receive goroutine
// is counted in the engine's watchers and only ends when the gRPC stream
// ends, which happens only after Close's watchers.Wait (peerSrv.Close comes
// after it): the server's Close hangs. A plain Watch does not do this.
func TestFeedStalledClientDoesNotBlockClose(t *testing.T) {
	c := testcluster.New(t, 1)
	n := c.Node(1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rev, err := n.KV().Put(ctx, "k", []byte("0"))
	if err != nil {
		t.Fatal(err)
	}
	// Small fixed windows (no BDP growth): the server's sends block soon.
	pc := peer.NewClient(grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	defer pc.Close()
	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	fs, err := pc.Feed(sctx, c.Options(1).PeerAddr, &peer.FeedRequest{
		Watch: peer.WatchRequest{Group: "default", From: rev + 1}, Keys: []uint64{peer.KeyHash("k")}})
	if err != nil {
		t.Fatal(err)
	}
	if fr, err := fs.Recv(); err != nil || fr.Err != nil {
		t.Fatalf("first frame: %+v %v", fr, err)
	}
	// The client reads nothing more; the followed key changes a lot.
	big := bytes.Repeat([]byte("x"), 512<<10)
	for i := 0; i < 16; i++ {
		if _, err := n.KV().Put(ctx, "k", big); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond) // the server's send blocks
	closed := make(chan error, 1)
	go func() { closed <- n.Close() }()
	select {
	case err := <-closed:
		t.Logf("server closed: %v", err)
	case <-time.After(15 * time.Second):
		scancel() // the stream ends: Close can go on
		pc.Close()
		<-closed
		t.Fatal("server Close hung for 15s on a feed whose client does not read")
	}
}
