package exclude

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
)

// Partition is one partition of a disk, or the whole disk (Index 0) when a
// filesystem starts at offset 0 without a partition table. Indexes follow the
// Linux numbering: GPT entry n is n+1, MBR primaries are 1–4, logical
// partitions of an extended partition 5 and up.
type Partition struct {
	Index      int    `json:"index"`
	Offset     int64  `json:"offset"`
	Length     int64  `json:"length"`
	Type       string `json:"type"`
	Filesystem string `json:"filesystem"`
}

// Range is a byte range of the disk that need not travel, and why.
type Range struct {
	Offset int64  `json:"offset"`
	Length int64  `json:"length"`
	Reason string `json:"reason"`
}

// End returns the first byte after the range.
func (r Range) End() int64 { return r.Offset + r.Length }

// Reasons of a Range.
const (
	ReasonSwap     = "swap"
	ReasonPagefile = "pagefile"
	ReasonHiberfil = "hiberfil"
	ReasonSwapfile = "swapfile"
	ReasonPath     = "path"
)

// Options say what to exclude.
type Options struct {
	// Swap excludes Linux swap partitions and the NTFS page, swap and
	// hibernation files.
	Swap bool
	// Paths are NTFS guest paths of files to exclude, such as
	// "/Users/*/AppData/Local/Temp/*" or `C:\temp\*.tmp`. A drive letter is
	// ignored, '\' and '/' are alike, names compare case-insensitively as NTFS
	// does, '*' matches any run of characters and '?' one character, both
	// within one path component. A pattern names files: a directory that
	// matches the last component is not descended. Patterns apply to every
	// NTFS volume of the disk; NTFS metadata files are never matched.
	Paths []string
}

// ErrUnsupported marks a sector size Analyze cannot use.
var ErrUnsupported = errors.New("unsupported")

// Analyze reads the partition table and filesystems of a disk of size bytes
// and returns its partitions and the byte ranges that need not travel
// (sorted, non-overlapping, merged). It never reads outside [0, size).
//
// A disk it cannot understand (no partition table, no filesystem it knows)
// yields no partitions, no exclusions and no error. A structure it recognized
// but found damaged (a GPT whose both copies fail their checksums, a looping
// extended partition chain, an NTFS volume with a broken MFT) yields an error
// naming the structure and its offset, and no exclusions: the caller then
// sends every byte, which is always safe. The partitions found so far are
// returned with the error for reporting.
func Analyze(ctx context.Context, img io.ReaderAt, size int64, sectorSize int, o Options) (parts []Partition, excluded []Range, err error) {
	if sectorSize == 0 {
		sectorSize = 512
	}
	switch sectorSize {
	case 512, 1024, 2048, 4096:
	default:
		return nil, nil, fmt.Errorf("analyze disk: sector size %d: %w", sectorSize, ErrUnsupported)
	}
	if size < 0 {
		return nil, nil, fmt.Errorf("analyze disk: negative size %d", size)
	}
	d := &diskReader{r: img, size: size}
	parts, err = readPartitions(ctx, d, sectorSize)
	if err != nil {
		return parts, nil, err
	}
	patterns, err := compilePatterns(o.Paths)
	if err != nil {
		return parts, nil, err
	}
	for _, p := range parts {
		if err := ctx.Err(); err != nil {
			return parts, nil, err
		}
		switch p.Filesystem {
		case fsSwap:
			if o.Swap {
				page, ok := swapPageSize(ctx, d, p.Offset, p.Length)
				if ok && p.Length > page {
					excluded = append(excluded, Range{Offset: p.Offset + page, Length: p.Length - page, Reason: ReasonSwap})
				}
			}
		case fsNTFS:
			if !o.Swap && len(patterns) == 0 {
				continue
			}
			rs, err := analyzeNTFS(ctx, d, p, o.Swap, patterns)
			if err != nil {
				return parts, nil, err
			}
			excluded = append(excluded, rs...)
		}
	}
	return parts, Merge(excluded), nil
}

// Merge sorts ranges and makes them non-overlapping: where ranges of the same
// reason overlap or touch they become one; where ranges of different reasons
// overlap, the bytes go to the range that starts first (the longer one on a
// tie). Empty ranges are dropped. The input is not modified.
func Merge(rs []Range) []Range {
	in := make([]Range, 0, len(rs))
	for _, r := range rs {
		if r.Length > 0 && r.Offset >= 0 && r.Offset+r.Length > r.Offset {
			in = append(in, r)
		}
	}
	sort.Slice(in, func(i, j int) bool {
		if in[i].Offset != in[j].Offset {
			return in[i].Offset < in[j].Offset
		}
		if in[i].Length != in[j].Length {
			return in[i].Length > in[j].Length
		}
		return in[i].Reason < in[j].Reason
	})
	var out []Range
	for _, r := range in {
		if len(out) == 0 {
			out = append(out, r)
			continue
		}
		last := &out[len(out)-1]
		switch {
		case r.Offset > last.End():
			out = append(out, r)
		case r.Reason == last.Reason:
			if r.End() > last.End() {
				last.Length = r.End() - last.Offset
			}
		case r.End() > last.End():
			end := r.End()
			r.Offset = last.End()
			r.Length = end - r.Offset
			out = append(out, r)
		}
	}
	return out
}

// diskReader reads a disk and refuses anything outside it.
type diskReader struct {
	r    io.ReaderAt
	size int64
}

// readAt fills buf from off; reading outside the disk is an error naming the
// offset.
func (d *diskReader) readAt(buf []byte, off int64) error {
	if off < 0 || off > d.size || int64(len(buf)) > d.size-off {
		return fmt.Errorf("read %d bytes at offset %d: past the end of the disk (size %d)", len(buf), off, d.size)
	}
	n, err := d.r.ReadAt(buf, off)
	if n == len(buf) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read %d bytes at offset %d: %w", len(buf), off, err)
}

// readUpTo reads min(len(buf), limit) bytes at off, clamped to the disk, and
// returns what it read.
func (d *diskReader) readUpTo(buf []byte, off, limit int64) ([]byte, error) {
	n := int64(len(buf))
	if limit < n {
		n = limit
	}
	if off >= d.size || off < 0 || n <= 0 {
		return nil, nil
	}
	if d.size-off < n {
		n = d.size - off
	}
	if err := d.readAt(buf[:n], off); err != nil {
		return nil, err
	}
	return buf[:n], nil
}
