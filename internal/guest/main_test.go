package guest

import (
	"testing"

	"go.uber.org/goleak"
)

// No SSH connection, session or command goroutine outlives the tests.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
