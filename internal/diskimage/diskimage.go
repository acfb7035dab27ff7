// Package diskimage opens, creates, describes and converts disk image files of
// any supported format (raw and VHDX), telling them apart by their content:
// a VHDX starts with the "vhdxfile" signature, anything else is raw. It sits
// above internal/disk and internal/vhdx so that neither imports the other.
package diskimage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/replicator/replicator/internal/atomicfile"
	"github.com/replicator/replicator/internal/disk"
	"github.com/replicator/replicator/internal/exclude"
	"github.com/replicator/replicator/internal/vhdx"
	"github.com/replicator/replicator/internal/zeros"
)

// Format names, as `starter disk` spells them.
const (
	FormatRaw  = "raw"
	FormatVHDX = "vhdx"
)

// Detect returns the format of the file at path: VHDX by its signature, raw
// otherwise, except that a file named .vhdx or .avhdx must be a VHDX.
func Detect(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("disk image: %w", err)
	}
	defer f.Close()
	sig := make([]byte, 8)
	n, err := f.ReadAt(sig, 0)
	if err != nil && err != io.EOF {
		return "", fmt.Errorf("disk image %s: read signature: %w", path, err)
	}
	if n == 8 && string(sig) == "vhdxfile" {
		return FormatVHDX, nil
	}
	// A file named as a VHDX without the signature is a damaged VHDX, not a
	// raw disk.
	switch strings.ToLower(filepath.Ext(path)) {
	case ".vhdx", ".avhdx":
		return "", &vhdx.FormatError{Path: path, Offset: 0, Msg: fmt.Sprintf("not a VHDX file: signature %q, want \"vhdxfile\"", sig[:n])}
	}
	return FormatRaw, nil
}

// Open opens a disk image read-only; a VHDX comes with its parent chain.
func Open(path string) (disk.Image, error) {
	format, err := Detect(path)
	if err != nil {
		return nil, err
	}
	if format == FormatVHDX {
		return vhdx.Open(path)
	}
	return disk.OpenRaw(path, false)
}

// OpenWritable opens a disk image for writing.
func OpenWritable(path string) (disk.WritableImage, error) {
	format, err := Detect(path)
	if err != nil {
		return nil, err
	}
	if format == FormatVHDX {
		return vhdx.OpenWith(path, vhdx.OpenOptions{Writable: true})
	}
	return disk.OpenRaw(path, true)
}

// Create makes a new, empty image of the given format (raw is sparse, VHDX is
// dynamic). sectorSize 0 means 512. It fails if path exists.
func Create(path, format string, size int64, sectorSize int) (disk.WritableImage, error) {
	if sectorSize == 0 {
		sectorSize = 512
	}
	if sectorSize != 512 && sectorSize != 4096 {
		return nil, fmt.Errorf("disk image %s: sector size %d: want 512 or 4096", path, sectorSize)
	}
	switch format {
	case FormatRaw:
		r, err := disk.CreateRaw(path, size)
		if err != nil {
			return nil, err
		}
		if err := r.SetSectorSize(sectorSize); err != nil {
			r.Close()
			return nil, err
		}
		return r, nil
	case FormatVHDX:
		return vhdx.Create(path, vhdx.CreateOptions{Size: size, LogicalSectorSize: uint32(sectorSize)})
	}
	return nil, fmt.Errorf("disk image %s: unknown format %q (want raw or vhdx)", path, format)
}

// Partition is one entry of the disk's partition table, as package exclude
// finds it.
type Partition = exclude.Partition

// ExcludedRange is a byte range replication need not carry, with why:
// swap, pagefile, hiberfil, swapfile or path.
type ExcludedRange = exclude.Range

// Info is what `starter disk info --json` prints.
type Info struct {
	Format            string          `json:"format"`
	VirtualSize       int64           `json:"virtualSize"`
	BlockSize         int64           `json:"blockSize"`
	LogicalSectorSize int             `json:"logicalSectorSize"`
	Parent            string          `json:"parent"`
	Allocated         []disk.Extent   `json:"allocated"`
	Partitions        []Partition     `json:"partitions"`
	Excluded          []ExcludedRange `json:"excluded"`
}

// Analyze, when set (by the package that understands partitions and file
// systems), fills Info's partitions and excluded ranges.
var Analyze func(ctx context.Context, img disk.Image) ([]Partition, []ExcludedRange, error)

// Describe returns the Info of an image file.
func Describe(ctx context.Context, path string) (Info, error) {
	img, err := Open(path)
	if err != nil {
		return Info{}, err
	}
	defer img.Close()
	info := Info{
		Format:            FormatRaw,
		VirtualSize:       img.Size(),
		LogicalSectorSize: img.SectorSize(),
		Allocated:         img.Allocated(),
		Partitions:        []Partition{},
		Excluded:          []ExcludedRange{},
	}
	if info.Allocated == nil {
		info.Allocated = []disk.Extent{}
	}
	if v, ok := img.(*vhdx.Disk); ok {
		info.Format = FormatVHDX
		info.BlockSize = int64(v.BlockSize())
		if p := v.Parent(); p != nil {
			info.Parent = p.Path()
		}
	}
	if Analyze != nil {
		parts, excl, err := Analyze(ctx, img)
		if err != nil {
			return Info{}, fmt.Errorf("disk image %s: analyze: %w", path, err)
		}
		if parts != nil {
			info.Partitions = parts
		}
		if excl != nil {
			info.Excluded = excl
		}
	}
	return info, nil
}

// InfoOf is Describe without a context.
func InfoOf(path string) (Info, error) { return Describe(context.Background(), path) }

// copyChunk is the unit Convert reads and writes.
const copyChunk = 4 << 20

// Convert writes the disk read from src (any format, VHDX chains included)
// to dst in format. It writes to a temporary name in dst's folder and renames
// it to dst only once complete and flushed, so dst is never a partial file.
func Convert(ctx context.Context, src, dst, format string) (err error) {
	if format != FormatRaw && format != FormatVHDX {
		return fmt.Errorf("convert: unknown format %q (want raw or vhdx)", format)
	}
	if a, b := fileID(src), fileID(dst); a != nil && b != nil && os.SameFile(a, b) {
		return fmt.Errorf("convert: %s and %s are the same file", src, dst)
	}
	in, err := Open(src)
	if err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	defer in.Close()
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	tmp := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".partial-"+hex.EncodeToString(rnd[:]))
	out, err := Create(tmp, format, in.Size(), in.SectorSize())
	if err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	defer func() {
		if out != nil {
			out.Close()
		}
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if err := Copy(ctx, out, in); err != nil {
		return fmt.Errorf("convert %s to %s: %w", src, dst, err)
	}
	if err := out.Sync(); err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	cerr := out.Close()
	out = nil
	if cerr != nil {
		return fmt.Errorf("convert: %w", cerr)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	return atomicfile.SyncDir(filepath.Dir(dst))
}

// Copy copies the allocated extents of src into dst (of the same size),
// skipping all-zero chunks: dst must read as zeros where it is not written.
func Copy(ctx context.Context, dst disk.WritableImage, src disk.Image) error {
	if dst.Size() != src.Size() {
		return fmt.Errorf("copy: sizes differ (%d, %d)", src.Size(), dst.Size())
	}
	buf := make([]byte, copyChunk)
	for _, e := range src.Allocated() {
		for off := e.Offset; off < e.End(); off += copyChunk {
			if err := ctx.Err(); err != nil {
				return err
			}
			b := buf[:min(copyChunk, e.End()-off)]
			if n, err := src.ReadAt(b, off); n < len(b) {
				return fmt.Errorf("read at %d: %w", off, errors.Join(err, io.ErrUnexpectedEOF))
			}
			if zeros.All(b) {
				continue
			}
			if _, err := dst.WriteAt(b, off); err != nil {
				return fmt.Errorf("write at %d: %w", off, err)
			}
		}
	}
	return nil
}

func fileID(path string) os.FileInfo {
	st, err := os.Stat(path)
	if err != nil {
		return nil
	}
	return st
}
