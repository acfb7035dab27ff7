// Package vhdxtest holds what tests that damage VHDX files share: the
// offsets and identifiers of MS-VHDX, finding a region or a metadata item in
// a file's bytes, and resealing the checksums after a change, so that only
// the field a test changed is wrong. It is written from the specification
// (MS-VHDX sections 2.2–2.6), not from package vhdx, so that it can check
// the reader it does not share code with.
package vhdxtest

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"testing"

	"github.com/replicator/replicator/internal/guid"
)

// Fixed offsets of MS-VHDX 2.1: two headers and two region tables, each
// copy 64 KiB after the first.
const (
	Header1 = 64 << 10
	Header2 = 128 << 10
	Region1 = 192 << 10
	Region2 = 256 << 10

	HeaderSize = 4 << 10  // the part of a header its checksum covers
	RegionSize = 64 << 10 // a region table, checksummed whole
)

// Identifiers of regions (2.2.3.1) and metadata items (2.6.2), as stored.
var (
	RegionBAT      = id("2DC27766-F623-4200-9D64-115E9BFD4A08")
	RegionMetadata = id("8B7CA206-4790-4B9A-B8FE-575F050F886E")
	FileParameters = id("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
	VirtualSize    = id("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
)

func id(s string) []byte {
	g := guid.MustParse(s)
	return g[:]
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// CRC32C is the checksum MS-VHDX uses everywhere.
func CRC32C(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// Region returns the file offset of region id in region table 1, and the
// offset in b of that entry's FileOffset field.
func Region(t testing.TB, b []byte, id []byte) (offset int64, field int) {
	t.Helper()
	n := int(binary.LittleEndian.Uint32(b[Region1+8:]))
	for i := range n {
		e := Region1 + 16 + 32*i
		if bytes.Equal(b[e:e+16], id) {
			return int64(binary.LittleEndian.Uint64(b[e+16:])), e + 16
		}
	}
	t.Fatalf("region %x not in the region table", id)
	return 0, 0
}

// MetaItem returns the file offset of metadata item id.
func MetaItem(t testing.TB, b []byte, id []byte) int64 {
	t.Helper()
	meta, _ := Region(t, b, RegionMetadata)
	n := int(binary.LittleEndian.Uint16(b[meta+10:]))
	for i := range n {
		e := meta + 32 + 32*int64(i)
		if bytes.Equal(b[e:e+16], id) {
			return meta + int64(binary.LittleEndian.Uint32(b[e+16:]))
		}
	}
	t.Fatalf("metadata item %x missing", id)
	return 0
}

// Reseal recomputes the CRC-32C of both headers and both region tables.
func Reseal(b []byte) {
	for _, r := range []struct{ off, n int }{{Header1, HeaderSize}, {Header2, HeaderSize}, {Region1, RegionSize}, {Region2, RegionSize}} {
		s := b[r.off : r.off+r.n]
		binary.LittleEndian.PutUint32(s[4:], 0)
		binary.LittleEndian.PutUint32(s[4:], CRC32C(s))
	}
}

// SetBoth sets the same bytes at off in both copies (of a header or a region
// table, whose copies are 64 KiB apart) and reseals them.
func SetBoth(b []byte, off int, v []byte) {
	copy(b[off:], v)
	copy(b[off+64<<10:], v)
	Reseal(b)
}

// LE32 and LE64 are v little-endian, as every VHDX field is.
func LE32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func LE64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

// LogEntry is a log entry (2.3.1) without descriptors, checksummed: valid as
// far as its own fields go.
func LogEntry(logGUID []byte, flushed, last uint64) []byte {
	e := make([]byte, 4<<10)
	copy(e, "loge")
	binary.LittleEndian.PutUint32(e[8:], 4<<10) // EntryLength
	binary.LittleEndian.PutUint32(e[12:], 0)    // Tail: this entry
	binary.LittleEndian.PutUint64(e[16:], 1)    // SequenceNumber
	copy(e[32:48], logGUID)
	binary.LittleEndian.PutUint64(e[48:], flushed) // FlushedFileOffset
	binary.LittleEndian.PutUint64(e[56:], last)    // LastFileOffset
	binary.LittleEndian.PutUint32(e[4:], CRC32C(e))
	return e
}
