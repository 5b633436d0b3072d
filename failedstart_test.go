package dister_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// TestFailedFirstStartLeavesNothing: a first start that fails (its Raft
// port is taken) removes the data dir it created, so the next start with
// another port succeeds; an empty data dir that existed is emptied again,
// not removed. The error reads as the system said it, without a sentinel
// after it, and still matches ErrInvalid.
func TestFailedFirstStartLeavesNothing(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, existed := range []bool{false, true} {
		dir := filepath.Join(t.TempDir(), "data")
		if existed {
			if err := os.Mkdir(dir, 0o750); err != nil {
				t.Fatal(err)
			}
		}
		peer := testcluster.FreeAddr(t)
		open := func(raft string) (*dister.Node, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			return dister.Open(ctx, dister.Options{NodeID: 1, DataDir: dir, RaftAddr: raft, PeerAddr: peer,
				InitialMembers: map[uint64]dister.Peer{1: {RaftAddr: raft, PeerAddr: peer}}})
		}
		_, err := open(busy.Addr().String())
		if err == nil || !errors.Is(err, dister.ErrInvalid) || strings.Contains(err.Error(), dister.ErrInvalid.Error()) {
			t.Fatalf("start on a busy port: %v, want an OS error matching ErrInvalid without its text", err)
		}
		entries, statErr := os.ReadDir(dir)
		switch {
		case !existed && !errors.Is(statErr, os.ErrNotExist):
			t.Errorf("the failed start left %s (%d entries, %v)", dir, len(entries), statErr)
		case existed && (statErr != nil || len(entries) != 0):
			t.Errorf("the failed start left %d entries in the empty dir it was given (%v)", len(entries), statErr)
		}
		n, err := open(testcluster.FreeAddr(t))
		if err != nil {
			t.Fatalf("the next start with another port: %v", err)
		}
		n.Close()
	}
}
