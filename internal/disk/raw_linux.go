package disk

import (
	"errors"
	"os"
	"syscall"
)

// lseek whence values for holes (Linux, since 3.1).
const (
	seekData = 3
	seekHole = 4
)

// dataExtents walks the file's data and holes with SEEK_DATA/SEEK_HOLE.
func dataExtents(f *os.File, size int64) ([]Extent, bool) {
	var out []Extent
	for off := int64(0); off < size; {
		start, err := f.Seek(off, seekData)
		if err != nil {
			if errors.Is(err, syscall.ENXIO) { // no data after off
				return out, true
			}
			return nil, false
		}
		if start >= size {
			break
		}
		end, err := f.Seek(start, seekHole)
		if err != nil {
			return nil, false
		}
		end = min(end, size)
		out = append(out, Extent{Offset: start, Length: end - start})
		off = end
	}
	return out, true
}
