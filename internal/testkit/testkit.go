// Package testkit holds what tests across the repository share: finding the
// outside tools they use as oracles (qemu-img, mkntfs, …) and temporary disks.
package testkit

import (
	"os"
	"os/exec"
	"testing"
)

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
