// Package disk defines what the data path reads and writes: a disk image is an
// io.ReaderAt with a size, a logical sector size and the list of its allocated
// byte ranges, so that unallocated space is never read. Raw files implement it
// here; VHDX files in package vhdx.
package disk

import (
	"cmp"
	"io"
	"slices"
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

// Merge returns the extents clipped to [0, size), sorted, with overlapping
// and adjacent ones joined and empty ones dropped: the form Allocated
// promises. An extent whose end overflows runs to size. in is not changed.
func Merge(in []Extent, size int64) []Extent {
	out := make([]Extent, 0, len(in))
	for _, e := range in {
		if e.Length <= 0 {
			continue
		}
		end := e.End()
		if end < e.Offset { // overflow: the extent runs past any disk
			end = size
		}
		start, end := max(e.Offset, 0), min(end, size)
		if end > start {
			out = append(out, Extent{Offset: start, Length: end - start})
		}
	}
	slices.SortFunc(out, func(a, b Extent) int { return cmp.Compare(a.Offset, b.Offset) })
	merged := out[:0]
	for _, e := range out {
		if n := len(merged); n > 0 && e.Offset <= merged[n-1].End() {
			merged[n-1].Length = max(merged[n-1].End(), e.End()) - merged[n-1].Offset
			continue
		}
		merged = append(merged, e)
	}
	return merged
}
