package replica

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/replicator/replicator/internal/digest"
)

// Digest file: a 32-byte header, then one 16-byte sum per block.
//
//	0  magic "RPDIGST1"
//	8  block size (uint64 LE)
//	16 block count (uint64 LE)
//	24 disk size in bytes (uint64 LE)
const (
	digestMagic      = "RPDIGST1"
	digestHeaderSize = 32
)

// DigestTable holds the per-block digests of one disk at one restore point:
// Sums[i] is the digest of bytes [i*BlockSize, min((i+1)*BlockSize, DiskSize))
// of the replica at that point.
type DigestTable struct {
	BlockSize int64
	DiskSize  int64
	Sums      []digest.Sum
}

// Len returns the number of blocks.
func (t *DigestTable) Len() int64 { return int64(len(t.Sums)) }

// Sum returns the digest of block i.
func (t *DigestTable) Sum(i int64) digest.Sum { return t.Sums[i] }

// BlockLen returns the length of block i (the last block may be short).
func (t *DigestTable) BlockLen(i int64) int64 { return blockLen(t.DiskSize, t.BlockSize, i) }

func blockCount(size, blockSize int64) int64 {
	n := size / blockSize
	if size%blockSize != 0 {
		n++
	}
	return n
}

func blockLen(size, blockSize, i int64) int64 {
	n := size - i*blockSize
	if n > blockSize {
		n = blockSize
	}
	return n
}

// zeroTable returns the digests of a disk never written: every block zero.
func zeroTable(size, blockSize int64) *DigestTable {
	n := blockCount(size, blockSize)
	t := &DigestTable{BlockSize: blockSize, DiskSize: size, Sums: make([]digest.Sum, n)}
	if n == 0 {
		return t
	}
	full := digest.Zero(int(blockLen(size, blockSize, 0)))
	for i := range t.Sums {
		t.Sums[i] = full
	}
	if last := blockLen(size, blockSize, n-1); last != blockSize {
		t.Sums[n-1] = digest.Zero(int(last))
	}
	return t
}

func (t *DigestTable) header() []byte {
	h := make([]byte, digestHeaderSize)
	copy(h, digestMagic)
	binary.LittleEndian.PutUint64(h[8:], uint64(t.BlockSize))
	binary.LittleEndian.PutUint64(h[16:], uint64(len(t.Sums)))
	binary.LittleEndian.PutUint64(h[24:], uint64(t.DiskSize))
	return h
}

// writeDigestFile writes a whole table to a new file and syncs it.
func writeDigestFile(path string, t *DigestTable) error {
	b := make([]byte, digestHeaderSize+digest.Size*len(t.Sums))
	copy(b, t.header())
	for i, s := range t.Sums {
		copy(b[digestHeaderSize+i*digest.Size:], s[:])
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC|noFollow, 0o600)
	if err != nil {
		return fmt.Errorf("create digests %s: %w", path, err)
	}
	if _, err := f.WriteAt(b, 0); err != nil {
		f.Close()
		return fmt.Errorf("write digests %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync digests %s: %w", path, err)
	}
	return f.Close()
}

// readDigestFile reads and checks a digest file against the disk it describes.
func readDigestFile(path string, diskSize int64) (*DigestTable, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read digests: %w", err)
	}
	return parseDigests(path, b, diskSize)
}

func parseDigests(path string, b []byte, diskSize int64) (*DigestTable, error) {
	if len(b) < digestHeaderSize || string(b[:8]) != digestMagic {
		return nil, fmt.Errorf("digests %s: at byte 0: not a digest file", path)
	}
	t := &DigestTable{
		BlockSize: int64(binary.LittleEndian.Uint64(b[8:])),
		DiskSize:  int64(binary.LittleEndian.Uint64(b[24:])),
	}
	count := binary.LittleEndian.Uint64(b[16:])
	if t.BlockSize <= 0 || t.BlockSize > 1<<30 {
		return nil, fmt.Errorf("digests %s: at byte 8: block size %d out of range", path, t.BlockSize)
	}
	if t.DiskSize != diskSize || diskSize <= 0 {
		return nil, fmt.Errorf("digests %s: at byte 24: disk size %d, the disk has %d", path, t.DiskSize, diskSize)
	}
	if want := blockCount(diskSize, t.BlockSize); count != uint64(want) {
		return nil, fmt.Errorf("digests %s: at byte 16: %d blocks, a disk of %d bytes in blocks of %d has %d", path, count, diskSize, t.BlockSize, want)
	}
	if body := len(b) - digestHeaderSize; body%digest.Size != 0 || uint64(body/digest.Size) != count {
		return nil, fmt.Errorf("digests %s: at byte %d: file is %d bytes, %d blocks need %d more after the header", path, len(b), len(b), count, count*digest.Size)
	}
	t.Sums = make([]digest.Sum, count)
	for i := range t.Sums {
		copy(t.Sums[i][:], b[digestHeaderSize+i*digest.Size:])
	}
	return t, nil
}

// computeTable digests an image block by block; blocks outside its allocated
// extents are known to be zero and are not read.
func computeTable(ctxErr func() error, img interface {
	io.ReaderAt
	Size() int64
}, allocated func(i int64) bool, blockSize int64) (*DigestTable, error) {
	size := img.Size()
	t := zeroTable(size, blockSize)
	buf := make([]byte, blockSize)
	for i := range t.Sums {
		if err := ctxErr(); err != nil {
			return nil, err
		}
		if !allocated(int64(i)) {
			continue
		}
		n := blockLen(size, blockSize, int64(i))
		off := int64(i) * blockSize
		if _, err := img.ReadAt(buf[:n], off); err != nil && !(errors.Is(err, io.EOF) && off+n == size) {
			return nil, fmt.Errorf("read block %d at offset %d: %w", i, off, err)
		}
		t.Sums[i] = digest.Of(buf[:n])
	}
	return t, nil
}
