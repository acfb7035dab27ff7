package vhdx

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/replicator/replicator/internal/disk"
	"github.com/replicator/replicator/internal/guid"
)

// OpenOptions tune OpenWith.
type OpenOptions struct {
	// Writable opens the file for writing (its parents stay read-only).
	Writable bool
	// Parents is the explicit chain from the leaf's parent to the base; it
	// overrides the parent locators. Past its end, locators are used again.
	Parents []string
	// IgnoreParentLinkage accepts a parent whose DataWriteGuid differs from
	// the child's parent_linkage.
	IgnoreParentLinkage bool
	// NoParent reads only this file's own data: sectors the file does not hold
	// read as zeros. For merge and recovery.
	NoParent bool
	// DirectWrites (with Writable) sends payload writes to storage by direct
	// I/O, behind the writer, where the file system offers direct I/O: for
	// a file written in long runs and seldom read back soon, such as a
	// replica, whose bytes would otherwise fill the page cache and cost a
	// copy into it. Reads, metadata and Sync are unchanged (see
	// writeBehind). The first such file of a process adds one to GOMAXPROCS
	// (see spareProc).
	DirectWrites bool
}

// maxChainDepth bounds a differencing chain (each layer holds a descriptor).
const maxChainDepth = 1024

// Disk is an open VHDX file, with its parent chain resolved.
type Disk struct {
	path     string
	f        file
	view     *fileView
	writable bool
	// behind writes payload data by direct I/O without waiting for it
	// (files opened with DirectWrites on file systems that offer direct I/O); nil
	// otherwise. Everything else, and every read, goes through f.
	behind *writeBehind

	hdr     header
	hdrSlot int // 0 or 1: which header copy is current

	regions      []region
	batRegion    region
	metaRegion   region
	metaItems    []metadataItem
	leaveAlloc   bool
	hasParent    bool
	physSector   uint32
	diskID       guid.GUID
	locator      *parentLocator
	geo          geometry
	parent       *Disk
	noParentData bool // child opened without its parent: absent sectors read as zero

	mu         sync.RWMutex
	bat        []uint64
	batDirty   map[int64]struct{}
	bitmapMu   sync.Mutex
	bitmaps    map[int64][]byte // per payload block: its share of the sector bitmap
	bmDirty    map[int64]struct{}
	fileEnd    int64
	headersNew bool // the GUIDs were changed for this open's writes
	closed     bool
}

var (
	_ disk.Image         = (*Disk)(nil)
	_ disk.WritableImage = (*Disk)(nil)
)

// Open opens a VHDX read-only, with its whole parent chain.
func Open(path string) (*Disk, error) { return OpenWith(path, OpenOptions{}) }

// OpenWith opens a VHDX with options.
func OpenWith(path string, o OpenOptions) (*Disk, error) {
	d, err := openChain(path, o, nil)
	if err != nil {
		return nil, err
	}
	if o.Writable && o.DirectWrites {
		if dio := openDirect(path); dio != nil {
			d.behind = newWriteBehind(dio, d.f)
		}
	}
	return d, nil
}

func openChain(path string, o OpenOptions, seen []os.FileInfo) (*Disk, error) {
	d, err := openFile(path, o.Writable)
	if err != nil {
		return nil, err
	}
	st, err := d.f.Stat()
	if err != nil {
		d.f.Close()
		return nil, fmt.Errorf("vhdx %s: stat: %w", path, err)
	}
	for _, s := range seen {
		if os.SameFile(s, st) {
			d.f.Close()
			return nil, &FormatError{Path: path, Offset: 0, Msg: "parent chain loops back to this file"}
		}
	}
	if len(seen) >= maxChainDepth {
		d.f.Close()
		return nil, &FormatError{Path: path, Msg: fmt.Sprintf("parent chain deeper than %d", maxChainDepth)}
	}
	if !d.hasParent {
		return d, nil
	}
	if o.NoParent {
		d.noParentData = true
		return d, nil
	}
	seen = append(seen, st)
	var candidates []string
	next := OpenOptions{IgnoreParentLinkage: o.IgnoreParentLinkage}
	if len(o.Parents) > 0 {
		candidates = []string{o.Parents[0]}
		next.Parents = o.Parents[1:]
	} else {
		candidates = d.parentCandidates()
		if len(candidates) == 0 {
			d.f.Close()
			return nil, formatErr(path, d.metaRegion.Offset, "differencing disk has no usable parent path in its locator")
		}
	}
	var errs []error
	for _, c := range candidates {
		if _, err := os.Stat(c); err != nil {
			errs = append(errs, fmt.Errorf("parent %s: %w", c, err))
			continue
		}
		p, err := openChain(c, next, seen)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := d.checkParent(p, o.IgnoreParentLinkage); err != nil {
			p.Close()
			errs = append(errs, err)
			continue
		}
		d.parent = p
		return d, nil
	}
	d.f.Close()
	return nil, fmt.Errorf("vhdx %s: no usable parent: %w", path, errors.Join(errs...))
}

// parentCandidates lists the parent paths of the locator, relative first.
func (d *Disk) parentCandidates() []string {
	var out []string
	dir := filepath.Dir(d.path)
	conv := func(s string) string {
		if runtime.GOOS != "windows" {
			s = strings.ReplaceAll(s, `\`, "/")
		}
		return s
	}
	if rel := d.locator.get("relative_path"); rel != "" {
		r := conv(rel)
		if !filepath.IsAbs(r) {
			r = filepath.Join(dir, r)
		}
		out = append(out, r)
	}
	for _, k := range []string{"absolute_win32_path", "volume_path"} {
		if a := d.locator.get(k); a != "" {
			a = conv(a)
			if filepath.IsAbs(a) {
				out = append(out, a)
			}
		}
	}
	return out
}

func (d *Disk) checkParent(p *Disk, ignoreLinkage bool) error {
	if p.geo.virtualSize != d.geo.virtualSize {
		return formatErr(d.path, d.metaRegion.Offset, "parent %s has virtual size %d, child %d", p.path, p.geo.virtualSize, d.geo.virtualSize)
	}
	if p.geo.sectorSize != d.geo.sectorSize {
		return formatErr(d.path, d.metaRegion.Offset, "parent %s has logical sector size %d, child %d", p.path, p.geo.sectorSize, d.geo.sectorSize)
	}
	if ignoreLinkage {
		return nil
	}
	want := p.hdr.DataWriteGUID
	for _, k := range []string{"parent_linkage", "parent_linkage2"} {
		if v := d.locator.get(k); v != "" {
			if g, err := guid.Parse(v); err == nil && g == want {
				return nil
			}
		}
	}
	return formatErr(d.path, d.metaRegion.Offset, "parent %s does not match: its DataWriteGuid is {%v}, the child links to %s",
		p.path, want, d.locator.get("parent_linkage"))
}

// openFile opens and parses one VHDX file, without its parent.
func openFile(path string, writable bool) (*Disk, error) {
	flag := os.O_RDONLY
	if writable {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("vhdx: open: %w", err)
	}
	return openOn(path, f, writable)
}

// file is what a Disk needs of its file; *os.File in use, a fault-injecting
// fake in crash tests.
type file interface {
	io.ReaderAt
	io.WriterAt
	io.Closer
	Sync() error
	Truncate(size int64) error
	Stat() (os.FileInfo, error)
}

// openOn parses an open file; it closes f on error.
func openOn(path string, f file, writable bool) (*Disk, error) {
	d := &Disk{path: path, f: f, writable: writable}
	if err := d.parse(); err != nil {
		f.Close()
		return nil, err
	}
	return d, nil
}

func (d *Disk) fail(off int64, format string, args ...any) error {
	return formatErr(d.path, off, format, args...)
}

func (d *Disk) readFull(r io.ReaderAt, off int64, n int64, what string) ([]byte, error) {
	b := make([]byte, n)
	if _, err := r.ReadAt(b, off); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, d.fail(off, "%s (%d bytes) extends past end of file", what, n)
		}
		return nil, fmt.Errorf("vhdx %s: read %s at offset %d: %w", d.path, what, off, err)
	}
	return b, nil
}

func (d *Disk) parse() error {
	st, err := d.f.Stat()
	if err != nil {
		return fmt.Errorf("vhdx %s: stat: %w", d.path, err)
	}
	size := st.Size()
	if size < mib {
		return d.fail(0, "file of %d bytes is too small for a VHDX", size)
	}
	id, err := d.readFull(d.f, fileIdentifierOffset, 8, "file identifier")
	if err != nil {
		return err
	}
	if string(id) != sigFile {
		return d.fail(0, "not a VHDX file: signature %q, want %q", id, sigFile)
	}
	if err := d.readHeaders(); err != nil {
		return err
	}
	d.view = &fileView{f: d.f, size: size}
	if !d.hdr.LogGUID.IsZero() {
		ops, _, last, err := replayLog(d.path, d.f, size, d.hdr)
		if err != nil {
			return err
		}
		if d.writable {
			if err := d.replayIntoFile(ops, last); err != nil {
				return err
			}
			st, err := d.f.Stat()
			if err != nil {
				return err
			}
			d.view.size = st.Size()
		} else {
			d.view.ops = ops
			d.view.size = max(size, last)
		}
	}
	if err := d.readRegions(); err != nil {
		return err
	}
	if err := d.readMetadata(); err != nil {
		return err
	}
	if err := d.readBAT(); err != nil {
		return err
	}
	d.fileEnd = roundUp(d.view.size, mib)
	d.bitmaps = map[int64][]byte{}
	d.bmDirty = map[int64]struct{}{}
	d.batDirty = map[int64]struct{}{}
	return nil
}

func (d *Disk) readHeaders() error {
	var hs [2]header
	var ok [2]bool
	var msgs [2]string
	for i, off := range []int64{header1Offset, header2Offset} {
		b, err := d.readFull(d.f, off, headerSize, "header")
		if err != nil {
			return err
		}
		hs[i], msgs[i] = parseHeader(b)
		ok[i] = msgs[i] == ""
	}
	switch {
	case ok[0] && ok[1]:
		d.hdrSlot = 0
		if hs[1].SequenceNumber > hs[0].SequenceNumber {
			d.hdrSlot = 1
		}
	case ok[0]:
		d.hdrSlot = 0
	case ok[1]:
		d.hdrSlot = 1
	default:
		return d.fail(header1Offset, "no valid header: %s; at offset %d: %s", msgs[0], header2Offset, msgs[1])
	}
	d.hdr = hs[d.hdrSlot]
	off := int64(header1Offset + d.hdrSlot*(header2Offset-header1Offset))
	if d.hdr.Version != 1 {
		return d.fail(off, "header version %d unsupported", d.hdr.Version)
	}
	if d.hdr.LogVersion != 0 {
		return d.fail(off, "log version %d unsupported", d.hdr.LogVersion)
	}
	if d.hdr.LogOffset%mib != 0 || d.hdr.LogLength%mib != 0 || d.hdr.LogOffset < mib || d.hdr.LogOffset > maxFileOffset {
		return d.fail(off, "log region offset %d length %d invalid", d.hdr.LogOffset, d.hdr.LogLength)
	}
	return nil
}

func (d *Disk) readRegions() error {
	var msgs []string
	var regions []region
	found := false
	for _, off := range []int64{regionTable1Offset, regionTable2Offset} {
		b, err := d.readFull(d.view, off, regionTableSize, "region table")
		if err != nil {
			return err
		}
		r, msg := parseRegionTable(b)
		if msg != "" {
			msgs = append(msgs, fmt.Sprintf("at offset %d: %s", off, msg))
			continue
		}
		regions, found = r, true
		break
	}
	if !found {
		return d.fail(regionTable1Offset, "no valid region table: %s", strings.Join(msgs, "; "))
	}
	d.regions = regions
	var haveBAT, haveMeta bool
	// Everything in the file that must not overlap, to check the regions and
	// later the blocks against.
	used := []span{{0, mib, "headers"}, {int64(d.hdr.LogOffset), int64(d.hdr.LogOffset) + int64(d.hdr.LogLength), "log"}}
	for _, r := range regions {
		if r.Offset%mib != 0 || r.Offset < mib || r.Length == 0 || r.Length%mib != 0 {
			return d.fail(regionTable1Offset, "region %v offset %d length %d invalid", r.ID, r.Offset, r.Length)
		}
		switch r.ID {
		case regionBAT:
			if haveBAT {
				return d.fail(regionTable1Offset, "BAT region listed twice")
			}
			haveBAT, d.batRegion = true, r
		case regionMetadata:
			if haveMeta {
				return d.fail(regionTable1Offset, "metadata region listed twice")
			}
			haveMeta, d.metaRegion = true, r
		default:
			if r.Required {
				return d.fail(regionTable1Offset, "unknown required region %v", r.ID)
			}
		}
		used = append(used, span{r.Offset, r.Offset + r.Length, "region " + r.ID.String()})
		if r.Offset+r.Length > d.view.size {
			return d.fail(r.Offset, "region %v (length %d) extends past end of file (%d bytes)", r.ID, r.Length, d.view.size)
		}
	}
	if !haveBAT || !haveMeta {
		return d.fail(regionTable1Offset, "region table lacks the BAT or metadata region")
	}
	if err := d.checkOverlaps(used); err != nil {
		return err
	}
	return nil
}

type span struct {
	start, end int64
	what       string
}

func (d *Disk) checkOverlaps(spans []span) error {
	sort.Slice(spans, func(i, j int) bool { return spans[i].start < spans[j].start })
	for i := 1; i < len(spans); i++ {
		if spans[i].start < spans[i-1].end {
			return d.fail(spans[i].start, "%s overlaps %s (at %d)", spans[i].what, spans[i-1].what, spans[i-1].start)
		}
	}
	return nil
}

func (d *Disk) readMetadata() error {
	mo := d.metaRegion.Offset
	if d.metaRegion.Length < metadataTableSize {
		return d.fail(mo, "metadata region length %d is smaller than its table", d.metaRegion.Length)
	}
	tbl, err := d.readFull(d.view, mo, metadataTableSize, "metadata table")
	if err != nil {
		return err
	}
	le := binary.LittleEndian
	if string(tbl[0:8]) != sigMetadata {
		return d.fail(mo, "bad metadata table signature %q", tbl[0:8])
	}
	n := int(le.Uint16(tbl[10:]))
	if n > maxMetadataEntries {
		return d.fail(mo, "metadata entry count %d exceeds %d", n, maxMetadataEntries)
	}
	items := map[guid.GUID][]byte{}
	total := int64(0)
	for i := 0; i < n; i++ {
		e := tbl[32+32*i:]
		eoff := mo + 32 + 32*int64(i)
		var m metadataEntry
		copy(m.ID[:], e[0:16])
		m.Offset, m.Length = le.Uint32(e[16:]), le.Uint32(e[20:])
		fl := le.Uint32(e[24:])
		m.IsUser, m.IsVirtualDisk, m.IsRequired = fl&1 != 0, fl&2 != 0, fl&4 != 0
		if _, dup := items[m.ID]; dup {
			return d.fail(eoff, "metadata item %v listed twice", m.ID)
		}
		if m.Length > maxMetadataItem {
			return d.fail(eoff, "metadata item %v length %d exceeds %d", m.ID, m.Length, maxMetadataItem)
		}
		if m.Length > 0 && (int64(m.Offset) < metadataTableSize || int64(m.Offset)+int64(m.Length) > d.metaRegion.Length) {
			return d.fail(eoff, "metadata item %v at %d (length %d) lies outside the metadata region", m.ID, m.Offset, m.Length)
		}
		known := false
		for _, k := range []guid.GUID{metaFileParameters, metaVirtualDiskSize, metaVirtualDiskID, metaLogicalSectorSize, metaPhysicalSectorSize, metaParentLocator} {
			known = known || k == m.ID
		}
		if !known && m.IsRequired {
			return d.fail(eoff, "unknown required metadata item %v", m.ID)
		}
		if total += int64(m.Length); total > maxMetadataTotal {
			return d.fail(eoff, "metadata items exceed %d bytes in total", maxMetadataTotal)
		}
		b, err := d.readFull(d.view, mo+int64(m.Offset), int64(m.Length), "metadata item "+m.ID.String())
		if err != nil {
			return err
		}
		items[m.ID] = b
		d.metaItems = append(d.metaItems, metadataItem{entry: m, data: b})
	}
	need := func(id guid.GUID, n int, what string) ([]byte, error) {
		b, ok := items[id]
		if !ok {
			return nil, d.fail(mo, "metadata item %s missing", what)
		}
		if len(b) < n {
			return nil, d.fail(mo, "metadata item %s is %d bytes, want %d", what, len(b), n)
		}
		return b, nil
	}
	fp, err := need(metaFileParameters, 8, "file parameters")
	if err != nil {
		return err
	}
	blockSize := int64(le.Uint32(fp[0:]))
	flags := le.Uint32(fp[4:])
	d.leaveAlloc, d.hasParent = flags&1 != 0, flags&2 != 0
	if blockSize < minBlockSize || blockSize > maxBlockSize || blockSize&(blockSize-1) != 0 {
		return d.fail(mo, "block size %d invalid (power of two from 1 MiB to 256 MiB)", blockSize)
	}
	vs, err := need(metaVirtualDiskSize, 8, "virtual disk size")
	if err != nil {
		return err
	}
	virtualSize := le.Uint64(vs)
	ls, err := need(metaLogicalSectorSize, 4, "logical sector size")
	if err != nil {
		return err
	}
	sector := int64(le.Uint32(ls))
	if sector != 512 && sector != 4096 {
		return d.fail(mo, "logical sector size %d invalid", sector)
	}
	ps, err := need(metaPhysicalSectorSize, 4, "physical sector size")
	if err != nil {
		return err
	}
	d.physSector = le.Uint32(ps)
	if d.physSector != 512 && d.physSector != 4096 {
		return d.fail(mo, "physical sector size %d invalid", d.physSector)
	}
	if id, ok := items[metaVirtualDiskID]; ok && len(id) >= 16 {
		copy(d.diskID[:], id)
	}
	if virtualSize == 0 || virtualSize > maxDiskSize || virtualSize%uint64(sector) != 0 {
		return d.fail(mo, "virtual disk size %d invalid (a multiple of %d up to 64 TiB)", virtualSize, sector)
	}
	if d.hasParent {
		pl, err := need(metaParentLocator, 20, "parent locator")
		if err != nil {
			return err
		}
		loc, msg := parseParentLocator(pl)
		if msg != "" {
			return d.fail(mo, "%s", msg)
		}
		d.locator = loc
	}
	d.geo = newGeometry(blockSize, sector, int64(virtualSize), d.hasParent)
	return nil
}

func (d *Disk) readBAT() error {
	g := d.geo
	bo := d.batRegion.Offset
	if g.batEntries*8 > d.batRegion.Length {
		return d.fail(bo, "BAT region of %d bytes holds fewer than the %d entries a %d-byte disk needs", d.batRegion.Length, g.batEntries, g.virtualSize)
	}
	raw, err := d.readFull(d.view, bo, g.batEntries*8, "BAT")
	if err != nil {
		return err
	}
	d.bat = make([]uint64, g.batEntries)
	for i := range d.bat {
		d.bat[i] = binary.LittleEndian.Uint64(raw[8*i:])
	}
	spans := []span{{0, mib, "headers"}, {int64(d.hdr.LogOffset), int64(d.hdr.LogOffset) + int64(d.hdr.LogLength), "log"}}
	for _, r := range d.regions {
		spans = append(spans, span{r.Offset, r.Offset + r.Length, "region " + r.ID.String()})
	}
	for i, e := range d.bat {
		idx := int64(i)
		eoff := bo + 8*idx
		st, off := entryState(e), entryOffset(e)
		if (idx+1)%(g.chunkRatio+1) == 0 { // sector bitmap entry
			switch st {
			case sbBlockNotPresent:
			case sbBlockPresent:
				if off+mib > d.view.size {
					return d.fail(eoff, "sector bitmap block at %d extends past end of file (%d)", off, d.view.size)
				}
				spans = append(spans, span{off, off + mib, fmt.Sprintf("sector bitmap block (BAT entry %d)", i)})
			default:
				return d.fail(eoff, "sector bitmap BAT entry %d has invalid state %d", i, st)
			}
			continue
		}
		switch st {
		case payloadNotPresent, payloadUndefined, payloadZero, payloadUnmapped:
		case payloadFullyPresent, payloadPartiallyPresent:
			if st == payloadPartiallyPresent && !d.hasParent {
				return d.fail(eoff, "BAT entry %d is partially present in a disk without parent", i)
			}
			if st == payloadPartiallyPresent {
				block := idx - idx/(g.chunkRatio+1)
				if entryState(d.bat[g.bitmapIndex(block/g.chunkRatio)]) != sbBlockPresent {
					return d.fail(eoff, "BAT entry %d is partially present but its chunk has no sector bitmap block", i)
				}
			}
			if off < mib {
				return d.fail(eoff, "BAT entry %d points into the headers (offset %d)", i, off)
			}
			block := idx - idx/(g.chunkRatio+1)
			need := min(g.blockSize, g.virtualSize-block*g.blockSize)
			if off > d.view.size || need > d.view.size-off {
				return d.fail(eoff, "BAT entry %d: block at %d extends past end of file (%d)", i, off, d.view.size)
			}
			spans = append(spans, span{off, off + min(g.blockSize, roundUp(need, mib)), fmt.Sprintf("payload block %d (BAT entry %d)", block, i)})
		default:
			return d.fail(eoff, "BAT entry %d has invalid state %d", i, st)
		}
	}
	return d.checkOverlaps(spans)
}

// Path returns the file name the disk was opened with.
func (d *Disk) Path() string { return d.path }

// Parent returns the parent disk, or nil.
func (d *Disk) Parent() *Disk { return d.parent }

// BlockSize returns the payload block size in bytes.
func (d *Disk) BlockSize() uint32 { return uint32(d.geo.blockSize) }

// Size returns the virtual size in bytes.
func (d *Disk) Size() int64 { return d.geo.virtualSize }

// SectorSize returns the logical sector size.
func (d *Disk) SectorSize() int { return int(d.geo.sectorSize) }

// PhysicalSectorSize returns the physical sector size.
func (d *Disk) PhysicalSectorSize() int { return int(d.physSector) }

// HasParent reports whether the file is a differencing disk.
func (d *Disk) HasParent() bool { return d.hasParent }

// DataWriteGUID returns the header's DataWriteGuid (what children link to).
func (d *Disk) DataWriteGUID() [16]byte {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.hdr.DataWriteGUID
}

// ParentLocator returns the parent locator's key/value pairs (nil without parent).
func (d *Disk) ParentLocator() map[string]string {
	if d.locator == nil {
		return nil
	}
	m := map[string]string{}
	for k, v := range d.locator.Values {
		m[k] = v
	}
	return m
}

// Close closes the file and its parents, syncing pending writes first.
func (d *Disk) Close() error {
	var errs []error
	if d.writable {
		if err := d.Sync(); err != nil {
			errs = append(errs, err)
		}
	}
	d.mu.Lock()
	if !d.closed {
		d.closed = true
		if d.behind != nil {
			// Sync above waited for every write behind (or failed, and
			// then the data is not durable: the error says so). Drained
			// before either descriptor closes: a chunk the file system
			// refused by direct I/O is written through f.
			if err := d.behind.drain(); err != nil {
				errs = append(errs, fmt.Errorf("vhdx %s: %w", d.path, err))
			}
			if err := d.behind.direct.f.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if err := d.f.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	d.mu.Unlock()
	if d.parent != nil {
		if err := d.parent.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ReadAt reads virtual disk bytes. Safe for concurrent use.
func (d *Disk) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("vhdx %s: read at negative offset %d", d.path, off)
	}
	if off >= d.geo.virtualSize {
		return 0, io.EOF
	}
	want := len(p)
	if int64(len(p)) > d.geo.virtualSize-off {
		p = p[:d.geo.virtualSize-off]
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return 0, fmt.Errorf("vhdx %s: read: %w", d.path, os.ErrClosed)
	}
	if err := d.readLocked(p, off); err != nil {
		return 0, err
	}
	if len(p) < want {
		return len(p), io.EOF
	}
	return len(p), nil
}

// readLocked fills p from off (within the virtual size); d.mu is held.
func (d *Disk) readLocked(p []byte, off int64) error {
	if d.behind != nil {
		// Reads go through the page cache: what is still being written
		// behind it must be in the file first.
		if err := d.behind.drain(); err != nil {
			return fmt.Errorf("vhdx %s: %w", d.path, err)
		}
	}
	g := d.geo
	for len(p) > 0 {
		block := off / g.blockSize
		in := off % g.blockSize
		n := min(int64(len(p)), g.blockSize-in)
		e := d.bat[g.payloadIndex(block)]
		switch entryState(e) {
		case payloadFullyPresent:
			// Extend over following blocks that are contiguous in the file,
			// so that sequential reads take one pread.
			fo := entryOffset(e) + in
			for n < int64(len(p)) {
				nb := block + (in+n)/g.blockSize
				ne := d.bat[g.payloadIndex(nb)]
				if entryState(ne) != payloadFullyPresent || entryOffset(ne) != fo+n {
					break
				}
				n = min(int64(len(p)), n+g.blockSize)
			}
			if err := d.readFile(p[:n], fo); err != nil {
				return err
			}
		case payloadPartiallyPresent:
			if err := d.readPartial(p[:n], block, in, entryOffset(e)); err != nil {
				return err
			}
		case payloadZero:
			clear(p[:n])
		default: // not present, undefined, unmapped
			if err := d.readParent(p[:n], off); err != nil {
				return err
			}
		}
		p, off = p[n:], off+n
	}
	return nil
}

func (d *Disk) readParent(p []byte, off int64) error {
	if d.parent == nil {
		clear(p)
		return nil
	}
	_, err := d.parent.ReadAt(p, off)
	if err != nil && !(err == io.EOF) {
		return err
	}
	return nil
}

func (d *Disk) readFile(p []byte, off int64) error {
	if _, err := d.view.ReadAt(p, off); err != nil {
		if errors.Is(err, io.EOF) {
			return d.fail(off, "data (%d bytes) extends past end of file", len(p))
		}
		return fmt.Errorf("vhdx %s: read at offset %d: %w", d.path, off, err)
	}
	return nil
}

// readPartial reads a partially present block: sectors whose bitmap bit is
// set come from this file, the others from the parent.
func (d *Disk) readPartial(p []byte, block, in, fileOff int64) error {
	bm, err := d.blockBitmap(block)
	if err != nil {
		return err
	}
	ss := d.geo.sectorSize
	base := block * d.geo.blockSize
	s := in / ss
	end := (in + int64(len(p)) + ss - 1) / ss
	for s < end {
		present := bitSet(bm, s)
		r := s + 1
		for r < end && bitSet(bm, r) == present {
			r++
		}
		lo, hi := max(s*ss, in), min(r*ss, in+int64(len(p)))
		dst := p[lo-in : hi-in]
		if present {
			if err := d.readFile(dst, fileOff+lo); err != nil {
				return err
			}
		} else if err := d.readParent(dst, base+lo); err != nil {
			return err
		}
		s = r
	}
	return nil
}

func bitSet(bm []byte, i int64) bool { return bm[i>>3]&(1<<(i&7)) != 0 }

// blockBitmap returns the sector bitmap bits of one payload block (cached).
func (d *Disk) blockBitmap(block int64) ([]byte, error) {
	d.bitmapMu.Lock()
	defer d.bitmapMu.Unlock()
	if bm, ok := d.bitmaps[block]; ok {
		return bm, nil
	}
	g := d.geo
	chunk := block / g.chunkRatio
	sbIdx := g.bitmapIndex(chunk)
	n := g.blockBitmapBytes()
	if sbIdx < int64(len(d.bat)) && entryState(d.bat[sbIdx]) == sbBlockPresent {
		// Read the chunk's whole share of the sector bitmap block at once and
		// cache it for every block of the chunk not cached yet.
		first := chunk * g.chunkRatio
		count := min(g.chunkRatio, g.dataBlocks-first)
		all := make([]byte, count*n)
		if err := d.readFile(all, entryOffset(d.bat[sbIdx])); err != nil {
			return nil, err
		}
		for j := int64(0); j < count; j++ {
			if _, ok := d.bitmaps[first+j]; !ok {
				d.bitmaps[first+j] = all[j*n : (j+1)*n : (j+1)*n]
			}
		}
		return d.bitmaps[block], nil
	}
	if entryState(d.bat[g.payloadIndex(block)]) == payloadPartiallyPresent {
		return nil, d.fail(d.batRegion.Offset+8*sbIdx, "block %d is partially present but its sector bitmap block is not", block)
	}
	bm := make([]byte, n)
	d.bitmaps[block] = bm
	return bm, nil
}

// Allocated lists the byte ranges any layer of the chain holds.
func (d *Disk) Allocated() []disk.Extent {
	var all []disk.Extent
	for l := d; l != nil; l = l.parent {
		all = append(all, l.OwnAllocated()...)
	}
	return disk.Merge(all, d.geo.virtualSize)
}

// OwnAllocated lists the byte ranges this file itself defines: allocated
// blocks, and in a differencing disk the sectors whose bitmap bit is set and
// the blocks marked zero (which hide the parent's data). Where a sector bitmap
// cannot be read, the whole block is listed.
func (d *Disk) OwnAllocated() []disk.Extent {
	ext, _ := d.ownExtents(false)
	return ext
}

func (d *Disk) ownExtents(strict bool) ([]disk.Extent, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	g := d.geo
	var out []disk.Extent
	add := func(off, n int64) {
		if off >= g.virtualSize {
			return
		}
		n = min(n, g.virtualSize-off)
		if k := len(out); k > 0 && out[k-1].End() == off {
			out[k-1].Length += n
			return
		}
		out = append(out, disk.Extent{Offset: off, Length: n})
	}
	for b := int64(0); b < g.dataBlocks; b++ {
		base := b * g.blockSize
		switch entryState(d.bat[g.payloadIndex(b)]) {
		case payloadFullyPresent:
			add(base, g.blockSize)
		case payloadZero:
			if d.hasParent {
				add(base, g.blockSize)
			}
		case payloadPartiallyPresent:
			bm, err := d.blockBitmap(b)
			if err != nil {
				if strict {
					return nil, err
				}
				add(base, g.blockSize)
				continue
			}
			sectors := g.blockSize / g.sectorSize
			for s := int64(0); s < sectors; {
				if !bitSet(bm, s) {
					s++
					continue
				}
				r := s + 1
				for r < sectors && bitSet(bm, r) {
					r++
				}
				add(base+s*g.sectorSize, (r-s)*g.sectorSize)
				s = r
			}
		}
	}
	return out, nil
}
