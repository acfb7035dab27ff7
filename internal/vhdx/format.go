package vhdx

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"unicode/utf16"

	"github.com/replicator/replicator/internal/guid"
)

// Layout constants of MS-VHDX (sections 2.1–2.6).
const (
	kib = 1 << 10
	mib = 1 << 20

	fileIdentifierOffset = 0
	header1Offset        = 64 * kib
	header2Offset        = 128 * kib
	regionTable1Offset   = 192 * kib
	regionTable2Offset   = 256 * kib
	headerSize           = 4 * kib  // bytes covered by a header's checksum
	regionTableSize      = 64 * kib // bytes covered by a region table's checksum
	metadataTableSize    = 64 * kib

	maxRegionEntries   = 2047
	maxMetadataEntries = 2047
	maxMetadataItem    = 1 * mib // section 2.6.1.2: Length MUST be <= 1 MB
	maxMetadataTotal   = 16 * mib

	minBlockSize  = 1 * mib
	maxBlockSize  = 256 * mib
	maxDiskSize   = 64 << 40 // 64 TiB, section 2.6.2.2
	sectorsPerMap = 1 << 23  // sectors described by one 1 MiB sector bitmap block

	// maxLogLength bounds the log read into memory for replay.
	maxLogLength = 256 * mib
	// maxFileOffset bounds offsets taken from the log (LastFileOffset etc.).
	maxFileOffset = 2 * maxDiskSize

	defaultBaseBlockSize = 32 * mib
	defaultDiffBlockSize = 2 * mib
)

// BAT entry states (section 2.5.1).
const (
	payloadNotPresent       = 0
	payloadUndefined        = 1
	payloadZero             = 2
	payloadUnmapped         = 3
	payloadFullyPresent     = 6
	payloadPartiallyPresent = 7

	sbBlockNotPresent = 0
	sbBlockPresent    = 6

	batStateMask   = 7
	batOffsetShift = 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc32c(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// seal stores in bytes 4 to 8 of b the CRC-32C of b computed with those
// bytes zero: the checksum of a header, a region table and a log entry
// (MS-VHDX sections 2.2.2, 2.2.3 and 2.3.1.1).
func seal(b []byte) {
	binary.LittleEndian.PutUint32(b[4:], 0)
	binary.LittleEndian.PutUint32(b[4:], crc32c(b))
}

// sealed reports whether bytes 4 to 8 of b hold the checksum seal stores.
func sealed(b []byte) bool {
	crc := crc32.Update(0, castagnoli, b[:4])
	crc = crc32.Update(crc, castagnoli, []byte{0, 0, 0, 0})
	return crc32.Update(crc, castagnoli, b[8:]) == binary.LittleEndian.Uint32(b[4:])
}

// Well-known GUIDs of MS-VHDX sections 2.3.1.1 and 2.6.2.
var (
	regionBAT      = guid.MustParse("2DC27766-F623-4200-9D64-115E9BFD4A08")
	regionMetadata = guid.MustParse("8B7CA206-4790-4B9A-B8FE-575F050F886E")

	metaFileParameters     = guid.MustParse("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
	metaVirtualDiskSize    = guid.MustParse("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
	metaVirtualDiskID      = guid.MustParse("BECA12AB-B2E6-4523-93EF-C309E000C746")
	metaLogicalSectorSize  = guid.MustParse("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
	metaPhysicalSectorSize = guid.MustParse("CDA348C7-445D-4471-9CC9-E9885251C556")
	metaParentLocator      = guid.MustParse("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")

	parentLocatorTypeVHDX = guid.MustParse("B04AEFB7-D19E-4A81-B789-25B8E9445913")
)

// Signatures.
const (
	sigFile     = "vhdxfile"
	sigHeader   = "head"
	sigRegion   = "regi"
	sigMetadata = "metadata"
	sigLogEntry = "loge"
	sigZeroDesc = "zero"
	sigDataDesc = "desc"
	sigDataSect = "data"
)

// FormatError reports damaged or unsupported input, with the file offset of
// the structure at fault.
type FormatError struct {
	Path   string
	Offset int64
	Msg    string
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("vhdx %s: offset %d: %s", e.Path, e.Offset, e.Msg)
}

func formatErr(path string, off int64, format string, args ...any) error {
	return &FormatError{Path: path, Offset: off, Msg: fmt.Sprintf(format, args...)}
}

// header is the VHDX header (section 2.2.2).
type header struct {
	SequenceNumber uint64
	FileWriteGUID  guid.GUID
	DataWriteGUID  guid.GUID
	LogGUID        guid.GUID
	LogVersion     uint16
	Version        uint16
	LogLength      uint32
	LogOffset      uint64
}

func (h *header) marshal() []byte {
	b := make([]byte, headerSize)
	copy(b[0:4], sigHeader)
	le := binary.LittleEndian
	le.PutUint64(b[8:], h.SequenceNumber)
	copy(b[16:32], h.FileWriteGUID[:])
	copy(b[32:48], h.DataWriteGUID[:])
	copy(b[48:64], h.LogGUID[:])
	le.PutUint16(b[64:], h.LogVersion)
	le.PutUint16(b[66:], h.Version)
	le.PutUint32(b[68:], h.LogLength)
	le.PutUint64(b[72:], h.LogOffset)
	seal(b)
	return b
}

// parseHeader checks signature and checksum; b is headerSize bytes.
func parseHeader(b []byte) (header, string) {
	var h header
	if string(b[0:4]) != sigHeader {
		return h, "bad header signature"
	}
	le := binary.LittleEndian
	if !sealed(b) {
		return h, "header checksum mismatch"
	}
	h.SequenceNumber = le.Uint64(b[8:])
	copy(h.FileWriteGUID[:], b[16:32])
	copy(h.DataWriteGUID[:], b[32:48])
	copy(h.LogGUID[:], b[48:64])
	h.LogVersion = le.Uint16(b[64:])
	h.Version = le.Uint16(b[66:])
	h.LogLength = le.Uint32(b[68:])
	h.LogOffset = le.Uint64(b[72:])
	return h, ""
}

// region is one region table entry (section 2.3.1.2).
type region struct {
	ID       guid.GUID
	Offset   int64
	Length   int64
	Required bool
}

func marshalRegionTable(regions []region) []byte {
	b := make([]byte, regionTableSize)
	le := binary.LittleEndian
	copy(b[0:4], sigRegion)
	le.PutUint32(b[8:], uint32(len(regions)))
	for i, r := range regions {
		e := b[16+32*i:]
		copy(e[0:16], r.ID[:])
		le.PutUint64(e[16:], uint64(r.Offset))
		le.PutUint32(e[24:], uint32(r.Length))
		if r.Required {
			le.PutUint32(e[28:], 1)
		}
	}
	seal(b)
	return b
}

func parseRegionTable(b []byte) ([]region, string) {
	le := binary.LittleEndian
	if string(b[0:4]) != sigRegion {
		return nil, "bad region table signature"
	}
	if !sealed(b) {
		return nil, "region table checksum mismatch"
	}
	n := le.Uint32(b[8:])
	if n > maxRegionEntries {
		return nil, fmt.Sprintf("region table entry count %d exceeds %d", n, maxRegionEntries)
	}
	out := make([]region, 0, n)
	for i := 0; i < int(n); i++ {
		e := b[16+32*i:]
		var r region
		copy(r.ID[:], e[0:16])
		r.Offset = int64(le.Uint64(e[16:]))
		r.Length = int64(le.Uint32(e[24:]))
		r.Required = le.Uint32(e[28:])&1 != 0
		if le.Uint64(e[16:]) > maxFileOffset {
			return nil, fmt.Sprintf("region %v offset %d is absurd", r.ID, le.Uint64(e[16:]))
		}
		out = append(out, r)
	}
	return out, ""
}

// metadataEntry is one metadata table entry (section 2.6.1.2).
type metadataEntry struct {
	ID            guid.GUID
	Offset        uint32 // relative to the metadata region
	Length        uint32
	IsUser        bool
	IsVirtualDisk bool
	IsRequired    bool
}

func marshalMetadataTable(entries []metadataEntry) []byte {
	b := make([]byte, metadataTableSize)
	le := binary.LittleEndian
	copy(b[0:8], sigMetadata)
	le.PutUint16(b[10:], uint16(len(entries)))
	for i, m := range entries {
		e := b[32+32*i:]
		copy(e[0:16], m.ID[:])
		le.PutUint32(e[16:], m.Offset)
		le.PutUint32(e[20:], m.Length)
		var f uint32
		if m.IsUser {
			f |= 1
		}
		if m.IsVirtualDisk {
			f |= 2
		}
		if m.IsRequired {
			f |= 4
		}
		le.PutUint32(e[24:], f)
	}
	return b
}

// metadataItem is a metadata table entry with its bytes.
type metadataItem struct {
	entry metadataEntry
	data  []byte
}

// buildMetadataRegion lays out the table and the items (from 64 KiB on, each
// 8-byte aligned); it fails if they do not fit in regionLen bytes.
func buildMetadataRegion(items []metadataItem, regionLen int64) ([]byte, error) {
	if len(items) > maxMetadataEntries {
		return nil, fmt.Errorf("%d metadata items exceed %d", len(items), maxMetadataEntries)
	}
	off := int64(metadataTableSize)
	entries := make([]metadataEntry, len(items))
	for i, it := range items {
		e := it.entry
		e.Length = uint32(len(it.data))
		e.Offset = 0
		if len(it.data) > 0 {
			e.Offset = uint32(off)
			off = roundUp(off+int64(len(it.data)), 8)
		}
		entries[i] = e
	}
	if off > regionLen {
		return nil, fmt.Errorf("metadata items need %d bytes, the region has %d", off, regionLen)
	}
	b := make([]byte, off)
	copy(b, marshalMetadataTable(entries))
	for i, it := range items {
		copy(b[entries[i].Offset:], it.data)
	}
	return b, nil
}

// parentLocator is the key/value parent locator (section 2.6.2.6).
type parentLocator struct {
	Keys   []string
	Values map[string]string
}

func (p *parentLocator) get(k string) string {
	if p == nil {
		return ""
	}
	return p.Values[k]
}

func utf16le(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	return b
}

func fromUTF16LE(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}

func marshalParentLocator(p *parentLocator) []byte {
	le := binary.LittleEndian
	n := len(p.Keys)
	hdr := 20 + 12*n
	var data []byte
	entries := make([]byte, 12*n)
	for i, k := range p.Keys {
		kb, vb := utf16le(k), utf16le(p.Values[k])
		le.PutUint32(entries[12*i:], uint32(hdr+len(data)))
		data = append(data, kb...)
		le.PutUint32(entries[12*i+4:], uint32(hdr+len(data)))
		data = append(data, vb...)
		le.PutUint16(entries[12*i+8:], uint16(len(kb)))
		le.PutUint16(entries[12*i+10:], uint16(len(vb)))
	}
	b := make([]byte, 20, hdr+len(data))
	copy(b[0:16], parentLocatorTypeVHDX[:])
	le.PutUint16(b[18:], uint16(n))
	b = append(b, entries...)
	return append(b, data...)
}

func parseParentLocator(b []byte) (*parentLocator, string) {
	le := binary.LittleEndian
	if len(b) < 20 {
		return nil, "parent locator too short"
	}
	var t guid.GUID
	copy(t[:], b[0:16])
	if t != parentLocatorTypeVHDX {
		return nil, fmt.Sprintf("unknown parent locator type %v", t)
	}
	n := int(le.Uint16(b[18:]))
	if 20+12*n > len(b) {
		return nil, fmt.Sprintf("parent locator with %d entries does not fit in %d bytes", n, len(b))
	}
	p := &parentLocator{Values: map[string]string{}}
	for i := 0; i < n; i++ {
		e := b[20+12*i:]
		ko, vo := int64(le.Uint32(e[0:])), int64(le.Uint32(e[4:]))
		kl, vl := int64(le.Uint16(e[8:])), int64(le.Uint16(e[10:]))
		if ko+kl > int64(len(b)) || vo+vl > int64(len(b)) || kl == 0 || kl%2 != 0 || vl%2 != 0 {
			return nil, fmt.Sprintf("parent locator entry %d out of bounds or malformed", i)
		}
		k := fromUTF16LE(b[ko : ko+kl])
		if _, dup := p.Values[k]; dup {
			return nil, fmt.Sprintf("parent locator key %q repeated", k)
		}
		p.Keys = append(p.Keys, k)
		p.Values[k] = fromUTF16LE(b[vo : vo+vl])
	}
	return p, ""
}

func divRoundUp(a, b int64) int64 { return (a + b - 1) / b }
func roundUp(a, b int64) int64    { return divRoundUp(a, b) * b }

// geometry derives the BAT layout from the metadata (section 2.5).
type geometry struct {
	blockSize   int64
	sectorSize  int64
	virtualSize int64
	chunkRatio  int64
	dataBlocks  int64
	bitmapCount int64 // sector bitmap blocks
	batEntries  int64
}

func newGeometry(blockSize, sectorSize, virtualSize int64, differencing bool) geometry {
	g := geometry{blockSize: blockSize, sectorSize: sectorSize, virtualSize: virtualSize}
	g.chunkRatio = sectorsPerMap * sectorSize / blockSize
	g.dataBlocks = divRoundUp(virtualSize, blockSize)
	g.bitmapCount = divRoundUp(g.dataBlocks, g.chunkRatio)
	if differencing {
		g.batEntries = g.bitmapCount * (g.chunkRatio + 1)
	} else {
		g.batEntries = g.dataBlocks + (g.dataBlocks-1)/g.chunkRatio
	}
	return g
}

// payloadIndex is the BAT index of payload block b.
func (g geometry) payloadIndex(b int64) int64 { return b + b/g.chunkRatio }

// bitmapIndex is the BAT index of the sector bitmap block of chunk c.
func (g geometry) bitmapIndex(c int64) int64 { return c*(g.chunkRatio+1) + g.chunkRatio }

// blockBitmapBytes is the size of one payload block's share of a sector bitmap.
func (g geometry) blockBitmapBytes() int64 { return g.blockSize / g.sectorSize / 8 }

func batEntry(state uint64, fileOffset int64) uint64 {
	return state | uint64(fileOffset/mib)<<batOffsetShift
}

func entryState(e uint64) uint64 { return e & batStateMask }
func entryOffset(e uint64) int64 { return int64(e>>batOffsetShift) * mib }
