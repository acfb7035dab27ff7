//go:build unix

package replica

import (
	"errors"
	"os"
	"syscall"
)

var errWouldBlock = errors.New("lock held")

func lockFile(f *os.File, exclusive bool) error {
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EWOULDBLOCK):
			return errWouldBlock
		default:
			return err
		}
	}
}

func unlockFile(f *os.File) { syscall.Flock(int(f.Fd()), syscall.LOCK_UN) }

// noFollow makes opening a file that is a symbolic link fail: files the
// replica writes in place (lock, digests) must be the replica's own, never a
// link planted to somewhere outside the datastore.
const noFollow = syscall.O_NOFOLLOW
