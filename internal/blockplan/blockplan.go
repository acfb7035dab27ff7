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
	"math/bits"

	"github.com/replicator/replicator/internal/digest"
	"github.com/replicator/replicator/internal/disk"
)

// Block is one block of the grid.
type Block struct {
	Index  int64 // Offset / block size
	Offset int64 // byte offset on the disk
	Length int64 // block size, or less for the last block
	// Changed, when not zero, is the set of the block's parts that changed
	// (changed block tracking finer than the block); zero means the whole
	// block is to be considered.
	Changed Parts
}

// End returns the first byte after the block.
func (b Block) End() int64 { return b.Offset + b.Length }

// Parts is a set of the parts of one block: bit i stands for part i, the
// bytes [i*PartSize, (i+1)*PartSize) of the block (the last part cut short at
// the block's end). A block has at most 64 parts.
type Parts uint64

// PartSize is the size of a part of a block of blockSize bytes: a 64th of the
// block rounded up to 4 KiB, so that parts are whole sectors of any disk.
func PartSize(blockSize int64) int64 {
	const sector = 4096
	return max(sector, (blockSize/64+sector-1)/sector*sector)
}

// PartCount is how many parts a block of length bytes has.
func PartCount(length, partSize int64) int { return int((length + partSize - 1) / partSize) }

// AllParts returns the set of every part of a block of length bytes.
func AllParts(length, partSize int64) Parts {
	n := PartCount(length, partSize)
	if n >= 64 {
		return ^Parts(0)
	}
	return Parts(1)<<n - 1
}

// Count is the number of parts in the set.
func (p Parts) Count() int { return bits.OnesCount64(uint64(p)) }

// Has reports whether part i is in the set.
func (p Parts) Has(i int) bool { return i >= 0 && i < 64 && p&(1<<i) != 0 }

// Covering returns the set of the parts of a block [0, length) that the byte
// range [from, to) of the block touches.
func Covering(from, to, length, partSize int64) Parts {
	from, to = max(from, 0), min(to, length)
	if to <= from {
		return 0
	}
	first, last := from/partSize, (to-1)/partSize
	var p Parts
	for i := first; i <= last; i++ {
		p |= 1 << i
	}
	return p
}

// Bytes returns how many bytes of a block of length bytes the parts cover.
func (p Parts) Bytes(length, partSize int64) int64 {
	var n int64
	for i := range PartCount(length, partSize) {
		if p.Has(i) {
			n += min(partSize, length-int64(i)*partSize)
		}
	}
	return n
}

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
// tracking since the reference point of the replica's newest point). A block
// only partly changed carries the parts that changed (Block.Changed), so that
// a sender may send just those.
//
// The allocated extents of the image deliberately do not narrow this plan: a
// range that changed and is no longer allocated (trimmed, unmapped, a
// differencing disk that discarded it) reads as zeros now, while the replica
// still holds the old, possibly non-zero bytes. Such blocks must travel, as
// zero frames, or the replica would keep stale data. The sender does not read
// unallocated space to find that out: it knows it is zero.
func Changed(size, blockSize int64, changed []disk.Extent) Plan {
	return func(yield func(Block) bool) {
		partSize := PartSize(blockSize)
		var cur Block
		have := false
		flush := func() bool {
			if !have {
				return true
			}
			if cur.Changed == AllParts(cur.Length, partSize) {
				cur.Changed = 0
			}
			have = false
			return yield(cur)
		}
		for _, e := range clipped(size, blockSize, changed) {
			for i := e.Offset / blockSize; i <= (e.End()-1)/blockSize; i++ {
				if !have || cur.Index != i {
					if !flush() {
						return
					}
					cur, have = block(size, blockSize, i), true
				}
				cur.Changed |= Covering(e.Offset-cur.Offset, e.End()-cur.Offset, cur.Length, partSize)
			}
		}
		flush()
	}
}

// clipped returns the extents clipped to the disk, sorted and merged, so that
// the blocks they touch come in ascending order. With a zero size or block
// size there are none.
func clipped(size, blockSize int64, extents []disk.Extent) []disk.Extent {
	if size <= 0 || blockSize <= 0 {
		return nil
	}
	return disk.Merge(extents, size)
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

// blockRanges yields, for each extent clipped to the disk and merged with
// its neighbours, in ascending order, the first and last index of the blocks
// it touches. Consecutive ranges may share a block; callers skip what they
// already yielded.
func blockRanges(size, blockSize int64, extents []disk.Extent) iter.Seq2[int64, int64] {
	return func(yield func(int64, int64) bool) {
		for _, e := range clipped(size, blockSize, extents) {
			if !yield(e.Offset/blockSize, (e.End()-1)/blockSize) {
				return
			}
		}
	}
}

func blockCount(size, blockSize int64) int64 { return (size + blockSize - 1) / blockSize }

func block(size, blockSize, i int64) Block {
	off := i * blockSize
	return Block{Index: i, Offset: off, Length: min(blockSize, size-off)}
}
