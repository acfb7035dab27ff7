// Package disk defines what the data path reads and writes: a disk image is an
// io.ReaderAt with a size, a logical sector size and the list of its allocated
// byte ranges, so that unallocated space is never read. Raw files implement it
// here; VHDX files in package vhdx.
package disk

import (
	"io"
)

// Extent is a byte range of a disk.
type Extent struct {
	Offset int64 `json:"offset"`
	Length int64 `json:"length"`
}

// End returns the first byte after the extent.
func (e Extent) End() int64 { return e.Offset + e.Length }

// Image is a readable virtual disk. ReadAt may be called concurrently; reads of
// unallocated space return zeros. Allocated returns sorted, non-overlapping,
// merged extents; bytes outside them read as zeros.
type Image interface {
	io.ReaderAt
	io.Closer
	// Size is the virtual size in bytes.
	Size() int64
	// SectorSize is the logical sector size in bytes (512 or 4096).
	SectorSize() int
	// Allocated lists the byte ranges that may hold non-zero data.
	Allocated() []Extent
}

// WritableImage is an image that can be written. Sync makes every completed
// WriteAt durable (data first, then the metadata that makes it visible).
type WritableImage interface {
	Image
	io.WriterAt
	Sync() error
}
