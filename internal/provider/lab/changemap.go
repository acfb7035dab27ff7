package lab

import (
	"fmt"
	"os"

	"github.com/replicator/replicator/internal/disk"
)

// ChangeBlockSize is the granularity of the lab's change tracking.
const ChangeBlockSize = 64 << 10

// changeMapLen is the size in bytes of the bitmap of a disk of that size.
func changeMapLen(virtualSize int64) int64 {
	blocks := (virtualSize + ChangeBlockSize - 1) / ChangeBlockSize
	return (blocks + 7) / 8
}

// createChangeMap creates an empty, durable change map (the caller syncs the
// folder, usually together with the vm.json that names it).
func createChangeMap(path string, virtualSize int64) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("create change map %s: %w", path, err)
	}
	if err := f.Truncate(changeMapLen(virtualSize)); err != nil {
		f.Close()
		return fmt.Errorf("create change map %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("fsync change map %s: %w", path, err)
	}
	return f.Close()
}

// markChanged sets the bits of every 64 KiB block that the extents touch and
// makes them durable before it returns: the data write that follows may then
// be lost in a crash, but never the record of it.
func markChanged(path string, virtualSize int64, extents []disk.Extent) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("mark changes in %s: %w", path, err)
	}
	defer f.Close()
	bits, err := readBitmap(f, path, virtualSize)
	if err != nil {
		return err
	}
	lo, hi := int64(len(bits)), int64(-1) // byte range of the bitmap that changed
	for _, e := range extents {
		if e.Length <= 0 {
			continue
		}
		if e.Offset < 0 || e.End() > virtualSize {
			return fmt.Errorf("mark changes in %s: range [%d, %d) outside the disk of %d bytes", path, e.Offset, e.End(), virtualSize)
		}
		for b := e.Offset / ChangeBlockSize; b <= (e.End()-1)/ChangeBlockSize; b++ {
			if bits[b/8]&(1<<(b%8)) == 0 {
				bits[b/8] |= 1 << (b % 8)
				lo, hi = min(lo, b/8), max(hi, b/8)
			}
		}
	}
	if hi < lo {
		return nil // already recorded
	}
	if _, err := f.WriteAt(bits[lo:hi+1], lo); err != nil {
		return fmt.Errorf("mark changes in %s at offset %d: %w", path, lo, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync change map %s: %w", path, err)
	}
	return nil
}

// readChangeMap reads a change map whole.
func readChangeMap(path string, virtualSize int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read change map %s: %w", path, err)
	}
	defer f.Close()
	return readBitmap(f, path, virtualSize)
}

func readBitmap(f *os.File, path string, virtualSize int64) ([]byte, error) {
	want := changeMapLen(virtualSize)
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read change map %s: %w", path, err)
	}
	if fi.Size() != want {
		return nil, fmt.Errorf("read change map %s: %d bytes, want %d for a disk of %d bytes", path, fi.Size(), want, virtualSize)
	}
	bits := make([]byte, want)
	if _, err := f.ReadAt(bits, 0); err != nil {
		return nil, fmt.Errorf("read change map %s: %w", path, err)
	}
	return bits, nil
}

// bitmapExtents turns a change map into sorted, merged byte ranges clipped to
// the disk.
func bitmapExtents(bits []byte, virtualSize int64) []disk.Extent {
	var out []disk.Extent
	blocks := (virtualSize + ChangeBlockSize - 1) / ChangeBlockSize
	for b := int64(0); b < blocks; b++ {
		if bits[b/8]&(1<<(b%8)) == 0 {
			continue
		}
		off := b * ChangeBlockSize
		end := min(off+ChangeBlockSize, virtualSize)
		if n := len(out); n > 0 && out[n-1].End() == off {
			out[n-1].Length = end - out[n-1].Offset
			continue
		}
		out = append(out, disk.Extent{Offset: off, Length: end - off})
	}
	return out
}
