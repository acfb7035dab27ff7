package exclude

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sort"
	"strings"

	"github.com/replicator/replicator/internal/guid"
)

// Bounds on what a partition table may make Analyze do.
const (
	maxGPTEntries      = 1024 // the UEFI minimum is 128; tools never exceed a few hundred
	maxGPTEntryArray   = 1 << 20
	maxLogicalPartions = 128
)

// errNoGPT says a GPT header is absent (as opposed to present but damaged).
var errNoGPT = errors.New("no GPT header")

// Well-known GPT partition type GUIDs (UEFI spec, Discoverable Partitions spec).
var gptTypeNames = map[string]string{
	"0657FD6D-A4AB-43C4-84E5-0933C84B4F4F": "linux-swap",
	"0FC63DAF-8483-4772-8E79-3D69D8477DE4": "linux-data",
	"EBD0A0A2-B9E5-4433-87C0-68B6B72699C7": "microsoft-basic-data",
	"C12A7328-F81F-11D2-BA4B-00A0C93EC93B": "efi-system",
	"E3C9E316-0B5C-4DB8-817D-F92DF00215AE": "microsoft-reserved",
	"DE94BBA4-06D1-4D40-A16A-BFD50179D6AC": "windows-recovery",
	"21686148-6449-6E6F-744E-656564454649": "bios-boot",
	"E6D6D379-F507-44C2-A23C-238F2A3DF928": "linux-lvm",
	"A19D880F-05FC-4D3B-A006-743F0F84911E": "linux-raid",
	"4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709": "linux-root-x86-64",
	"933AC7E1-2EB4-4F13-B844-0E14E2AEF915": "linux-home",
}

// MBR partition type names; others are reported as "mbr-0xNN".
var mbrTypeNames = map[byte]string{
	0x01: "fat12",
	0x04: "fat16",
	0x06: "fat16",
	0x07: "ntfs",
	0x0B: "fat32",
	0x0C: "fat32",
	0x0E: "fat16",
	0x27: "windows-recovery",
	0x82: "linux-swap",
	0x83: "linux-data",
	0x8E: "linux-lvm",
	0xEF: "efi-system",
	0xFD: "linux-raid",
}

// readPartitions finds the partition table (GPT, MBR) or a filesystem at
// offset 0, and the filesystem of every partition.
func readPartitions(ctx context.Context, d *diskReader, sectorSize int) ([]Partition, error) {
	ss := int64(sectorSize)
	if d.size < ss*2 {
		return wholeDisk(ctx, d)
	}
	mbr := make([]byte, sectorSize)
	if err := d.readAt(mbr, 0); err != nil {
		return nil, err
	}
	entries, mbrOK := parseMBR(mbr)
	protective := false
	for _, e := range entries {
		if e.typ == 0xEE {
			protective = true
		}
	}
	if mbrOK && len(entries) > 0 && !protective {
		// A DOS partition table without a protective entry wins over any
		// GPT found behind it, as in Linux and Windows: such a GPT is
		// left over from an earlier layout and describes nothing live.
		return readMBRDisk(ctx, d, ss, mbr, entries)
	}
	parts, tables, err := readGPT(ctx, d, ss)
	if errors.Is(err, errNoGPT) {
		// Image metadata may state the wrong logical sector size; a GPT
		// that passes its checksums at the other common size is the disk's.
		other := int64(4096)
		if ss == 4096 {
			other = 512
		}
		if d.size >= other*2 {
			if p, t, oerr := readGPT(ctx, d, other); oerr == nil {
				parts, tables, err = p, t, nil
			}
		}
	}
	switch {
	case err == nil:
		if err := checkOverlaps(parts, tables); err != nil {
			return nil, err
		}
		return parts, detectAll(ctx, d, parts)
	case !errors.Is(err, errNoGPT):
		return nil, err
	case protective && mbrOK:
		return nil, fmt.Errorf("read GPT: protective MBR at offset 0 but no GPT header at offset %d nor at the end of the disk", ss)
	}
	return wholeDisk(ctx, d)
}

// readMBRDisk reads a disk whose first sector holds a DOS partition table,
// unless that sector is the boot sector of a filesystem spanning the disk
// (whose boot code can pass for partition entries).
func readMBRDisk(ctx context.Context, d *diskReader, ss int64, mbr []byte, entries []mbrEntry) ([]Partition, error) {
	if fs := detectBootSector(mbr); fs != "" {
		return wholeDisk(ctx, d)
	}
	parts, tables, err := readMBR(ctx, d, ss, entries)
	if err != nil {
		return nil, err
	}
	if err := checkOverlaps(parts, tables); err != nil {
		return nil, err
	}
	return parts, detectAll(ctx, d, parts)
}

// wholeDisk reports the disk as one partition (index 0) if a filesystem
// starts at offset 0, else nothing.
func wholeDisk(ctx context.Context, d *diskReader) ([]Partition, error) {
	p := Partition{Index: 0, Offset: 0, Length: d.size}
	fs, err := detectFilesystem(ctx, d, p.Offset, p.Length)
	if err != nil || fs == "" {
		return nil, err
	}
	p.Filesystem = fs
	return []Partition{p}, nil
}

func detectAll(ctx context.Context, d *diskReader, parts []Partition) error {
	for i := range parts {
		if err := ctx.Err(); err != nil {
			return err
		}
		fs, err := detectFilesystem(ctx, d, parts[i].Offset, parts[i].Length)
		if err != nil {
			return fmt.Errorf("partition %d at offset %d: %w", parts[i].Index, parts[i].Offset, err)
		}
		parts[i].Filesystem = fs
	}
	return nil
}

// gptHeader is the part of a GPT header Analyze uses.
type gptHeader struct {
	myLBA, alternateLBA   uint64
	firstUsable, lastUse  uint64
	entriesLBA            uint64
	numEntries, entrySize uint32
	entriesCRC            uint32
}

// readGPT reads the primary GPT and, where it is missing or damaged, the
// backup at the last sector.
func readGPT(ctx context.Context, d *diskReader, ss int64) ([]Partition, []span, error) {
	lastLBA := uint64(d.size/ss) - 1
	parts, tables, perr := readGPTAt(ctx, d, ss, 1, lastLBA)
	if perr == nil {
		return parts, tables, nil
	}
	parts, tables, berr := readGPTAt(ctx, d, ss, lastLBA, lastLBA)
	if berr == nil {
		return parts, tables, nil
	}
	if errors.Is(perr, errNoGPT) && errors.Is(berr, errNoGPT) {
		return nil, nil, errNoGPT
	}
	return nil, nil, fmt.Errorf("read GPT: primary: %v; backup: %v", perr, berr)
}

func readGPTAt(ctx context.Context, d *diskReader, ss int64, lba, lastLBA uint64) ([]Partition, []span, error) {
	off := int64(lba) * ss
	buf := make([]byte, ss)
	if err := d.readAt(buf, off); err != nil {
		return nil, nil, err
	}
	if string(buf[0:8]) != "EFI PART" {
		return nil, nil, fmt.Errorf("GPT header at offset %d: %w", off, errNoGPT)
	}
	le := binary.LittleEndian
	hsize := le.Uint32(buf[12:])
	if hsize < 92 || int64(hsize) > ss {
		return nil, nil, fmt.Errorf("GPT header at offset %d: header size %d", off, hsize)
	}
	want := le.Uint32(buf[16:])
	hdr := append([]byte(nil), buf[:hsize]...)
	binary.LittleEndian.PutUint32(hdr[16:], 0)
	if got := crc32.ChecksumIEEE(hdr); got != want {
		return nil, nil, fmt.Errorf("GPT header at offset %d: CRC32 %08x, header says %08x", off, got, want)
	}
	h := gptHeader{
		myLBA:        le.Uint64(buf[24:]),
		alternateLBA: le.Uint64(buf[32:]),
		firstUsable:  le.Uint64(buf[40:]),
		lastUse:      le.Uint64(buf[48:]),
		entriesLBA:   le.Uint64(buf[72:]),
		numEntries:   le.Uint32(buf[80:]),
		entrySize:    le.Uint32(buf[84:]),
		entriesCRC:   le.Uint32(buf[88:]),
	}
	if h.myLBA != lba {
		return nil, nil, fmt.Errorf("GPT header at offset %d: says it is at LBA %d", off, h.myLBA)
	}
	if h.numEntries > maxGPTEntries {
		return nil, nil, fmt.Errorf("GPT header at offset %d: %d partition entries (at most %d)", off, h.numEntries, maxGPTEntries)
	}
	if h.entrySize < 128 || h.entrySize%8 != 0 || h.entrySize > 4096 {
		return nil, nil, fmt.Errorf("GPT header at offset %d: partition entry size %d", off, h.entrySize)
	}
	arrayLen := int64(h.numEntries) * int64(h.entrySize)
	if arrayLen > maxGPTEntryArray {
		return nil, nil, fmt.Errorf("GPT header at offset %d: partition entry array of %d bytes", off, arrayLen)
	}
	if h.entriesLBA > lastLBA {
		return nil, nil, fmt.Errorf("GPT header at offset %d: partition entries at LBA %d, past the disk end", off, h.entriesLBA)
	}
	eoff := int64(h.entriesLBA) * ss
	entries := make([]byte, arrayLen)
	if err := d.readAt(entries, eoff); err != nil {
		return nil, nil, fmt.Errorf("GPT partition entries of header at offset %d: %w", off, err)
	}
	if got := crc32.ChecksumIEEE(entries); got != h.entriesCRC {
		return nil, nil, fmt.Errorf("GPT partition entries at offset %d: CRC32 %08x, header at offset %d says %08x", eoff, got, off, h.entriesCRC)
	}
	// The protective MBR, this header and its entries, and the other
	// header stay out of every partition.
	tables := []span{{0, ss, "protective MBR"}, {off, ss, "GPT header"}, {eoff, arrayLen, "GPT partition entries"}}
	if h.alternateLBA <= lastLBA {
		tables = append(tables, span{int64(h.alternateLBA) * ss, ss, "alternate GPT header"})
	}
	var parts []Partition
	for i := 0; i < int(h.numEntries); i++ {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		e := entries[i*int(h.entrySize):][:h.entrySize]
		typ := e[0:16]
		if bytes.Equal(typ, make([]byte, 16)) {
			continue
		}
		first, last := le.Uint64(e[32:]), le.Uint64(e[40:])
		poff := eoff + int64(i)*int64(h.entrySize)
		if last < first {
			return nil, nil, fmt.Errorf("GPT partition entry %d at offset %d: last LBA %d before first LBA %d", i+1, poff, last, first)
		}
		if first > lastLBA || last > lastLBA {
			return nil, nil, fmt.Errorf("GPT partition entry %d at offset %d: LBAs %d–%d past the disk end (last LBA %d)", i+1, poff, first, last, lastLBA)
		}
		typeGUID := strings.ToUpper(guid.FromBytes(typ).String())
		name, ok := gptTypeNames[typeGUID]
		if !ok {
			name = typeGUID
		}
		parts = append(parts, Partition{
			Index:  i + 1,
			Offset: int64(first) * ss,
			Length: int64(last-first+1) * ss,
			Type:   name,
		})
	}
	return parts, tables, nil
}

// mbrEntry is one of the four slots of an MBR or EBR.
type mbrEntry struct {
	slot        int
	typ         byte
	start, size uint32
}

// parseMBR returns the used entries of a boot sector and whether it looks
// like an MBR at all (signature, boot flags 0x00 or 0x80).
func parseMBR(sec []byte) ([]mbrEntry, bool) {
	if len(sec) < 512 || sec[510] != 0x55 || sec[511] != 0xAA {
		return nil, false
	}
	var es []mbrEntry
	for i := 0; i < 4; i++ {
		e := sec[446+16*i:][:16]
		if e[0] != 0 && e[0] != 0x80 {
			return nil, false
		}
		me := mbrEntry{slot: i, typ: e[4], start: binary.LittleEndian.Uint32(e[8:]), size: binary.LittleEndian.Uint32(e[12:])}
		if me.typ == 0 || me.size == 0 {
			continue
		}
		es = append(es, me)
	}
	return es, true
}

func isExtended(t byte) bool { return t == 0x05 || t == 0x0F || t == 0x85 }

func mbrTypeName(t byte) string {
	if n, ok := mbrTypeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("mbr-0x%02x", t)
}

// readMBR lists primary partitions and the logical partitions chained in
// extended ones.
func readMBR(ctx context.Context, d *diskReader, ss int64, entries []mbrEntry) ([]Partition, []span, error) {
	sectors := uint64(d.size / ss)
	var parts []Partition
	tables := []span{{0, ss, "MBR"}}
	next := 5
	for _, e := range entries {
		poff := int64(446 + 16*e.slot)
		if uint64(e.start)+uint64(e.size) > sectors || e.start == 0 {
			return nil, nil, fmt.Errorf("MBR partition %d (entry at offset %d): sectors %d+%d outside the disk (%d sectors)", e.slot+1, poff, e.start, e.size, sectors)
		}
		if isExtended(e.typ) {
			logical, ebrs, err := readEBRChain(ctx, d, ss, uint64(e.start), uint64(e.size), &next)
			if err != nil {
				return nil, nil, err
			}
			parts = append(parts, logical...)
			tables = append(tables, ebrs...)
			continue
		}
		parts = append(parts, Partition{
			Index:  e.slot + 1,
			Offset: int64(e.start) * ss,
			Length: int64(e.size) * ss,
			Type:   mbrTypeName(e.typ),
		})
	}
	sortPartitions(parts)
	return parts, tables, nil
}

// readEBRChain follows the extended boot records of an extended partition
// [extStart, extStart+extSize) in sectors. A record visited twice is a loop.
func readEBRChain(ctx context.Context, d *diskReader, ss int64, extStart, extSize uint64, next *int) ([]Partition, []span, error) {
	var parts []Partition
	var ebrs []span
	seen := map[uint64]bool{}
	ebr := extStart
	sec := make([]byte, ss)
	for {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		off := int64(ebr) * ss
		if seen[ebr] {
			return nil, nil, fmt.Errorf("extended partition at offset %d: the chain of extended boot records loops back to offset %d", int64(extStart)*ss, off)
		}
		if len(seen) >= maxLogicalPartions {
			return nil, nil, fmt.Errorf("extended partition at offset %d: more than %d logical partitions", int64(extStart)*ss, maxLogicalPartions)
		}
		seen[ebr] = true
		ebrs = append(ebrs, span{off, ss, "extended boot record"})
		if err := d.readAt(sec, off); err != nil {
			return nil, nil, fmt.Errorf("extended boot record: %w", err)
		}
		es, ok := parseMBR(sec)
		if !ok {
			return nil, nil, fmt.Errorf("extended boot record at offset %d: no boot signature or bad entries", off)
		}
		var link *mbrEntry
		for i := range es {
			e := es[i]
			if e.slot > 1 {
				continue
			}
			if isExtended(e.typ) {
				if link == nil {
					link = &es[i]
				}
				continue
			}
			start := ebr + uint64(e.start)
			if e.start == 0 || start+uint64(e.size) > extStart+extSize {
				return nil, nil, fmt.Errorf("logical partition in extended boot record at offset %d: sectors %d+%d outside the extended partition (sectors %d+%d)", off, start, e.size, extStart, extSize)
			}
			parts = append(parts, Partition{
				Index:  *next,
				Offset: int64(start) * ss,
				Length: int64(e.size) * ss,
				Type:   mbrTypeName(e.typ),
			})
			*next++
		}
		if link == nil {
			return parts, ebrs, nil
		}
		nextEBR := extStart + uint64(link.start)
		if nextEBR >= extStart+extSize {
			return nil, nil, fmt.Errorf("extended boot record at offset %d: link to sector %d outside the extended partition (sectors %d+%d)", off, nextEBR, extStart, extSize)
		}
		ebr = nextEBR
	}
}

func sortPartitions(parts []Partition) {
	for i := 1; i < len(parts); i++ {
		for j := i; j > 0 && parts[j].Index < parts[j-1].Index; j-- {
			parts[j], parts[j-1] = parts[j-1], parts[j]
		}
	}
}

// span is a byte range of the disk that a partition table occupies.
type span struct {
	off, len int64
	what     string
}

// checkOverlaps refuses a partition table whose partitions overlap each
// other or the table itself: what is excluded from one would be data of the
// other, or the table.
func checkOverlaps(parts []Partition, tables []span) error {
	byOffset := append([]Partition(nil), parts...)
	sort.Slice(byOffset, func(i, j int) bool { return byOffset[i].Offset < byOffset[j].Offset })
	for i := 1; i < len(byOffset); i++ {
		a, b := byOffset[i-1], byOffset[i]
		if b.Offset < a.Offset+a.Length {
			return fmt.Errorf("partition table: partition %d (offset %d, length %d) overlaps partition %d at offset %d", a.Index, a.Offset, a.Length, b.Index, b.Offset)
		}
	}
	for _, p := range parts {
		for _, t := range tables {
			if t.off < p.Offset+p.Length && p.Offset < t.off+t.len {
				return fmt.Errorf("partition table: partition %d (offset %d, length %d) covers the %s at offset %d", p.Index, p.Offset, p.Length, t.what, t.off)
			}
		}
	}
	return nil
}
