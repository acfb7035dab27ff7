// Package testkit holds what tests across the repository share: finding the
// outside tools they use as oracles (qemu-img, mkntfs, …), waiting for a
// condition with a deadline, a log sink goroutines may share, and temporary
// disks.
package testkit

import (
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/replicator/replicator/internal/freeport"
)

// FreeAddr is a loopback address (127.0.0.1:port) no one listens on at the
// moment, for a server the test starts. The port is below the kernel's
// ephemeral range (package freeport), so that no outgoing connection takes
// it before the server binds it.
func FreeAddr(t testing.TB) string {
	t.Helper()
	port, err := freeport.Port("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// RequireTool returns the path of an outside tool. Where it is missing the test
// is skipped on a developer's machine but fails under CI=true, so that CI never
// passes by skipping.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is required (install it; see .ci/run): %v", name, err)
	}
	t.Skipf("%s not installed: %v", name, err)
	return ""
}

// Long marks a slow test: `go test -short` skips it on a developer's machine,
// but under CI=true it always runs.
func Long(t testing.TB, what string) {
	t.Helper()
	if testing.Short() && os.Getenv("CI") == "" {
		t.Skipf("-short: %s", what)
	}
}

// Precondition fails the test under CI=true and skips it elsewhere: for a
// facility of the machine (a FUSE mount, say) that CI must have.
func Precondition(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// Eventually calls check every pause until it returns nil, and fails the
// test with check's last error if that has not happened within limit. The
// pause is the caller's: short for a state that lasts only moments (a merge
// in progress), longer for a question that costs a round trip to a server.
// check may fail the test itself (t.Fatal) on an error that waiting cannot
// mend.
func Eventually(t testing.TB, limit, pause time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %v", limit, err)
		}
		time.Sleep(pause)
	}
}

// SyncBuffer is a log sink safe for concurrent writes (a server's logger
// writing while the test reads).
type SyncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String is everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
