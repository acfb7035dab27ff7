package disk

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// Raw is a raw disk image file: byte n of the file is byte n of the disk.
// Its allocated extents come from the file system's holes (SEEK_DATA and
// SEEK_HOLE) where it reports them, otherwise the whole file.
type Raw struct {
	path     string
	f        *os.File
	size     int64
	sector   int
	writable bool
	seekMu   sync.Mutex // Allocated moves the file offset
}

var _ WritableImage = (*Raw)(nil)

// OpenRaw opens a raw image; its size is the file's size.
func OpenRaw(path string, writable bool) (*Raw, error) {
	flag := os.O_RDONLY
	if writable {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("raw image: open: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("raw image %s: stat: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("raw image %s: not a regular file", path)
	}
	return &Raw{path: path, f: f, size: st.Size(), sector: 512, writable: writable}, nil
}

// CreateRaw creates a sparse raw image of size bytes, opened read-write. It
// fails if path exists.
func CreateRaw(path string, size int64) (*Raw, error) {
	if size < 0 {
		return nil, fmt.Errorf("raw image %s: negative size %d", path, size)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("raw image: create: %w", err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("raw image %s: set size %d: %w", path, size, err)
	}
	return &Raw{path: path, f: f, size: size, sector: 512, writable: true}, nil
}

// SetSectorSize sets the logical sector size reported (512 by default).
func (r *Raw) SetSectorSize(n int) error {
	if n != 512 && n != 4096 {
		return fmt.Errorf("raw image %s: sector size %d: want 512 or 4096", r.path, n)
	}
	r.sector = n
	return nil
}

// Path returns the file name.
func (r *Raw) Path() string { return r.path }

// Size returns the disk size in bytes.
func (r *Raw) Size() int64 { return r.size }

// SectorSize returns the logical sector size.
func (r *Raw) SectorSize() int { return r.sector }

// ReadAt reads disk bytes; safe for concurrent use.
func (r *Raw) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("raw image %s: read at negative offset %d", r.path, off)
	}
	if off >= r.size {
		return 0, io.EOF
	}
	want := len(p)
	if int64(want) > r.size-off {
		p = p[:r.size-off]
	}
	n, err := r.f.ReadAt(p, off)
	if err == io.EOF && n < len(p) {
		// The file shrank under us: what is missing reads as zeros.
		clear(p[n:])
		n, err = len(p), nil
	}
	if err != nil {
		return n, fmt.Errorf("raw image %s: read at %d: %w", r.path, off, err)
	}
	if n < want {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt writes disk bytes inside the disk's size.
func (r *Raw) WriteAt(p []byte, off int64) (int, error) {
	if !r.writable {
		return 0, fmt.Errorf("raw image %s: write: opened read-only", r.path)
	}
	if off < 0 || int64(len(p)) > r.size-off {
		return 0, fmt.Errorf("raw image %s: write of %d bytes at %d outside the disk (%d bytes)", r.path, len(p), off, r.size)
	}
	n, err := r.f.WriteAt(p, off)
	if err != nil {
		return n, fmt.Errorf("raw image %s: write at %d: %w", r.path, off, err)
	}
	return n, nil
}

// Sync flushes the file.
func (r *Raw) Sync() error {
	if !r.writable {
		return nil
	}
	if err := r.f.Sync(); err != nil {
		return fmt.Errorf("raw image %s: sync: %w", r.path, err)
	}
	return nil
}

// Close syncs a writable image and closes the file.
func (r *Raw) Close() error {
	err := r.Sync()
	return errors.Join(err, r.f.Close())
}

// Allocated lists the file's data extents, or the whole file where the file
// system cannot tell holes.
func (r *Raw) Allocated() []Extent {
	if r.size == 0 {
		return nil
	}
	r.seekMu.Lock()
	defer r.seekMu.Unlock()
	ext, ok := dataExtents(r.f, r.size)
	if !ok {
		return []Extent{{Offset: 0, Length: r.size}}
	}
	return ext
}
