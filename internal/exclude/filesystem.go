package exclude

import (
	"context"
	"encoding/binary"
)

// Filesystem names reported in Partition.Filesystem.
const (
	fsSwap  = "swap"
	fsNTFS  = "ntfs"
	fsExt4  = "ext4"
	fsExt3  = "ext3"
	fsExt2  = "ext2"
	fsXFS   = "xfs"
	fsVFAT  = "vfat"
	fsExFAT = "exfat"
)

// swapPageSizes are the page sizes whose swap header Analyze recognizes; the
// SWAPSPACE2 signature ends the first page (mkswap(8), linux/swap.h).
var swapPageSizes = []int64{4096, 8192, 16384, 65536}

// probeSize is how much of a partition's start filesystem detection reads.
const probeSize = 65536

// detectFilesystem names the filesystem starting at off, or "" when none is
// recognized. Filesystems with their own boot sector or superblock win over a
// swap signature, so that a stale SWAPSPACE2 never excludes live data.
func detectFilesystem(ctx context.Context, d *diskReader, off, length int64) (string, error) {
	buf, err := d.readUpTo(make([]byte, probeSize), off, length)
	if err != nil {
		return "", err
	}
	if fs := detectBootSector(buf); fs != "" {
		return fs, nil
	}
	if len(buf) >= 4 && string(buf[0:4]) == "XFSB" {
		return fsXFS, nil
	}
	if fs := detectExt(buf); fs != "" {
		return fs, nil
	}
	if _, ok := swapPageSize(ctx, d, off, length); ok {
		return fsSwap, nil
	}
	return "", nil
}

// detectBootSector recognizes filesystems that start with a boot sector.
func detectBootSector(b []byte) string {
	if len(b) < 512 {
		return ""
	}
	switch {
	case string(b[3:11]) == "NTFS    ":
		return fsNTFS
	case string(b[3:11]) == "EXFAT   ":
		return fsExFAT
	}
	if b[510] != 0x55 || b[511] != 0xAA {
		return ""
	}
	bps := binary.LittleEndian.Uint16(b[11:])
	spc := b[13]
	if (bps != 512 && bps != 1024 && bps != 2048 && bps != 4096) || spc == 0 || spc&(spc-1) != 0 || b[16] == 0 {
		return ""
	}
	if string(b[54:59]) == "FAT12" || string(b[54:59]) == "FAT16" || string(b[82:87]) == "FAT32" {
		return fsVFAT
	}
	return ""
}

// detectExt recognizes an ext2/3/4 superblock (magic 0xEF53 at 1024+56) and
// tells the versions apart by their feature flags (ext4 on-disk layout).
func detectExt(b []byte) string {
	if len(b) < 2048 {
		return ""
	}
	sb := b[1024:2048]
	if binary.LittleEndian.Uint16(sb[56:]) != 0xEF53 {
		return ""
	}
	compat := binary.LittleEndian.Uint32(sb[0x5C:])
	incompat := binary.LittleEndian.Uint32(sb[0x60:])
	roCompat := binary.LittleEndian.Uint32(sb[0x64:])
	const (
		compatHasJournal   = 0x4
		incompatExtents    = 0x40
		incompat64bit      = 0x80
		incompatFlexBG     = 0x200
		roCompatHugeFile   = 0x8
		roCompatGdtCsum    = 0x10
		roCompatDirNlink   = 0x20
		roCompatExtraIsize = 0x40
		roCompatMetaCsum   = 0x400
	)
	switch {
	case incompat&(incompatExtents|incompat64bit|incompatFlexBG) != 0,
		roCompat&(roCompatHugeFile|roCompatGdtCsum|roCompatDirNlink|roCompatExtraIsize|roCompatMetaCsum) != 0:
		return fsExt4
	case compat&compatHasJournal != 0:
		return fsExt3
	}
	return fsExt2
}

// swapPageSize finds the SWAPSPACE2 signature of a Linux swap area at off and
// returns its page size. The header must also say version 1 with at least one
// page, in either byte order.
func swapPageSize(ctx context.Context, d *diskReader, off, length int64) (int64, bool) {
	var sig [10]byte
	var hdr [8]byte
	for _, page := range swapPageSizes {
		if ctx.Err() != nil || page >= length || off+page > d.size {
			return 0, false
		}
		if d.readAt(sig[:], off+page-10) != nil || string(sig[:]) != "SWAPSPACE2" {
			continue
		}
		if d.readAt(hdr[:], off+1024) != nil {
			continue
		}
		for _, bo := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
			if bo.Uint32(hdr[0:]) == 1 && bo.Uint32(hdr[4:]) > 0 {
				return page, true
			}
		}
	}
	return 0, false
}
