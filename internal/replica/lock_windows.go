//go:build windows

package replica

import (
	"errors"
	"os"

	"golang.org/x/sys/windows"
)

var errWouldBlock = errors.New("lock held")

// The locked byte lies far beyond the holder's description at the start of
// the file, so that the next writer can still read who holds it.
func lockRegion() *windows.Overlapped { return &windows.Overlapped{OffsetHigh: 1} }

func lockFile(f *os.File, exclusive bool) error {
	ol := lockRegion()
	flags := uint32(windows.LOCKFILE_FAIL_IMMEDIATELY)
	if exclusive {
		flags |= windows.LOCKFILE_EXCLUSIVE_LOCK
	}
	err := windows.LockFileEx(windows.Handle(f.Fd()), flags, 0, 1, 0, ol)
	if errors.Is(err, windows.ERROR_LOCK_VIOLATION) || errors.Is(err, windows.ERROR_IO_PENDING) {
		return errWouldBlock
	}
	return err
}

func unlockFile(f *os.File) {
	ol := lockRegion()
	windows.UnlockFileEx(windows.Handle(f.Fd()), 0, 1, 0, ol)
}

// noFollow: Windows needs an administrator to create symbolic links, and
// os.OpenFile has no such flag there.
const noFollow = 0
