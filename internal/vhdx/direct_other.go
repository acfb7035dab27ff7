//go:build !linux

package vhdx

import "os"

// openDirect gives no direct file where direct I/O is not offered in a form
// this package uses: every write goes through the file system's cache.
func openDirect(string) *directFile { return nil }

type directFile struct {
	f        *os.File
	memAlign uintptr
}

func (*directFile) fits(int64, int64) bool { return false }

func (d *directFile) writeAt(b []byte, off int64) error {
	_, err := d.f.WriteAt(b, off)
	return err
}
