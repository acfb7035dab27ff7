// Package blockplan decides which blocks of one disk travel to the replica:
// the blocks touched by changed block tracking, the blocks a digest comparison
// must look at, or every allocated block. A plan is an iterator in ascending
// offset order, so that a disk of any size costs no memory beyond its extent
// lists; unallocated space is never read.
//
// Blocks form a fixed grid: block i covers [i*blockSize, (i+1)*blockSize),
// the last one cut short at the disk's size. The target keeps one digest per
// block of that grid.
package blockplan

import (
	"iter"
	"slices"

	"github.com/replicator/replicator/internal/digest"
	"github.com/replicator/replicator/internal/disk"
)

// Block is one block of the grid.
type Block struct {
	Index  int64 // Offset / block size
	Offset int64 // byte offset on the disk
	Length int64 // block size, or less for the last block
}

// End returns the first byte after the block.
func (b Block) End() int64 { return b.Offset + b.Length }

// Plan yields blocks in ascending offset order, each at most once.
type Plan = iter.Seq[Block]

// Full lists the blocks that touch an allocated extent: what a first copy
// onto an empty (all-zero) base disk must send. A block partly allocated is
// sent whole; the unallocated part reads as zeros.
func Full(size, blockSize int64, allocated []disk.Extent) Plan {
	return touching(size, blockSize, allocated)
}

// All lists every block of the disk: what must travel when the replica's
// content is unknown (a new base over an old chain, or digests recorded with
// another block size). The sender reads only the allocated part of each block
// and sends the rest as zero frames, which cost a few bytes each.
func All(size, blockSize int64) Plan {
	return touching(size, blockSize, []disk.Extent{{Offset: 0, Length: size}})
}

// Changed lists the blocks that touch a changed range (changed block
// tracking since the reference point of the replica's newest point).
//
// The allocated extents of the image deliberately do not narrow this plan: a
// range that changed and is no longer allocated (trimmed, unmapped, a
// differencing disk that discarded it) reads as zeros now, while the replica
// still holds the old, possibly non-zero bytes. Such blocks must travel, as
// zero frames, or the replica would keep stale data. The sender does not read
// unallocated space to find that out: it knows it is zero.
func Changed(size, blockSize int64, changed []disk.Extent) Plan {
	return touching(size, blockSize, changed)
}

// Digest lists the blocks a digest comparison must look at when there is no
// change tracking: every block that touches an allocated extent, plus every
// block that is unallocated on the source but whose digest on the replica
// (previous, indexed by block) is not that of zeros, since the replica must be
// zeroed there. The sender digests each listed block and sends only those whose
// digest differs from previous. Blocks beyond len(previous) count as zero on
// the replica.
func Digest(size, blockSize int64, allocated []disk.Extent, previous Sums) Plan {
	return func(yield func(Block) bool) {
		if size <= 0 || blockSize <= 0 {
			return
		}
		count := blockCount(size, blockSize)
		zeroFull := digest.Zero(int(min(blockSize, size)))
		zeroLast := digest.Zero(int(size - (count-1)*blockSize))
		// nonZeroBefore yields the blocks in [from, to) that are not zero on
		// the replica.
		known := int64(0)
		if previous != nil {
			known = previous.Len()
		}
		nonZeroBefore := func(from, to int64) bool {
			for i := from; i < to && i < known; i++ {
				zero := zeroFull
				if i == count-1 {
					zero = zeroLast
				}
				if previous.At(i) != zero && !yield(block(size, blockSize, i)) {
					return false
				}
			}
			return true
		}
		next := int64(0)
		for first, last := range blockRanges(size, blockSize, allocated) {
			if !nonZeroBefore(next, first) {
				return
			}
			for i := max(first, next); i <= last; i++ {
				if !yield(block(size, blockSize, i)) {
					return
				}
			}
			next = max(next, last+1)
		}
		nonZeroBefore(next, count)
	}
}

// Sums is the digest table of a replica's point, indexed by block. At is
// called with ascending indexes by a plan, and may be called concurrently.
type Sums interface {
	Len() int64
	At(i int64) digest.Sum
}

// SumSlice is a digest table held in memory.
type SumSlice []digest.Sum

func (s SumSlice) Len() int64            { return int64(len(s)) }
func (s SumSlice) At(i int64) digest.Sum { return s[i] }

// Count returns how many blocks and bytes a plan holds.
func Count(p Plan) (blocks, bytes int64) {
	for b := range p {
		blocks++
		bytes += b.Length
	}
	return blocks, bytes
}

// touching yields the blocks that touch any of the extents.
func touching(size, blockSize int64, extents []disk.Extent) Plan {
	return func(yield func(Block) bool) {
		next := int64(0)
		for first, last := range blockRanges(size, blockSize, extents) {
			for i := max(first, next); i <= last; i++ {
				if !yield(block(size, blockSize, i)) {
					return
				}
			}
			next = max(next, last+1)
		}
	}
}

// blockRanges yields, for each extent clipped to the disk in ascending order,
// the first and last index of the blocks it touches. Ranges may overlap;
// callers skip what they already yielded.
func blockRanges(size, blockSize int64, extents []disk.Extent) iter.Seq2[int64, int64] {
	return func(yield func(int64, int64) bool) {
		if size <= 0 || blockSize <= 0 {
			return
		}
		sorted := extents
		if !slices.IsSortedFunc(extents, byOffset) {
			sorted = slices.SortedFunc(slices.Values(extents), byOffset)
		}
		for _, e := range sorted {
			if e.Length <= 0 {
				continue
			}
			end := e.End()
			if end < e.Offset { // overflow: the extent runs past any disk
				end = size
			}
			start, end := max(e.Offset, 0), min(end, size)
			if end <= start {
				continue
			}
			if !yield(start/blockSize, (end-1)/blockSize) {
				return
			}
		}
	}
}

func byOffset(a, b disk.Extent) int {
	switch {
	case a.Offset < b.Offset:
		return -1
	case a.Offset > b.Offset:
		return 1
	}
	return 0
}

func blockCount(size, blockSize int64) int64 { return (size + blockSize - 1) / blockSize }

func block(size, blockSize, i int64) Block {
	off := i * blockSize
	return Block{Index: i, Offset: off, Length: min(blockSize, size-off)}
}
