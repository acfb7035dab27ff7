package vhdx

import (
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/replicator/replicator/internal/atomicfile"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"github.com/replicator/replicator/internal/guid"
	"github.com/replicator/replicator/internal/zeros"
)

// CreateOptions describe a new VHDX.
type CreateOptions struct {
	// Size is the virtual size in bytes (a multiple of the logical sector
	// size). Ignored by CreateDifferencing, which takes the parent's.
	Size int64
	// BlockSize is the payload block size: a power of two from 1 MiB to
	// 256 MiB; 0 means 32 MiB for a base disk and 2 MiB for a differencing one.
	BlockSize uint32
	// LogicalSectorSize is 512 (default) or 4096.
	LogicalSectorSize uint32
	// PhysicalSectorSize is 4096 (default) or 512.
	PhysicalSectorSize uint32
}

const creator = "replicator"

// File layout of the disks this package creates: headers, then a 1 MiB log, a
// 1 MiB metadata region and the BAT; payload blocks follow as they are written.
const (
	createLogOffset  = 1 * mib
	createLogLength  = 1 * mib
	createMetaOffset = 2 * mib
	createMetaLength = 1 * mib
	createBATOffset  = 3 * mib
)

// Create makes a new dynamic VHDX and opens it read-write. It fails if path
// exists.
func Create(path string, o CreateOptions) (*Disk, error) {
	if o.BlockSize == 0 {
		o.BlockSize = defaultBaseBlockSize
	}
	if err := createFile(path, o, nil, guid.New()); err != nil {
		return nil, err
	}
	return OpenWith(path, OpenOptions{Writable: true})
}

// CreateDifferencing makes a new differencing VHDX whose parent is parentPath
// and opens it read-write with its chain. Virtual size and sector sizes come
// from the parent; the locator holds the relative and absolute paths of the
// parent and its DataWriteGuid.
func CreateDifferencing(path, parentPath string, o CreateOptions) (*Disk, error) {
	parent, err := Open(parentPath)
	if err != nil {
		return nil, fmt.Errorf("vhdx: create differencing %s: %w", path, err)
	}
	if o.Size != 0 && o.Size != parent.Size() {
		parent.Close()
		return nil, fmt.Errorf("vhdx: create differencing %s: size %d differs from parent's %d", path, o.Size, parent.Size())
	}
	o.Size = parent.Size()
	o.LogicalSectorSize = uint32(parent.SectorSize())
	o.PhysicalSectorSize = parent.physSector
	if o.BlockSize == 0 {
		o.BlockSize = defaultDiffBlockSize
	}
	loc, err := newLocator(path, parentPath, parent.DataWriteGUID())
	diskID := parent.diskID
	parent.Close()
	if err != nil {
		return nil, err
	}
	// The child presents the same virtual disk as its parent: it keeps the
	// parent's virtual disk ID (the SCSI page 83 identity the guest sees).
	if err := createFile(path, o, loc, diskID); err != nil {
		return nil, err
	}
	return OpenWith(path, OpenOptions{Writable: true})
}

// newLocator builds the parent locator of child pointing at parent.
func newLocator(childPath, parentPath string, linkage guid.GUID) (*parentLocator, error) {
	absChild, err := filepath.Abs(childPath)
	if err != nil {
		return nil, err
	}
	absParent, err := filepath.Abs(parentPath)
	if err != nil {
		return nil, err
	}
	rel, err := filepath.Rel(filepath.Dir(absChild), absParent)
	if err != nil {
		return nil, fmt.Errorf("vhdx: relative path from %s to %s: %w", childPath, parentPath, err)
	}
	if !strings.HasPrefix(rel, "..") {
		rel = "." + string(filepath.Separator) + rel
	}
	// Hyper-V reads Windows separators; this package reads both.
	rel = strings.ReplaceAll(rel, "/", `\`)
	abs := absParent
	if runtime.GOOS == "windows" {
		abs = strings.ReplaceAll(abs, "/", `\`)
	}
	return &parentLocator{
		Keys: []string{"parent_linkage", "relative_path", "absolute_win32_path"},
		Values: map[string]string{
			"parent_linkage":      "{" + linkage.String() + "}",
			"relative_path":       rel,
			"absolute_win32_path": abs,
		},
	}, nil
}

func validateCreate(o CreateOptions) error {
	if o.LogicalSectorSize == 0 {
		o.LogicalSectorSize = 512
	}
	if o.LogicalSectorSize != 512 && o.LogicalSectorSize != 4096 {
		return fmt.Errorf("logical sector size %d: want 512 or 4096", o.LogicalSectorSize)
	}
	if o.PhysicalSectorSize != 0 && o.PhysicalSectorSize != 512 && o.PhysicalSectorSize != 4096 {
		return fmt.Errorf("physical sector size %d: want 512 or 4096", o.PhysicalSectorSize)
	}
	bs := int64(o.BlockSize)
	if bs < minBlockSize || bs > maxBlockSize || bs&(bs-1) != 0 {
		return fmt.Errorf("block size %d: want a power of two from 1 MiB to 256 MiB", bs)
	}
	if o.Size <= 0 || o.Size > maxDiskSize || o.Size%int64(o.LogicalSectorSize) != 0 {
		return fmt.Errorf("size %d: want a multiple of %d up to 64 TiB", o.Size, o.LogicalSectorSize)
	}
	return nil
}

func createFile(path string, o CreateOptions, loc *parentLocator, id guid.GUID) (err error) {
	if err := validateCreate(o); err != nil {
		return fmt.Errorf("vhdx: create %s: %w", path, err)
	}
	if o.LogicalSectorSize == 0 {
		o.LogicalSectorSize = 512
	}
	if o.PhysicalSectorSize == 0 {
		o.PhysicalSectorSize = 4096
	}
	geo := newGeometry(int64(o.BlockSize), int64(o.LogicalSectorSize), o.Size, loc != nil)
	batLen := roundUp(geo.batEntries*8, mib)
	if batLen > 1<<32-mib {
		return fmt.Errorf("vhdx: create %s: BAT of %d bytes too large; use a larger block size", path, batLen)
	}
	le := binary.LittleEndian
	fp := make([]byte, 8)
	le.PutUint32(fp, o.BlockSize)
	if loc != nil {
		le.PutUint32(fp[4:], 2) // HasParent
	}
	vs := make([]byte, 8)
	le.PutUint64(vs, uint64(o.Size))
	ls := make([]byte, 4)
	le.PutUint32(ls, o.LogicalSectorSize)
	ps := make([]byte, 4)
	le.PutUint32(ps, o.PhysicalSectorSize)
	items := []metadataItem{
		{metadataEntry{ID: metaFileParameters, IsRequired: true}, fp},
		{metadataEntry{ID: metaVirtualDiskSize, IsRequired: true, IsVirtualDisk: true}, vs},
		{metadataEntry{ID: metaVirtualDiskID, IsRequired: true, IsVirtualDisk: true}, id[:]},
		{metadataEntry{ID: metaLogicalSectorSize, IsRequired: true, IsVirtualDisk: true}, ls},
		{metadataEntry{ID: metaPhysicalSectorSize, IsRequired: true, IsVirtualDisk: true}, ps},
	}
	if loc != nil {
		items = append(items, metadataItem{metadataEntry{ID: metaParentLocator, IsRequired: true}, marshalParentLocator(loc)})
	}
	meta, err := buildMetadataRegion(items, createMetaLength)
	if err != nil {
		return fmt.Errorf("vhdx: create %s: %w", path, err)
	}

	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("vhdx: create: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("vhdx: create %s: %w", path, cerr)
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	ident := make([]byte, 8, 8+2*len(creator))
	copy(ident, sigFile)
	ident = append(ident, utf16le(creator)...)
	h := header{FileWriteGUID: guid.New(), DataWriteGUID: guid.New(), Version: 1,
		LogLength: createLogLength, LogOffset: createLogOffset}
	h1, h2 := h, h
	h1.SequenceNumber, h2.SequenceNumber = 1, 2
	rt := marshalRegionTable([]region{
		{ID: regionBAT, Offset: createBATOffset, Length: batLen, Required: true},
		{ID: regionMetadata, Offset: createMetaOffset, Length: createMetaLength, Required: true},
	})
	writes := []struct {
		off int64
		b   []byte
	}{
		{fileIdentifierOffset, ident},
		{header1Offset, h1.marshal()},
		{header2Offset, h2.marshal()},
		{regionTable1Offset, rt},
		{regionTable2Offset, rt},
		{createMetaOffset, meta},
	}
	if err := f.Truncate(createBATOffset + batLen); err != nil {
		return fmt.Errorf("vhdx: create %s: %w", path, err)
	}
	for _, w := range writes {
		if _, err := f.WriteAt(w.b, w.off); err != nil {
			return fmt.Errorf("vhdx: create %s: write at offset %d: %w", path, w.off, err)
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("vhdx: create %s: sync: %w", path, err)
	}
	return atomicfile.SyncDir(filepath.Dir(path))
}

// writeHeaders updates the header: the copy that is not current is written
// first with the next sequence number and flushed, then the other, so that a
// valid header with either the old or the new content survives any crash.
func (d *Disk) writeHeaders(change func(h *header)) error {
	h := d.hdr
	change(&h)
	for i := 0; i < 2; i++ {
		slot := 1 - d.hdrSlot
		h.SequenceNumber = d.hdr.SequenceNumber + 1
		off := int64(header1Offset + slot*(header2Offset-header1Offset))
		if _, err := d.f.WriteAt(h.marshal(), off); err != nil {
			return fmt.Errorf("vhdx %s: write header at offset %d: %w", d.path, off, err)
		}
		if err := d.f.Sync(); err != nil {
			return fmt.Errorf("vhdx %s: sync header: %w", d.path, err)
		}
		d.hdr, d.hdrSlot = h, slot
	}
	return nil
}

// replayIntoFile applies the replayed log to the file, then clears the log.
func (d *Disk) replayIntoFile(ops []logOp, last int64) error {
	zeros := make([]byte, mib)
	for _, o := range ops {
		if o.data != nil {
			if _, err := d.f.WriteAt(o.data, o.off); err != nil {
				return fmt.Errorf("vhdx %s: log replay: write at offset %d: %w", d.path, o.off, err)
			}
			continue
		}
		for off := o.off; off < o.end(); off += mib {
			n := min(mib, o.end()-off)
			if _, err := d.f.WriteAt(zeros[:n], off); err != nil {
				return fmt.Errorf("vhdx %s: log replay: zero at offset %d: %w", d.path, off, err)
			}
		}
	}
	st, err := d.f.Stat()
	if err != nil {
		return err
	}
	if last > st.Size() {
		if err := d.f.Truncate(last); err != nil {
			return fmt.Errorf("vhdx %s: log replay: extend to %d: %w", d.path, last, err)
		}
	}
	if err := d.f.Sync(); err != nil {
		return fmt.Errorf("vhdx %s: log replay: sync: %w", d.path, err)
	}
	return d.writeHeaders(func(h *header) { h.LogGUID = guid.GUID{} })
}

// writeThroughLog makes page writes (4 KiB aligned) atomic with the VHDX log:
// the entry is written and flushed, the header names the log, the pages are
// written and flushed, and the header clears the log. A crash at any point
// leaves either the old bytes or a log that every reader replays.
func (d *Disk) writeThroughLog(pages []logOp) error {
	if !d.hdr.LogGUID.IsZero() {
		return fmt.Errorf("vhdx %s: log still active", d.path)
	}
	st, err := d.f.Stat()
	if err != nil {
		return err
	}
	lg := guid.New()
	entry := buildLogEntry(lg, 1, 0, st.Size(), pages)
	if int64(len(entry)) > int64(d.hdr.LogLength) {
		return fmt.Errorf("vhdx %s: log entry of %d bytes exceeds the log (%d)", d.path, len(entry), d.hdr.LogLength)
	}
	if _, err := d.f.WriteAt(entry, int64(d.hdr.LogOffset)); err != nil {
		return fmt.Errorf("vhdx %s: write log at offset %d: %w", d.path, d.hdr.LogOffset, err)
	}
	if err := d.f.Sync(); err != nil {
		return err
	}
	if err := d.writeHeaders(func(h *header) { h.LogGUID = lg; h.FileWriteGUID = guid.New() }); err != nil {
		return err
	}
	ops, _, last, err := replayLog(d.path, d.f, st.Size(), d.hdr)
	if err != nil {
		return err
	}
	if len(ops) != len(pages) {
		return fmt.Errorf("vhdx %s: log entry written but not readable back", d.path)
	}
	return d.replayIntoFile(ops, last)
}

// WriteAt writes virtual disk bytes, allocating blocks as needed. The new
// blocks become visible to other openers of the file only after Sync (or
// Close); reads through this Disk see them at once.
func (d *Disk) WriteAt(p []byte, off int64) (int, error) {
	if !d.writable {
		return 0, fmt.Errorf("vhdx %s: write: %w", d.path, errReadOnly)
	}
	if off < 0 || off > d.geo.virtualSize || int64(len(p)) > d.geo.virtualSize-off {
		return 0, fmt.Errorf("vhdx %s: write of %d bytes at %d outside the disk (%d bytes)", d.path, len(p), off, d.geo.virtualSize)
	}
	if len(p) == 0 {
		return 0, nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return 0, fmt.Errorf("vhdx %s: write: %w", d.path, os.ErrClosed)
	}
	if !d.headersNew {
		// Section 2.2.2: FileWriteGuid and DataWriteGuid change before the
		// first write of an open, so that children stop linking to this file.
		if err := d.writeHeaders(func(h *header) { h.FileWriteGUID, h.DataWriteGUID = guid.New(), guid.New() }); err != nil {
			return 0, err
		}
		d.headersNew = true
	}
	ss := d.geo.sectorSize
	if off%ss != 0 || int64(len(p))%ss != 0 {
		// Read-modify-write of the partial sectors at either end.
		start := off / ss * ss
		end := roundUp(off+int64(len(p)), ss)
		buf := make([]byte, end-start)
		if err := d.readLocked(buf[:ss], start); err != nil {
			return 0, err
		}
		if err := d.readLocked(buf[len(buf)-int(ss):], end-ss); err != nil {
			return 0, err
		}
		copy(buf[off-start:], p)
		if err := d.writeLocked(buf, start); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	if err := d.writeLocked(p, off); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (d *Disk) writeLocked(p []byte, off int64) error {
	g := d.geo
	for len(p) > 0 {
		block := off / g.blockSize
		in := off % g.blockSize
		n := min(int64(len(p)), g.blockSize-in)
		if err := d.writeBlock(block, in, p[:n]); err != nil {
			return err
		}
		p, off = p[n:], off+n
	}
	return nil
}

// writeBlock writes b at offset in of payload block `block`.
func (d *Disk) writeBlock(block, in int64, b []byte) error {
	g := d.geo
	idx := g.payloadIndex(block)
	e := d.bat[idx]
	st := entryState(e)
	switch st {
	case payloadFullyPresent:
		return d.writeData(b, entryOffset(e)+in)
	case payloadPartiallyPresent:
		if err := d.writeData(b, entryOffset(e)+in); err != nil {
			return err
		}
		if err := d.setBits(block, in, int64(len(b)), false); err != nil {
			return err
		}
		if d.blockComplete(block) {
			// Every sector is now in this file: reads need no bitmap.
			d.bat[idx] = batEntry(payloadFullyPresent, entryOffset(e))
			d.batDirty[idx] = struct{}{}
		}
		return nil
	}
	// The block is not in the file. Without a parent it reads as zeros, and
	// a zero block reads as zeros: writing zeros there changes nothing.
	if (st == payloadZero || !d.hasParent) && zeros.All(b) {
		return nil
	}
	fileOff, err := d.allocate(g.blockSize)
	if err != nil {
		return err
	}
	if err := d.writeData(b, fileOff+in); err != nil {
		return err
	}
	whole := in == 0 && int64(len(b)) == min(g.blockSize, g.virtualSize-block*g.blockSize)
	newState := uint64(payloadFullyPresent)
	if d.hasParent && st != payloadZero && !whole {
		// The rest of the block still comes from the parent.
		newState = payloadPartiallyPresent
		if err := d.setBits(block, in, int64(len(b)), true); err != nil {
			return err
		}
	}
	d.bat[idx] = batEntry(newState, fileOff)
	d.batDirty[idx] = struct{}{}
	return nil
}

// writeData writes payload bytes: behind, when the file has a write-behind
// and b fits it, else through the page cache once everything written
// behind is in the file (the newer bytes land last).
func (d *Disk) writeData(b []byte, off int64) error {
	if d.behind != nil {
		ok, err := d.behind.write(b, off)
		if err == nil && !ok {
			err = d.behind.drain()
		}
		if err != nil {
			return fmt.Errorf("vhdx %s: %w", d.path, err)
		}
		if ok {
			return nil
		}
	}
	return d.writeFile(b, off)
}

func (d *Disk) writeFile(b []byte, off int64) error {
	if _, err := d.f.WriteAt(b, off); err != nil {
		return fmt.Errorf("vhdx %s: write at offset %d: %w", d.path, off, err)
	}
	return nil
}

// allocate reserves n bytes (rounded to 1 MiB) at the end of the file. The
// file is extended now, so the space reads as zeros.
func (d *Disk) allocate(n int64) (int64, error) {
	off := d.fileEnd
	end := off + roundUp(n, mib)
	if err := d.f.Truncate(end); err != nil {
		return 0, fmt.Errorf("vhdx %s: extend file to %d: %w", d.path, end, err)
	}
	d.fileEnd = end
	d.view.size = end
	return off, nil
}

// setBits marks sectors [in, in+n) of block present in the sector bitmap
// (held in memory until Sync). fresh clears the block's bits first.
func (d *Disk) setBits(block, in, n int64, fresh bool) error {
	g := d.geo
	chunk := block / g.chunkRatio
	sbIdx := g.bitmapIndex(chunk)
	if entryState(d.bat[sbIdx]) != sbBlockPresent {
		off, err := d.allocate(mib)
		if err != nil {
			return err
		}
		d.bat[sbIdx] = batEntry(sbBlockPresent, off)
		d.batDirty[sbIdx] = struct{}{}
		// A new bitmap block is all zero: drop cached bits of its blocks.
		d.bitmapMu.Lock()
		for b := chunk * g.chunkRatio; b < (chunk+1)*g.chunkRatio; b++ {
			if _, ok := d.bitmaps[b]; ok && b != block {
				delete(d.bitmaps, b)
			}
		}
		d.bitmapMu.Unlock()
	}
	bm, err := d.blockBitmap(block)
	if err != nil {
		return err
	}
	if fresh {
		clear(bm)
	}
	for s := in / g.sectorSize; s < (in+n)/g.sectorSize; s++ {
		bm[s>>3] |= 1 << (s & 7)
	}
	d.bmDirty[block] = struct{}{}
	return nil
}

// blockComplete reports whether the bitmap marks every sector of the block
// (up to the end of the disk) present.
func (d *Disk) blockComplete(block int64) bool {
	g := d.geo
	bm := d.bitmaps[block]
	sectors := min(g.blockSize, g.virtualSize-block*g.blockSize) / g.sectorSize
	full := sectors / 8
	for _, c := range bm[:full] {
		if c != 0xff {
			return false
		}
	}
	for s := full * 8; s < sectors; s++ {
		if !bitSet(bm, s) {
			return false
		}
	}
	return true
}

// StartWriteback starts writing what was written so far to storage without
// waiting for it (on Linux; elsewhere it does nothing). It makes nothing
// durable: Sync must still follow, and finds less left to write, so that a
// writer calling it as data arrives keeps the storage busy all along instead
// of in bursts at each Sync.
func (d *Disk) StartWriteback() error {
	return d.flush(func() error {
		if err := startWriteback(d.f); err != nil {
			return fmt.Errorf("vhdx %s: start writeback: %w", d.path, err)
		}
		return nil
	})
}

// Sync makes completed writes durable, in the order that keeps the file
// consistent at every step (see the package documentation).
func (d *Disk) Sync() error { return d.flush(d.syncLocked) }

// flush runs f with d.mu held, unless there is nothing to flush: the disk
// was opened read-only or is closed (Close syncs what was written).
func (d *Disk) flush(f func() error) error {
	if !d.writable {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	return f()
}

// syncLocked is Sync with d.mu held.
func (d *Disk) syncLocked() error {
	if d.behind != nil {
		if err := d.behind.drain(); err != nil {
			return fmt.Errorf("vhdx %s: sync data: %w", d.path, err)
		}
	}
	if err := d.f.Sync(); err != nil {
		return fmt.Errorf("vhdx %s: sync data: %w", d.path, err)
	}
	if len(d.bmDirty) > 0 {
		g := d.geo
		n := g.blockBitmapBytes()
		blocks := make([]int64, 0, len(d.bmDirty))
		for b := range d.bmDirty {
			blocks = append(blocks, b)
		}
		sort.Slice(blocks, func(i, j int) bool { return blocks[i] < blocks[j] })
		for _, b := range blocks {
			sb := d.bat[g.bitmapIndex(b/g.chunkRatio)]
			off := entryOffset(sb) + (b%g.chunkRatio)*n
			if err := d.writeFile(d.bitmaps[b], off); err != nil {
				return err
			}
		}
		if err := d.f.Sync(); err != nil {
			return fmt.Errorf("vhdx %s: sync sector bitmaps: %w", d.path, err)
		}
		clear(d.bmDirty)
	}
	if len(d.batDirty) > 0 {
		// Write each 4 KiB page of the BAT holding a changed entry.
		const perPage = logSector / 8
		pages := map[int64]struct{}{}
		for i := range d.batDirty {
			pages[i/perPage] = struct{}{}
		}
		buf := make([]byte, logSector)
		for pg := range pages {
			first := pg * perPage
			last := min(first+perPage, int64(len(d.bat)))
			b := buf[:8*(last-first)]
			for i := first; i < last; i++ {
				binary.LittleEndian.PutUint64(b[8*(i-first):], d.bat[i])
			}
			if err := d.writeFile(b, d.batRegion.Offset+8*first); err != nil {
				return err
			}
		}
		if err := d.f.Sync(); err != nil {
			return fmt.Errorf("vhdx %s: sync BAT: %w", d.path, err)
		}
		clear(d.batDirty)
	}
	return nil
}

// errReadOnly is returned by writes to a disk opened read-only.
var errReadOnly = errors.New("opened read-only")
