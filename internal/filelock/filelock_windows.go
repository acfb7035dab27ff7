//go:build windows

package filelock

import (
	"os"

	"golang.org/x/sys/windows"
)

// Lock waits for an exclusive lock on the first byte of f; Windows releases
// it when the handle is closed or the process dies, like flock.
func Lock(f *os.File) error {
	return windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK, 0, 1, 0, &windows.Overlapped{})
}
