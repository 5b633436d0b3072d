package standalone

import (
	"fmt"
	"testing"

	"github.com/dister/dister"
)

// Every error a watch stream can end with has a code of its own in the
// error event, none of them "internal".
func TestWatchErrorCodes(t *testing.T) {
	for _, c := range []struct {
		err  error
		code string
	}{
		{dister.ErrWatchOverflow, codeWatchOverflow},
		{dister.ErrCompacted, codeCompacted},
		{dister.ErrClosed, codeClosed},
		{dister.ErrGroupNotFound, codeGroupNotFound},
		{dister.ErrStaleView, codeStaleView}, // a Pick's, not a watch's
	} {
		if _, code := classify(fmt.Errorf("watch %q: %w", "p/", c.err)); code != c.code {
			t.Errorf("%v: code %q, want %q", c.err, code, c.code)
		}
	}
}
