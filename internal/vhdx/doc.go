// Package vhdx reads and writes VHDX virtual disks as specified by MS-VHDX
// (the Microsoft open specification, v1.0): fixed, dynamic and differencing
// disks, chains of any depth, 512- and 4096-byte logical sectors, log replay,
// and merging a child into its parent.
//
// # Reading
//
// Open parses both headers (CRC-32C, the higher valid sequence number wins),
// replays an active log (in memory for a read-only open, into the file for a
// writable one), reads the region table, the metadata and the whole BAT, and
// checks that every allocated block lies inside the file and overlaps neither
// the headers, the log, the regions nor another block. Damaged input yields a
// *FormatError carrying the file offset of the structure at fault. The BAT
// stays in memory; a read takes one pread per run of blocks contiguous in the
// file, and sector bitmaps of partially present blocks are cached.
//
// # Writing and crash safety
//
// Metadata updates of payload writes do not go through the log; their safety
// comes from ordering with fsync instead:
//
//  1. On the first write of an open, the header copy that is not current gets
//     new FileWriteGuid and DataWriteGuid and the next sequence number, is
//     flushed, and then the other copy likewise. A torn header write leaves
//     the other copy valid.
//  2. A new block is placed at the end of the file (1 MiB aligned), the file
//     is extended, and the data is written there. Until the BAT points at it
//     the block is unreachable, so a crash merely leaves unused space.
//  3. Sync first flushes the file (data and length), then writes the sector
//     bitmap bytes of differencing disks and flushes again, then writes the
//     BAT pages holding changed entries and flushes a third time. A BAT entry
//     or a bitmap bit is therefore never durable before the bytes it makes
//     visible. Every changed 8-byte BAT entry lies within one sector, so a
//     torn BAT page write leaves each entry either old or new, and both are
//     consistent. A bitmap bit that is newly set only reveals data already
//     flushed; bits are only cleared in blocks whose BAT entry does not yet
//     point at them.
//  4. Overwrites of data in blocks already allocated go in place, as on a
//     physical disk: they are durable after Sync.
//
// Changes that rewrite metadata in place (SetParent) use the VHDX log, so
// that they are atomic for every reader that replays logs, Hyper-V included.
//
// Merge copies the sectors a child holds into its parent through the same
// writer; rerunning it after a crash copies the same bytes again, so it is
// idempotent. Merge only writes where the child holds data, so the disk read
// through the child is the same at every moment of a merge; but the parent's
// DataWriteGuid changes at its first write, so until the merge completes and
// the child's children are re-linked with SetParent, read that chain with
// OpenOptions.IgnoreParentLinkage.
//
// The crash tests replay every prefix of a run's writes and syncs, with any
// subset of the writes after the last sync, and check that the file opens
// and holds, per sector, either the synced or the newly written bytes.
package vhdx
