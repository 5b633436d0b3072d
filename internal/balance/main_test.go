package balance

import (
	"testing"

	"go.uber.org/goleak"
)

// Nothing here starts goroutines; the check guards against that changing.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
