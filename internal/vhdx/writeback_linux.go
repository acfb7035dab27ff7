package vhdx

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback asks the kernel to start writing f's dirty pages to storage
// and returns without waiting (sync_file_range(2), SYNC_FILE_RANGE_WRITE over
// the whole file: pages already under writeback are left alone). It makes no
// promise of durability; a later fsync waits for what is still in flight.
func startWriteback(f file) error {
	osf, ok := f.(*os.File)
	if !ok {
		return nil
	}
	return unix.SyncFileRange(int(osf.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
}
