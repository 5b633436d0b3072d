package dister_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// TestErrorsCutKeys: an error message quotes at most 200 bytes of a key,
// whatever its length, and still matches its sentinel.
func TestErrorsCutKeys(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	raft, peer := testcluster.FreeAddr(t), testcluster.FreeAddr(t)
	n, err := dister.Open(ctx, dister.Options{NodeID: 1, DataDir: t.TempDir(), RaftAddr: raft, PeerAddr: peer,
		InitialMembers: map[uint64]dister.Peer{1: {RaftAddr: raft, PeerAddr: peer}}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	long := strings.Repeat("k", 4000)
	_, err = n.KV().Get(ctx, long)
	if !errors.Is(err, dister.ErrNotFound) {
		t.Fatalf("get a missing long key: %v", err)
	}
	if want := `get "` + strings.Repeat("k", 200) + `"...: `; !strings.HasPrefix(err.Error(), want) || len(err.Error()) > 300 {
		t.Errorf("get a missing long key: %q, want it to start with %q", err, want)
	}
	_, err = n.KV().Put(ctx, long+long, []byte("v"))
	if !errors.Is(err, dister.ErrTooLarge) && !errors.Is(err, dister.ErrInvalid) || len(err.Error()) > 400 {
		t.Errorf("put a key over the limit: %d bytes of message: %.300q", len(err.Error()), err)
	}
	if _, err := n.KV().Get(ctx, "short"); err == nil || !strings.HasPrefix(err.Error(), `get "short": `) {
		t.Errorf("get a missing short key: %v", err)
	}
}
