package exclude

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"unicode/utf16"
)

// Bounds on the work one NTFS volume may cost; a volume that needs more is
// reported as an error (and the caller sends everything).
const (
	maxRecordReads   = 1 << 18 // MFT records read
	maxIndexBlocks   = 1 << 18 // directory index blocks read
	maxIndexEntries  = 1 << 22 // directory entries looked at
	maxAttrListBytes = 1 << 20 // an $ATTRIBUTE_LIST value
	maxFileRuns      = 1 << 20 // data runs of one file
	firstUserRecord  = 24      // records 0–23 are reserved for NTFS metadata
	maxVCN           = 1 << 62 // bytes; keeps VCN arithmetic far from overflow
	rootRecord       = 5
	ntfsBlockSize    = 512 // the update sequence stride of MFT and index records
)

// NTFS attribute types (MS-FSCC, the NTFS on-disk layout).
const (
	attrAttributeList  = 0x20
	attrFileName       = 0x30
	attrData           = 0x80
	attrIndexRoot      = 0x90
	attrIndexAlloc     = 0xA0
	attrEnd            = 0xFFFFFFFF
	recordInUse        = 0x1
	recordIsDirectory  = 0x2
	fileNameIsDir      = 0x10000000
	namespaceDOS       = 2
	indexEntrySubnode  = 0x1
	indexEntryLast     = 0x2
	referenceNumberMax = 1<<48 - 1
)

// errWorkBound reports a volume that would cost more than the bounds allow.
var errWorkBound = errors.New("work bound exceeded")

// dataRun is a run of clusters of a non-resident attribute; sparse runs have
// no clusters on disk.
type dataRun struct {
	vcn, lcn, count int64
	sparse          bool
}

// attribute is one attribute of a file, with the runs of all its extents
// when it is non-resident.
type attribute struct {
	typ         uint32
	name        string
	nonResident bool
	value       []byte // resident value
	lowVCN      int64
	dataSize    int64
	runs        []dataRun
}

// fileRecord is a base MFT record with the attributes of its extension
// records merged in.
type fileRecord struct {
	num   uint64
	seq   uint16
	flags uint16
	base  uint64 // the base record of an extension record, else 0
	attrs []attribute
}

// ntfsVolume reads one NTFS volume of a partition.
type ntfsVolume struct {
	ctx         context.Context
	d           *diskReader
	base        int64 // partition offset on the disk
	limit       int64 // bytes of the partition the volume may use
	clusterSize int64
	clusters    int64
	recordSize  int64
	mft         []dataRun
	mftBytes    int64
	meta        []dataRun // clusters that hold metadata, never excluded; sorted, merged
	dirsSeen    map[uint64]string
	records     int
	blocks      int
	entries     int
}

// analyzeNTFS finds the data runs of the page, swap and hibernation files and
// of the files matching patterns in the NTFS volume of partition p.
func analyzeNTFS(ctx context.Context, d *diskReader, p Partition, swap bool, patterns []pathPattern) ([]Range, error) {
	v, err := openNTFS(ctx, d, p)
	if err == nil {
		var rs []Range
		rs, err = v.exclusions(swap, patterns)
		if err == nil {
			return rs, nil
		}
	}
	return nil, fmt.Errorf("NTFS in partition %d at offset %d: %w", p.Index, p.Offset, err)
}

func openNTFS(ctx context.Context, d *diskReader, p Partition) (*ntfsVolume, error) {
	bs := make([]byte, 512)
	if err := d.readAt(bs, p.Offset); err != nil {
		return nil, fmt.Errorf("boot sector: %w", err)
	}
	le := binary.LittleEndian
	bps := int64(le.Uint16(bs[0x0B:]))
	if bps != 512 && bps != 1024 && bps != 2048 && bps != 4096 {
		return nil, fmt.Errorf("boot sector at offset %d: %d bytes per sector", p.Offset, bps)
	}
	var cs int64
	switch spc := bs[0x0D]; {
	case spc == 0:
		return nil, fmt.Errorf("boot sector at offset %d: 0 sectors per cluster", p.Offset)
	case spc <= 0x80:
		if spc&(spc-1) != 0 {
			return nil, fmt.Errorf("boot sector at offset %d: %d sectors per cluster", p.Offset, spc)
		}
		cs = bps * int64(spc)
	default:
		shift := 256 - int(spc)
		if shift > 12 {
			return nil, fmt.Errorf("boot sector at offset %d: sectors per cluster 2^%d", p.Offset, shift)
		}
		cs = bps << shift
	}
	if cs > 2<<20 {
		return nil, fmt.Errorf("boot sector at offset %d: cluster size %d", p.Offset, cs)
	}
	totalSectors := int64(le.Uint64(bs[0x28:]))
	if totalSectors <= 0 || totalSectors > p.Length/bps {
		// A volume longer than its partition is clamped to the partition.
		totalSectors = p.Length / bps
	}
	clusters := totalSectors * bps / cs
	mftLCN := int64(le.Uint64(bs[0x30:]))
	if mftLCN <= 0 || mftLCN >= clusters {
		return nil, fmt.Errorf("boot sector at offset %d: MFT at cluster %d, volume has %d clusters", p.Offset, mftLCN, clusters)
	}
	rs, err := recordBytes(int8(bs[0x40]), cs)
	if err != nil {
		return nil, fmt.Errorf("boot sector at offset %d: MFT record size: %w", p.Offset, err)
	}
	v := &ntfsVolume{
		ctx: ctx, d: d, base: p.Offset, limit: clusters * cs,
		clusterSize: cs, clusters: clusters, recordSize: rs,
	}
	if err := v.loadMFT(mftLCN); err != nil {
		return nil, err
	}
	return v, nil
}

// recordBytes decodes the clusters-per-record byte of the boot sector:
// positive counts clusters, negative n means 2^-n bytes.
func recordBytes(v int8, cs int64) (int64, error) {
	var n int64
	if v > 0 {
		n = int64(v) * cs
	} else {
		if v < -16 {
			return 0, fmt.Errorf("2^%d bytes", -int(v))
		}
		n = 1 << uint(-int(v))
	}
	if n < ntfsBlockSize || n > 1<<16 || n&(n-1) != 0 {
		return 0, fmt.Errorf("%d bytes", n)
	}
	return n, nil
}

// loadMFT reads record 0 ($MFT) where the boot sector says and learns the
// runs of the MFT's own $DATA, following its attribute list if it has one.
func (v *ntfsVolume) loadMFT(mftLCN int64) error {
	v.mft = []dataRun{{vcn: 0, lcn: mftLCN, count: (v.recordSize + v.clusterSize - 1) / v.clusterSize}}
	v.mftBytes = v.recordSize
	rec, err := v.readRecord(0)
	if err != nil {
		return err
	}
	var data *attribute
	for i := range rec.attrs {
		if a := &rec.attrs[i]; a.typ == attrData && a.name == "" && a.nonResident && a.lowVCN == 0 {
			data = a
		}
	}
	if data == nil {
		return fmt.Errorf("MFT record 0 at offset %d: no non-resident $DATA", v.base+mftLCN*v.clusterSize)
	}
	v.mft, v.mftBytes = data.runs, data.dataSize
	if err := v.checkMFTRuns(); err != nil {
		return err
	}
	// With an attribute list the MFT's runs may continue in extension
	// records; those are read with the runs known so far.
	f, err := v.readFile(0)
	if err != nil {
		return err
	}
	for _, a := range f.attrs {
		if a.typ == attrData && a.name == "" && a.nonResident {
			v.mft, v.mftBytes = a.runs, a.dataSize
		}
	}
	if err := v.checkMFTRuns(); err != nil {
		return err
	}
	var meta []dataRun
	for num := uint64(0); num < 16; num++ {
		f, err := v.readFile(num)
		if err != nil {
			if num >= 12 {
				continue // reserved records, which Windows leaves unformatted at times
			}
			return fmt.Errorf("metadata file: %w", err)
		}
		for _, a := range f.attrs {
			for _, r := range a.runs {
				if !r.sparse {
					meta = append(meta, r)
				}
			}
		}
	}
	// Sorted and merged, so that one binary search answers an overlap.
	sort.Slice(meta, func(i, j int) bool { return meta[i].lcn < meta[j].lcn })
	for _, r := range meta {
		if n := len(v.meta); n > 0 && r.lcn <= v.meta[n-1].lcn+v.meta[n-1].count {
			if end := r.lcn + r.count; end > v.meta[n-1].lcn+v.meta[n-1].count {
				v.meta[n-1].count = end - v.meta[n-1].lcn
			}
			continue
		}
		v.meta = append(v.meta, dataRun{lcn: r.lcn, count: r.count})
	}
	return nil
}

func (v *ntfsVolume) checkMFTRuns() error {
	if v.mftBytes < v.recordSize*16 {
		return fmt.Errorf("MFT of %d bytes: too small for the metadata records", v.mftBytes)
	}
	var mapped int64
	for _, r := range v.mft {
		if r.sparse {
			return fmt.Errorf("MFT has a sparse run at VCN %d", r.vcn)
		}
		mapped += r.count
	}
	if mapped*v.clusterSize < v.recordSize*16 {
		return fmt.Errorf("MFT runs map %d clusters: too few for the metadata records", mapped)
	}
	return nil
}

// exclusions lists the ranges of the files to exclude.
func (v *ntfsVolume) exclusions(swap bool, patterns []pathPattern) ([]Range, error) {
	var out []Range
	seen := map[uint64]bool{}
	add := func(num uint64, seq uint16, reason, path string) error {
		if seen[num] {
			return nil
		}
		seen[num] = true
		rs, err := v.fileRanges(num, seq, reason)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, rs...)
		return nil
	}
	if swap {
		want := map[string]string{"PAGEFILE.SYS": ReasonPagefile, "SWAPFILE.SYS": ReasonSwapfile, "HIBERFIL.SYS": ReasonHiberfil}
		type swapFile struct {
			dirEntry
			reason string
		}
		found := map[uint64]swapFile{}
		err := v.listDir(rootRecord, 0, func(e dirEntry) error {
			if reason, ok := want[string(foldName(e.name))]; ok && !e.isDir {
				found[e.num] = swapFile{e, reason}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("root directory: %w", err)
		}
		nums := make([]uint64, 0, len(found))
		for n := range found {
			nums = append(nums, n)
		}
		sort.Slice(nums, func(i, j int) bool { return nums[i] < nums[j] })
		for _, n := range nums {
			f := found[n]
			if err := add(n, f.seq, f.reason, fmt.Sprintf(`\%s (record %d)`, f.name, n)); err != nil {
				return nil, err
			}
		}
	}
	if len(patterns) > 0 {
		err := v.walk(rootRecord, 0, `\`, patterns, 0, func(e dirEntry, path string) error {
			return add(e.num, e.seq, ReasonPath, fmt.Sprintf("%s (record %d)", path, e.num))
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// walk lists directory num and follows the patterns active at depth: a name
// matching a pattern's last component is a file to exclude, one matching an
// earlier component is a directory to descend.
func (v *ntfsVolume) walk(num uint64, seq uint16, path string, patterns []pathPattern, depth int, file func(dirEntry, string) error) error {
	type child struct {
		dirEntry
		patterns []pathPattern
	}
	if first, ok := v.dirsSeen[num]; ok {
		return fmt.Errorf("directory %s (record %d) was already reached as %s: a loop or a hard-linked directory", path, num, first)
	}
	if v.dirsSeen == nil {
		v.dirsSeen = map[uint64]string{}
	}
	v.dirsSeen[num] = path
	var files []child
	var dirs []child
	dirIndex := map[uint64]int{}
	err := v.listDir(num, seq, func(e dirEntry) error {
		folded := foldName(e.name)
		var sub []pathPattern
		isFile := false
		for _, p := range patterns {
			if !matchComponent(p.parts[depth], folded) {
				continue
			}
			if depth == len(p.parts)-1 {
				isFile = !e.isDir
			} else if e.isDir {
				sub = append(sub, p)
			}
		}
		if isFile {
			files = append(files, child{dirEntry: e})
		}
		if len(sub) == 0 {
			return nil
		}
		// One directory listed under two names is walked once.
		if i, ok := dirIndex[e.num]; ok {
			for _, p := range sub {
				if !containsPattern(dirs[i].patterns, p.id) {
					dirs[i].patterns = append(dirs[i].patterns, p)
				}
			}
			return nil
		}
		dirIndex[e.num] = len(dirs)
		dirs = append(dirs, child{dirEntry: e, patterns: sub})
		return nil
	})
	if err != nil {
		return fmt.Errorf("directory %s (record %d): %w", path, num, err)
	}
	for _, f := range files {
		if err := file(f.dirEntry, path+f.name); err != nil {
			return err
		}
	}
	for _, c := range dirs {
		if err := v.walk(c.num, c.seq, path+c.name+`\`, c.patterns, depth+1, file); err != nil {
			return err
		}
	}
	return nil
}

func containsPattern(ps []pathPattern, id int) bool {
	for _, p := range ps {
		if p.id == id {
			return true
		}
	}
	return false
}

// fileRanges returns the disk byte ranges of the non-resident, non-sparse
// runs of the unnamed $DATA of file num. Metadata records, directories,
// records no longer in use or reused (sequence number other than seq, unless
// seq is 0), resident data and files smaller than a cluster yield nothing; a
// run that overlaps NTFS metadata is an error.
func (v *ntfsVolume) fileRanges(num uint64, seq uint16, reason string) ([]Range, error) {
	if num < firstUserRecord {
		return nil, nil
	}
	f, err := v.readFile(num)
	if err != nil {
		return nil, err
	}
	if f.flags&recordInUse == 0 || f.flags&recordIsDirectory != 0 || f.base != 0 || (seq != 0 && f.seq != seq) {
		return nil, nil
	}
	var out []Range
	for _, a := range f.attrs {
		// Resident data and files smaller than a cluster cost too little
		// to be worth a range.
		if a.typ != attrData || a.name != "" || !a.nonResident || a.dataSize < v.clusterSize {
			continue
		}
		for _, r := range a.runs {
			if r.sparse {
				continue
			}
			if m, ok := v.overlapsMeta(r); ok {
				return nil, fmt.Errorf("data run at cluster %d+%d (offset %d) overlaps NTFS metadata at cluster %d+%d", r.lcn, r.count, v.base+r.lcn*v.clusterSize, m.lcn, m.count)
			}
			out = append(out, Range{Offset: v.base + r.lcn*v.clusterSize, Length: r.count * v.clusterSize, Reason: reason})
		}
	}
	return out, nil
}

func (v *ntfsVolume) overlapsMeta(r dataRun) (dataRun, bool) {
	// v.meta is sorted and disjoint: only the last interval starting before
	// the run's end can reach into it.
	i := sort.Search(len(v.meta), func(i int) bool { return v.meta[i].lcn >= r.lcn+r.count })
	if i > 0 && v.meta[i-1].lcn+v.meta[i-1].count > r.lcn {
		return v.meta[i-1], true
	}
	return dataRun{}, false
}

// recordOffset is where record num starts on the disk (for error messages).
func (v *ntfsVolume) recordOffset(num uint64) int64 {
	off := int64(num) * v.recordSize
	vcn := off / v.clusterSize
	for _, r := range v.mft {
		if vcn >= r.vcn && vcn < r.vcn+r.count {
			return v.base + r.lcn*v.clusterSize + off - r.vcn*v.clusterSize
		}
	}
	return -1
}

// readRecord reads MFT record num, applies its update sequence and parses
// its attributes.
func (v *ntfsVolume) readRecord(num uint64) (*fileRecord, error) {
	if err := v.ctx.Err(); err != nil {
		return nil, err
	}
	if v.records >= maxRecordReads {
		return nil, fmt.Errorf("reading MFT record %d: %w (%d records)", num, errWorkBound, maxRecordReads)
	}
	v.records++
	if num > referenceNumberMax || int64(num) >= v.mftBytes/v.recordSize {
		return nil, fmt.Errorf("MFT record %d: past the end of the MFT (%d bytes)", num, v.mftBytes)
	}
	buf := make([]byte, v.recordSize)
	if err := v.readStream(v.mft, int64(num)*v.recordSize, buf, false); err != nil {
		return nil, fmt.Errorf("MFT record %d: %w", num, err)
	}
	at := v.recordOffset(num)
	if string(buf[0:4]) != "FILE" {
		return nil, fmt.Errorf("MFT record %d at offset %d: no FILE signature", num, at)
	}
	if err := applyFixups(buf); err != nil {
		return nil, fmt.Errorf("MFT record %d at offset %d: %w", num, at, err)
	}
	le := binary.LittleEndian
	rec := &fileRecord{num: num, seq: le.Uint16(buf[0x10:]), flags: le.Uint16(buf[0x16:]), base: baseReference(buf)}
	first := int(le.Uint16(buf[0x14:]))
	used := int(le.Uint32(buf[0x18:]))
	if used > len(buf) || used < first {
		used = len(buf)
	}
	attrs, err := v.parseAttributes(buf[:used], first)
	if err != nil {
		return nil, fmt.Errorf("MFT record %d at offset %d: %w", num, at, err)
	}
	rec.attrs = attrs
	return rec, nil
}

// baseReference is the base record a record extends (0 for a base record).
func baseReference(buf []byte) uint64 {
	return binary.LittleEndian.Uint64(buf[0x20:]) & referenceNumberMax
}

// applyFixups checks and undoes the update sequence of a multi-sector record:
// the last two bytes of every 512-byte block must hold the sequence number and
// are replaced with the saved bytes.
func applyFixups(buf []byte) error {
	le := binary.LittleEndian
	usaOff := int(le.Uint16(buf[4:]))
	usaCount := int(le.Uint16(buf[6:]))
	if usaCount != len(buf)/ntfsBlockSize+1 || usaOff < 8 || usaOff+2*usaCount > len(buf) {
		return fmt.Errorf("update sequence of %d entries at %d in a %d-byte record", usaCount, usaOff, len(buf))
	}
	usn := buf[usaOff : usaOff+2]
	for i := 1; i < usaCount; i++ {
		end := i * ntfsBlockSize
		if buf[end-2] != usn[0] || buf[end-1] != usn[1] {
			return fmt.Errorf("update sequence mismatch in block %d (torn write)", i-1)
		}
		copy(buf[end-2:end], buf[usaOff+2*i:usaOff+2*i+2])
	}
	return nil
}

// parseAttributes parses the attribute records of an MFT record from first.
func (v *ntfsVolume) parseAttributes(rec []byte, first int) ([]attribute, error) {
	le := binary.LittleEndian
	var out []attribute
	off := first
	for {
		if off < 0x18 || off+4 > len(rec) {
			return nil, fmt.Errorf("attribute at %d: outside the record", off)
		}
		typ := le.Uint32(rec[off:])
		if typ == attrEnd {
			return out, nil
		}
		if off+0x18 > len(rec) {
			return nil, fmt.Errorf("attribute 0x%x at %d: header outside the record", typ, off)
		}
		length := int(le.Uint32(rec[off+4:]))
		if length < 0x18 || length > len(rec)-off {
			return nil, fmt.Errorf("attribute 0x%x at %d: length %d", typ, off, length)
		}
		a := rec[off : off+length]
		at := attribute{typ: typ, nonResident: a[8] != 0}
		nameLen, nameOff := int(a[9]), int(le.Uint16(a[0x0A:]))
		if nameLen > 0 {
			if nameOff+2*nameLen > length {
				return nil, fmt.Errorf("attribute 0x%x at %d: name outside the attribute", typ, off)
			}
			at.name = decodeUTF16(a[nameOff : nameOff+2*nameLen])
		}
		if !at.nonResident {
			vlen, voff := int(le.Uint32(a[0x10:])), int(le.Uint16(a[0x14:]))
			if voff > length || vlen > length-voff {
				return nil, fmt.Errorf("attribute 0x%x at %d: resident value outside the attribute", typ, off)
			}
			at.value = a[voff : voff+vlen]
			at.dataSize = int64(vlen)
		} else {
			if length < 0x40 {
				return nil, fmt.Errorf("attribute 0x%x at %d: non-resident header of %d bytes", typ, off, length)
			}
			at.lowVCN = int64(le.Uint64(a[0x10:]))
			runOff := int(le.Uint16(a[0x20:]))
			at.dataSize = int64(le.Uint64(a[0x30:]))
			if at.lowVCN < 0 || at.lowVCN > maxVCN/v.clusterSize || at.dataSize < 0 || runOff > length {
				return nil, fmt.Errorf("attribute 0x%x at %d: bad non-resident header", typ, off)
			}
			runs, err := v.decodeRuns(a[runOff:], at.lowVCN)
			if err != nil {
				return nil, fmt.Errorf("attribute 0x%x at %d: %w", typ, off, err)
			}
			at.runs = runs
		}
		out = append(out, at)
		off += length
	}
}

// decodeRuns decodes a mapping pairs array: a header byte gives the sizes of
// a length and a signed LCN delta; no LCN bytes means a sparse run.
func (v *ntfsVolume) decodeRuns(b []byte, vcn int64) ([]dataRun, error) {
	var out []dataRun
	var lcn int64
	for i := 0; i < len(b); {
		h := b[i]
		if h == 0 {
			return out, nil
		}
		ln, lo := int(h&0x0F), int(h>>4)
		if ln == 0 || ln > 8 || lo > 8 || i+1+ln+lo > len(b) {
			return nil, fmt.Errorf("data run at byte %d: header 0x%02x", i, h)
		}
		count := signedLE(b[i+1 : i+1+ln])
		if count <= 0 || count > v.clusters {
			return nil, fmt.Errorf("data run at VCN %d: %d clusters", vcn, count)
		}
		r := dataRun{vcn: vcn, count: count, sparse: lo == 0}
		if lo > 0 {
			delta := signedLE(b[i+1+ln : i+1+ln+lo])
			lcn += delta
			if lcn < 0 || lcn >= v.clusters || count > v.clusters-lcn {
				return nil, fmt.Errorf("data run at VCN %d: clusters %d+%d outside the volume (%d clusters)", vcn, lcn, count, v.clusters)
			}
			r.lcn = lcn
		}
		out = append(out, r)
		if len(out) > maxFileRuns {
			return nil, fmt.Errorf("more than %d data runs: %w", maxFileRuns, errWorkBound)
		}
		vcn += count
		if vcn > maxVCN/v.clusterSize {
			return nil, fmt.Errorf("data run ends at VCN %d: past the largest file NTFS allows", vcn)
		}
		i += 1 + ln + lo
	}
	return out, nil
}

// signedLE decodes a little-endian two's complement integer of 1–8 bytes.
func signedLE(b []byte) int64 {
	var u uint64
	for i := len(b) - 1; i >= 0; i-- {
		u = u<<8 | uint64(b[i])
	}
	if n := uint(len(b)) * 8; n < 64 && b[len(b)-1]&0x80 != 0 {
		u |= ^uint64(0) << n
	}
	return int64(u)
}

func decodeUTF16(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}

// readStream reads len(buf) bytes at offset off of a non-resident attribute
// with runs. Sparse runs read as zeros when sparseOK, else they are an error.
func (v *ntfsVolume) readStream(runs []dataRun, off int64, buf []byte, sparseOK bool) error {
	cs := v.clusterSize
	for len(buf) > 0 {
		vcn := off / cs
		i := sort.Search(len(runs), func(i int) bool { return runs[i].vcn+runs[i].count > vcn })
		if i == len(runs) || runs[i].vcn > vcn {
			return fmt.Errorf("VCN %d is not mapped", vcn)
		}
		r := runs[i]
		within := off - r.vcn*cs
		n := r.count*cs - within
		if within < 0 || n <= 0 {
			return fmt.Errorf("VCN %d: overlapping data runs", vcn)
		}
		if n > int64(len(buf)) {
			n = int64(len(buf))
		}
		if r.sparse {
			if !sparseOK {
				return fmt.Errorf("VCN %d is sparse", vcn)
			}
			clear(buf[:n])
		} else {
			pos := r.lcn*cs + within
			if pos+n > v.limit {
				return fmt.Errorf("VCN %d at cluster %d: past the end of the volume", vcn, r.lcn)
			}
			if err := v.d.readAt(buf[:n], v.base+pos); err != nil {
				return err
			}
		}
		buf = buf[n:]
		off += n
	}
	return nil
}

// readFile reads base record num and merges in the attributes its attribute
// list places in extension records; extents of one non-resident attribute
// become one attribute whose runs are ordered by VCN.
func (v *ntfsVolume) readFile(num uint64) (*fileRecord, error) {
	rec, err := v.readRecord(num)
	if err != nil {
		return nil, err
	}
	var list *attribute
	for i := range rec.attrs {
		if rec.attrs[i].typ == attrAttributeList {
			list = &rec.attrs[i]
		}
	}
	if list == nil {
		return mergeExtents(rec), nil
	}
	value := list.value
	if list.nonResident {
		if list.dataSize > maxAttrListBytes {
			return nil, fmt.Errorf("MFT record %d: attribute list of %d bytes", num, list.dataSize)
		}
		value = make([]byte, list.dataSize)
		if err := v.readStream(list.runs, 0, value, false); err != nil {
			return nil, fmt.Errorf("MFT record %d: attribute list: %w", num, err)
		}
	}
	le := binary.LittleEndian
	extensions := map[uint64]bool{}
	var order []uint64
	for off := 0; off+0x1A <= len(value); {
		l := int(le.Uint16(value[off+4:]))
		if l < 0x1A || l > len(value)-off {
			return nil, fmt.Errorf("MFT record %d: attribute list entry at %d: length %d", num, off, l)
		}
		ref := le.Uint64(value[off+0x10:]) & referenceNumberMax
		if ref != num && !extensions[ref] {
			extensions[ref] = true
			order = append(order, ref)
		}
		off += l
	}
	attrs := rec.attrs[:0:0]
	for _, a := range rec.attrs {
		if a.typ != attrAttributeList {
			attrs = append(attrs, a)
		}
	}
	for _, ext := range order {
		if len(v.mft) > 0 && int64(ext) >= v.mftBytes/v.recordSize {
			return nil, fmt.Errorf("MFT record %d: attribute list names record %d past the end of the MFT", num, ext)
		}
		er, err := v.readRecord(ext)
		if err != nil {
			return nil, fmt.Errorf("MFT record %d: extension: %w", num, err)
		}
		if er.flags&recordInUse == 0 || er.base != num {
			return nil, fmt.Errorf("MFT record %d: extension record %d is not in use or belongs to record %d", num, ext, er.base)
		}
		attrs = append(attrs, er.attrs...)
	}
	rec.attrs = attrs
	return mergeExtents(rec), nil
}

// mergeExtents joins the extents of each non-resident attribute (same type
// and name) into one, runs ordered by VCN; the size comes from the extent at
// VCN 0.
func mergeExtents(rec *fileRecord) *fileRecord {
	type key struct {
		typ  uint32
		name string
	}
	idx := map[key]int{}
	var out []attribute
	for _, a := range rec.attrs {
		if !a.nonResident {
			out = append(out, a)
			continue
		}
		k := key{a.typ, a.name}
		i, ok := idx[k]
		if !ok {
			idx[k] = len(out)
			out = append(out, a)
			continue
		}
		m := &out[i]
		m.runs = append(m.runs, a.runs...)
		if a.lowVCN == 0 {
			m.dataSize = a.dataSize
		}
		if a.lowVCN < m.lowVCN {
			m.lowVCN = a.lowVCN
		}
	}
	for i := range out {
		if len(out[i].runs) > 1 {
			rs := out[i].runs
			sort.SliceStable(rs, func(a, b int) bool { return rs[a].vcn < rs[b].vcn })
		}
	}
	rec.attrs = out
	return rec
}

// dirEntry is a name in a directory index.
type dirEntry struct {
	num   uint64
	seq   uint16 // 0: unchecked
	name  string
	isDir bool
}

// listDir calls fn for every Win32 or POSIX name in directory num's $I30
// index, walking the B+ tree from its root. DOS 8.3 aliases and metadata
// records are skipped. A directory whose record is no longer in use or was
// reused (its sequence number differs from seq, unless seq is 0) lists
// nothing.
func (v *ntfsVolume) listDir(num uint64, seq uint16, fn func(dirEntry) error) error {
	f, err := v.readFile(num)
	if err != nil {
		return err
	}
	if f.flags&recordInUse == 0 || f.flags&recordIsDirectory == 0 || f.base != 0 || (seq != 0 && f.seq != seq) {
		return nil
	}
	var root, alloc *attribute
	for i := range f.attrs {
		a := &f.attrs[i]
		if a.name != "$I30" {
			continue
		}
		switch {
		case a.typ == attrIndexRoot && !a.nonResident:
			root = a
		case a.typ == attrIndexAlloc && a.nonResident:
			alloc = a
		}
	}
	if root == nil {
		return fmt.Errorf("no $I30 index root")
	}
	le := binary.LittleEndian
	if len(root.value) < 0x20 {
		return fmt.Errorf("index root of %d bytes", len(root.value))
	}
	blockSize := int64(le.Uint32(root.value[8:]))
	var vcnUnit int64 = ntfsBlockSize
	if blockSize >= v.clusterSize {
		vcnUnit = v.clusterSize
	}
	var pending []int64
	visit := func(node []byte, where string) error {
		if len(node) < 16 {
			return fmt.Errorf("%s: index node header outside the block", where)
		}
		start, end := int(le.Uint32(node[0:])), int(le.Uint32(node[4:]))
		if start < 16 || end > len(node) || start > end {
			return fmt.Errorf("%s: index entries %d–%d in a %d-byte node", where, start, end, len(node))
		}
		for off := start; off < end; {
			if off+0x10 > end {
				return fmt.Errorf("%s: index entry at %d: header outside the node", where, off)
			}
			e := node[off:end]
			elen, klen := int(le.Uint16(e[8:])), int(le.Uint16(e[10:]))
			flags := le.Uint16(e[12:])
			if elen < 0x10 || elen > len(e) || elen%8 != 0 {
				return fmt.Errorf("%s: index entry at %d: length %d", where, off, elen)
			}
			if flags&indexEntrySubnode != 0 {
				if elen < 0x18 {
					return fmt.Errorf("%s: index entry at %d: no room for a subnode", where, off)
				}
				pending = append(pending, int64(le.Uint64(e[elen-8:])))
			}
			if flags&indexEntryLast != 0 {
				return nil
			}
			v.entries++
			if v.entries > maxIndexEntries {
				return fmt.Errorf("%s: %w (%d index entries)", where, errWorkBound, maxIndexEntries)
			}
			if klen < 0x42 || 0x10+klen > elen {
				return fmt.Errorf("%s: index entry at %d: key of %d bytes", where, off, klen)
			}
			key := e[0x10 : 0x10+klen]
			nlen := int(key[0x40])
			if 0x42+2*nlen > klen {
				return fmt.Errorf("%s: index entry at %d: name outside the key", where, off)
			}
			ref := le.Uint64(e[0:])
			child := ref & referenceNumberMax
			// DOS 8.3 aliases repeat a Win32 name; metadata records are
			// never followed.
			if key[0x41] != namespaceDOS && child >= firstUserRecord {
				err := fn(dirEntry{
					num:   child,
					seq:   uint16(ref >> 48),
					name:  decodeUTF16(key[0x42 : 0x42+2*nlen]),
					isDir: le.Uint32(key[0x38:])&fileNameIsDir != 0,
				})
				if err != nil {
					return err
				}
			}
			off += elen
		}
		return fmt.Errorf("%s: index entries end without a last entry", where)
	}
	if err := visit(root.value[0x10:], "index root"); err != nil {
		return err
	}
	if len(pending) > 0 && alloc == nil {
		return fmt.Errorf("index root points to index blocks but there is no $I30 index allocation")
	}
	if len(pending) == 0 {
		return nil
	}
	if blockSize < ntfsBlockSize || blockSize > 1<<16 || blockSize&(blockSize-1) != 0 {
		return fmt.Errorf("index block size %d", blockSize)
	}
	seen := map[int64]bool{}
	buf := make([]byte, blockSize)
	for len(pending) > 0 {
		vcn := pending[len(pending)-1]
		pending = pending[:len(pending)-1]
		if seen[vcn] {
			return fmt.Errorf("index block at VCN %d is referenced twice (loop in the index)", vcn)
		}
		seen[vcn] = true
		if v.blocks >= maxIndexBlocks {
			return fmt.Errorf("index block at VCN %d: %w (%d index blocks)", vcn, errWorkBound, maxIndexBlocks)
		}
		v.blocks++
		if err := v.ctx.Err(); err != nil {
			return err
		}
		if vcn < 0 || vcn > alloc.dataSize/vcnUnit {
			return fmt.Errorf("index block at VCN %d: past the index allocation (%d bytes)", vcn, alloc.dataSize)
		}
		where := fmt.Sprintf("index block at VCN %d", vcn)
		if err := v.readStream(alloc.runs, vcn*vcnUnit, buf, false); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		if string(buf[0:4]) != "INDX" {
			return fmt.Errorf("%s: no INDX signature", where)
		}
		if err := applyFixups(buf); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		if got := int64(le.Uint64(buf[0x10:])); got != vcn {
			return fmt.Errorf("%s: block says it is VCN %d", where, got)
		}
		if err := visit(buf[0x18:], where); err != nil {
			return err
		}
	}
	return nil
}
