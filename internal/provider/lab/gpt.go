package lab

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"unicode/utf16"

	"github.com/replicator/replicator/internal/guid"
)

// GPT partition types (UEFI specification, section 5.3.3, and the Linux
// "discoverable partitions" list).
const (
	gptTypeLinuxData = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
	gptTypeLinuxSwap = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"
)

const (
	gptEntries   = 128
	gptEntrySize = 128
	gptHeaderLen = 92
)

// gptPartition is one partition of a GPT: first and last LBA inclusive.
type gptPartition struct {
	Type     string
	ID       string
	FirstLBA uint64
	LastLBA  uint64
	Name     string
}

// gptLayout is a GUID partition table ready to write: the protective MBR,
// header and entries at the start of the disk, and the backup entries and
// header at its end.
type gptLayout struct {
	Primary      []byte // LBA 0 onwards
	Backup       []byte // written at BackupOffset
	BackupOffset int64
}

// buildGPT lays out a GPT for a disk of size bytes with 512-byte sectors.
func buildGPT(size int64, diskID string, parts []gptPartition) (*gptLayout, error) {
	const sector = 512
	if size%sector != 0 || size < 1<<20 {
		return nil, fmt.Errorf("GPT: disk size %d: want a multiple of %d of at least 1 MiB", size, sector)
	}
	if len(parts) > gptEntries {
		return nil, fmt.Errorf("GPT: %d partitions: at most %d", len(parts), gptEntries)
	}
	lastLBA := uint64(size/sector) - 1
	entryLBAs := uint64(gptEntries * gptEntrySize / sector)
	firstUsable := 2 + entryLBAs
	lastUsable := lastLBA - 1 - entryLBAs

	entries := make([]byte, gptEntries*gptEntrySize)
	for i, p := range parts {
		if p.FirstLBA < firstUsable || p.LastLBA > lastUsable || p.FirstLBA > p.LastLBA {
			return nil, fmt.Errorf("GPT: partition %d: LBA %d-%d outside the usable %d-%d", i+1, p.FirstLBA, p.LastLBA, firstUsable, lastUsable)
		}
		e := entries[i*gptEntrySize : (i+1)*gptEntrySize]
		t, err := guid.Parse(p.Type)
		if err != nil {
			return nil, fmt.Errorf("GPT: partition %d type: %w", i+1, err)
		}
		id, err := guid.Parse(p.ID)
		if err != nil {
			return nil, fmt.Errorf("GPT: partition %d: %w", i+1, err)
		}
		copy(e[0:16], t[:])
		copy(e[16:32], id[:])
		binary.LittleEndian.PutUint64(e[32:], p.FirstLBA)
		binary.LittleEndian.PutUint64(e[40:], p.LastLBA)
		name := utf16.Encode([]rune(p.Name))
		if len(name) > 36 {
			return nil, fmt.Errorf("GPT: partition %d: name %q longer than 36 UTF-16 units", i+1, p.Name)
		}
		for j, u := range name {
			binary.LittleEndian.PutUint16(e[56+2*j:], u)
		}
	}
	entriesCRC := crc32.ChecksumIEEE(entries)
	dg, err := guid.Parse(diskID)
	if err != nil {
		return nil, fmt.Errorf("GPT: disk: %w", err)
	}
	header := func(my, alternate, entriesAt uint64) []byte {
		h := make([]byte, sector)
		copy(h[0:8], "EFI PART")
		binary.LittleEndian.PutUint32(h[8:], 0x00010000) // revision 1.0
		binary.LittleEndian.PutUint32(h[12:], gptHeaderLen)
		binary.LittleEndian.PutUint64(h[24:], my)
		binary.LittleEndian.PutUint64(h[32:], alternate)
		binary.LittleEndian.PutUint64(h[40:], firstUsable)
		binary.LittleEndian.PutUint64(h[48:], lastUsable)
		copy(h[56:72], dg[:])
		binary.LittleEndian.PutUint64(h[72:], entriesAt)
		binary.LittleEndian.PutUint32(h[80:], gptEntries)
		binary.LittleEndian.PutUint32(h[84:], gptEntrySize)
		binary.LittleEndian.PutUint32(h[88:], entriesCRC)
		binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h[:gptHeaderLen]))
		return h
	}

	// Protective MBR: one partition of type 0xEE covering the disk (UEFI 5.2.3).
	mbr := make([]byte, sector)
	pe := mbr[446:462]
	pe[1], pe[2], pe[3] = 0x00, 0x02, 0x00 // CHS of LBA 1
	pe[4] = 0xEE
	pe[5], pe[6], pe[7] = 0xFF, 0xFF, 0xFF
	binary.LittleEndian.PutUint32(pe[8:], 1)
	binary.LittleEndian.PutUint32(pe[12:], uint32(min(lastLBA, 0xFFFFFFFF)))
	mbr[510], mbr[511] = 0x55, 0xAA

	primary := make([]byte, 0, (2+entryLBAs)*sector)
	primary = append(primary, mbr...)
	primary = append(primary, header(1, lastLBA, 2)...)
	primary = append(primary, entries...)

	backup := make([]byte, 0, (1+entryLBAs)*sector)
	backup = append(backup, entries...)
	backup = append(backup, header(lastLBA, 1, lastLBA-entryLBAs)...)
	return &gptLayout{Primary: primary, Backup: backup, BackupOffset: int64(lastLBA-entryLBAs) * sector}, nil
}

// swapHeader is the first page of a Linux swap area as mkswap writes it
// (struct swap_header_v1_2 in the kernel's include/linux/swap.h): version 1,
// the last usable page, a UUID and a label, and "SWAPSPACE2" in the last 10
// bytes of the page.
func swapHeader(size int64, uuid, label string) ([]byte, error) {
	const page = 4096
	if size < 10*page {
		return nil, fmt.Errorf("swap area of %d bytes: want at least 10 pages", size)
	}
	h := make([]byte, page)
	binary.LittleEndian.PutUint32(h[1024:], 1)                   // version
	binary.LittleEndian.PutUint32(h[1028:], uint32(size/page-1)) // last_page
	binary.LittleEndian.PutUint32(h[1032:], 0)                   // nr_badpages
	raw, err := guid.Parse(uuid)
	if err != nil {
		return nil, fmt.Errorf("swap UUID: %w", err)
	}
	// The swap UUID is stored as written (big-endian), unlike a GPT GUID.
	be := raw.RFC9562()
	copy(h[1036:1052], be[:])
	if len(label) > 16 {
		return nil, fmt.Errorf("swap label %q: at most 16 bytes", label)
	}
	copy(h[1052:1068], label)
	copy(h[page-10:], "SWAPSPACE2")
	return h, nil
}
