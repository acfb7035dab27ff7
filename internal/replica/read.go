package replica

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/replicator/replicator/internal/atomicfile"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/digest"
	"github.com/replicator/replicator/internal/disk"
	"github.com/replicator/replicator/internal/zeros"
)

// Point is a complete restore point.
type Point struct {
	ID   string    `json:"id"`
	Time time.Time `json:"time"` // when the source froze the data

	Complete       bool        `json:"complete"`
	Size           int64       `json:"size"` // bytes the point's own files hold on the datastore
	CheckpointID   string      `json:"checkpointId"`
	ChangeTracking string      `json:"changeTracking"`
	BlockSize      int64       `json:"blockSize"`
	Disks          []PointDisk `json:"disks"`
	// Exclusions is what the point was made without (nil: not recorded).
	Exclusions *contract.Exclusions `json:"exclusions,omitempty"`
}

// PointDisk is one disk of a restore point.
type PointDisk struct {
	ID          string `json:"id"`
	VirtualSize int64  `json:"virtualSize"`
	SectorSize  int    `json:"sectorSize"`
	StoredSize  int64  `json:"storedSize"` // size of the point's own VHDX file
	File        string `json:"file"`       // the point's own VHDX file
}

func (r *Replica) describe(dir string, p *pointRecord) Point {
	l := layout(dir)
	pt := Point{ID: p.ID, Time: p.Time, Complete: true, CheckpointID: p.CheckpointID,
		ChangeTracking: p.ChangeTracking, BlockSize: p.BlockSize, Exclusions: p.Exclusions}
	for _, d := range p.Disks {
		pd := PointDisk{ID: d.ID, VirtualSize: d.Size, SectorSize: d.SectorSize, File: l.vhdx(d.ID, d.Chain[0])}
		if fi, err := os.Stat(pd.File); err == nil {
			pd.StoredSize = fi.Size()
		}
		pt.Size += pd.StoredSize
		pt.Disks = append(pt.Disks, pd)
	}
	return pt
}

// Points lists the complete restore points, oldest first. A point being
// written is never listed.
func (r *Replica) Points() ([]Point, error) {
	dir, m, err := r.load()
	if err != nil {
		return nil, err
	}
	pts := make([]Point, 0, len(m.Points))
	for i := range m.Points {
		pts = append(pts, r.describe(dir, &m.Points[i]))
	}
	return pts, nil
}

// ErrNoPoint is returned for a restore point that is not listed.
var ErrNoPoint = errors.New("no such restore point")

// findPoint returns the point pointID ("" = newest) and the metadata.
func (r *Replica) findPoint(pointID string) (layout, *metadata, *pointRecord, error) {
	dir, m, err := r.load()
	if err != nil {
		return "", nil, nil, err
	}
	if len(m.Points) == 0 {
		return "", nil, nil, fmt.Errorf("replica %s has no complete restore point: %w", dir, ErrNoPoint)
	}
	if pointID == "" {
		return layout(dir), m, &m.Points[len(m.Points)-1], nil
	}
	_, p := m.point(pointID)
	if p == nil {
		return "", nil, nil, fmt.Errorf("replica %s: restore point %q: %w", dir, pointID, ErrNoPoint)
	}
	return layout(dir), m, p, nil
}

func pointDisk(p *pointRecord, diskID string) (*pointDiskRecord, error) {
	d := p.disk(diskID)
	if d == nil {
		return nil, fmt.Errorf("restore point %s has no disk %q", p.ID, diskID)
	}
	return d, nil
}

// lockForRead keeps retention merges out while files of listed points are
// read (see readersLock).
func (r *Replica) lockForRead(ctx context.Context) (*readersLock, error) {
	d, err := r.dir(false)
	if err != nil {
		return nil, err
	}
	return lockReaders(ctx, layout(d).readers(), false)
}

// Digests returns the per-block digests of one disk at a point ("" = newest).
func (r *Replica) Digests(pointID, diskID string) (*DigestTable, error) {
	rl, err := r.lockForRead(context.Background())
	if err != nil {
		return nil, err
	}
	defer rl.release()
	l, _, p, err := r.findPoint(pointID)
	if err != nil {
		return nil, err
	}
	d, err := pointDisk(p, diskID)
	if err != nil {
		return nil, err
	}
	t, err := readDigestFile(l.sums(d.ID, d.Digests), d.Size)
	if err != nil {
		return nil, fmt.Errorf("restore point %s disk %s: %w", p.ID, d.ID, err)
	}
	return t, nil
}

// OpenPoint returns a read-only view of one disk at a point ("" = newest).
// Until it is closed, retention merges wait.
func (r *Replica) OpenPoint(pointID, diskID string) (disk.Image, error) {
	rl, err := r.lockForRead(context.Background())
	if err != nil {
		return nil, err
	}
	l, m, p, err := r.findPoint(pointID)
	if err != nil {
		rl.release()
		return nil, err
	}
	d, err := pointDisk(p, diskID)
	if err != nil {
		rl.release()
		return nil, err
	}
	img, err := r.openChain(l, m, p, d)
	if err != nil {
		rl.release()
		return nil, err
	}
	return &lockedImage{Image: img, lock: rl}, nil
}

// lockedImage releases the readers lock when closed.
type lockedImage struct {
	disk.Image
	lock *readersLock
}

func (i *lockedImage) Close() error {
	err := i.Image.Close()
	i.lock.release()
	return err
}

func (r *Replica) openChain(l layout, m *metadata, p *pointRecord, d *pointDiskRecord) (disk.Image, error) {
	chain := l.chainPaths(d.ID, d.Chain)
	for i, f := range chain {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("restore point %s disk %s: chain member %d of %d (%s) is missing: %w", p.ID, d.ID, i+1, len(chain), f, err)
		}
	}
	img, err := r.store.format.openReadOnly(chain, m.Merge != nil)
	if err != nil {
		return nil, fmt.Errorf("restore point %s disk %s: open %s: %w", p.ID, d.ID, chain[0], err)
	}
	if img.Size() != d.Size {
		img.Close()
		return nil, fmt.Errorf("restore point %s disk %s: %s has %d bytes, the replica records %d", p.ID, d.ID, chain[0], img.Size(), d.Size)
	}
	return img, nil
}

// VerifyReport is the result of re-reading a restore point.
type VerifyReport struct {
	Job   string       `json:"job"`
	VMID  string       `json:"vmId"`
	Point string       `json:"point"`
	OK    bool         `json:"ok"`
	Disks []VerifyDisk `json:"disks"`
}

// VerifyDisk is the result for one disk.
type VerifyDisk struct {
	ID         string    `json:"id"`
	Blocks     int64     `json:"blocks"`
	BytesRead  int64     `json:"bytesRead"`
	Mismatches int64     `json:"mismatches"`
	FirstBad   *BadBlock `json:"firstBad,omitempty"`
	Error      string    `json:"error,omitempty"`
}

// BadBlock is a block whose bytes do not match its recorded digest.
type BadBlock struct {
	Index    int64  `json:"index"`
	Offset   int64  `json:"offset"`
	Length   int64  `json:"length"`
	Recorded string `json:"recorded"`
	Read     string `json:"read"`
}

// VerifyError names the first bad block of a verify.
type VerifyError struct {
	Point string
	Disk  string
	Block BadBlock
	Count int64 // mismatching blocks of that disk
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("verify restore point %s disk %s: block %d at offset %d (%d bytes) does not match its digest (recorded %s, read %s); %d bad blocks on this disk",
		e.Point, e.Disk, e.Block.Index, e.Block.Offset, e.Block.Length, e.Block.Recorded, e.Block.Read, e.Count)
}

// Verify re-reads every block of a point ("" = newest) and compares it with
// the recorded digests. The report covers every disk; the error (a
// *VerifyError for a mismatch) names the first bad block.
func (r *Replica) Verify(ctx context.Context, pointID string) (VerifyReport, error) {
	rep := VerifyReport{Job: r.job, VMID: r.vmID}
	rl, err := r.lockForRead(ctx)
	if err != nil {
		return rep, err
	}
	defer rl.release()
	l, m, p, err := r.findPoint(pointID)
	if err != nil {
		return rep, err
	}
	rep.Point = p.ID
	var first error
	for i := range p.Disks {
		d := &p.Disks[i]
		vd, err := r.verifyDisk(ctx, l, m, p, d)
		if err != nil {
			vd.Error = err.Error()
			if first == nil {
				first = err
			}
		}
		rep.Disks = append(rep.Disks, vd)
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
	}
	rep.OK = first == nil
	return rep, first
}

func (r *Replica) verifyDisk(ctx context.Context, l layout, m *metadata, p *pointRecord, d *pointDiskRecord) (VerifyDisk, error) {
	vd := VerifyDisk{ID: d.ID}
	t, err := readDigestFile(l.sums(d.ID, d.Digests), d.Size)
	if err != nil {
		return vd, fmt.Errorf("verify restore point %s disk %s: %w", p.ID, d.ID, err)
	}
	vd.Blocks = t.Len()
	img, err := r.openChain(l, m, p, d)
	if err != nil {
		return vd, fmt.Errorf("verify %w", err)
	}
	defer img.Close()
	alloc := allocatedBlocks(img.Allocated(), t.BlockSize, t.Len())
	var verr *VerifyError
	buf := make([]byte, t.BlockSize)
	zeroFull := digest.Zero(int(t.BlockLen(0)))
	for i := int64(0); i < t.Len(); i++ {
		if err := ctx.Err(); err != nil {
			return vd, err
		}
		n := t.BlockLen(i)
		var got digest.Sum
		if alloc(i) {
			off := i * t.BlockSize
			if _, err := img.ReadAt(buf[:n], off); err != nil && !(errors.Is(err, io.EOF) && off+n == d.Size) {
				return vd, fmt.Errorf("verify restore point %s disk %s: read block %d at offset %d: %w", p.ID, d.ID, i, off, err)
			}
			vd.BytesRead += n
			got = digest.Of(buf[:n])
		} else if n == t.BlockSize {
			got = zeroFull
		} else {
			got = digest.Zero(int(n))
		}
		if got != t.Sums[i] {
			vd.Mismatches++
			if verr == nil {
				verr = &VerifyError{Point: p.ID, Disk: d.ID, Block: BadBlock{Index: i, Offset: i * t.BlockSize, Length: n, Recorded: t.Sums[i].String(), Read: got.String()}}
				vd.FirstBad = &verr.Block
			}
		}
	}
	if verr != nil {
		verr.Count = vd.Mismatches
		return vd, verr
	}
	return vd, nil
}

// allocatedBlocks returns whether block i overlaps an allocated extent.
func allocatedBlocks(ext []disk.Extent, blockSize, count int64) func(int64) bool {
	alloc := make([]bool, count)
	for _, e := range ext {
		if e.Length <= 0 {
			continue
		}
		for b := e.Offset / blockSize; b < count && b*blockSize < e.End(); b++ {
			alloc[b] = true
		}
	}
	return func(i int64) bool { return alloc[i] }
}

// digestImage digests every block of an image.
func digestImage(ctx context.Context, img disk.Image, blockSize int64) (*DigestTable, error) {
	alloc := allocatedBlocks(img.Allocated(), blockSize, blockCount(img.Size(), blockSize))
	return computeTable(ctx.Err, img, alloc, blockSize)
}

// Formats of Materialize.
const (
	FormatRaw  = "raw"
	FormatVHDX = "vhdx"
)

// Materialize writes one disk of a point ("" = newest) to out as a standalone
// disk (raw or dynamic VHDX), what a failover boots from. It writes a
// temporary file beside out and renames it into place when complete; an
// existing out is an error.
func (r *Replica) Materialize(ctx context.Context, pointID, diskID, out, format string) error {
	if format != FormatRaw && format != FormatVHDX {
		return fmt.Errorf("materialize to %s: format %q (raw or vhdx)", out, format)
	}
	if _, err := os.Lstat(out); err == nil {
		return fmt.Errorf("materialize to %s: the file exists; remove it or choose another name", out)
	}
	img, err := r.OpenPoint(pointID, diskID)
	if err != nil {
		return err
	}
	defer img.Close()
	dir := filepath.Dir(out)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return fmt.Errorf("materialize to %s: %w", out, err)
	}
	tmpName := tmp.Name()
	tmp.Close()
	ok := false
	defer func() {
		if !ok {
			os.Remove(tmpName)
		}
	}()
	if err := r.writeStandalone(ctx, img, tmpName, format); err != nil {
		return fmt.Errorf("materialize restore point %s disk %s to %s: %w", pointID, diskID, out, err)
	}
	if _, err := os.Lstat(out); err == nil {
		return fmt.Errorf("materialize to %s: the file appeared meanwhile; not replaced", out)
	}
	if err := os.Rename(tmpName, out); err != nil {
		return fmt.Errorf("materialize to %s: %w", out, err)
	}
	ok = true
	return atomicfile.SyncDir(dir)
}

// copyChunk is the unit of materializing: large enough for throughput,
// small enough to skip zeros inside allocated space.
const copyChunk = 1 << 20

func (r *Replica) writeStandalone(ctx context.Context, img disk.Image, path, format string) error {
	var dst writableDisk
	switch format {
	case FormatRaw:
		f, err := os.OpenFile(path, os.O_RDWR|os.O_TRUNC, 0o644)
		if err != nil {
			return err
		}
		if err := f.Truncate(img.Size()); err != nil {
			f.Close()
			return err
		}
		dst = rawFile{f, img.Size()}
	case FormatVHDX:
		if err := os.Remove(path); err != nil {
			return err
		}
		// An export is the plain disk, whatever the datastore's format.
		d, err := vhdxChain{}.createBase(path, img.Size(), img.SectorSize())
		if err != nil {
			return err
		}
		dst = d
	}
	buf := make([]byte, copyChunk)
	for _, e := range img.Allocated() {
		for off := e.Offset; off < e.End(); {
			if err := ctx.Err(); err != nil {
				dst.Close()
				return err
			}
			n := min(int64(copyChunk)-off%copyChunk, e.End()-off)
			if _, err := img.ReadAt(buf[:n], off); err != nil && !(errors.Is(err, io.EOF) && off+n == img.Size()) {
				dst.Close()
				return fmt.Errorf("read at offset %d: %w", off, err)
			}
			if !zeros.All(buf[:n]) {
				if _, err := dst.WriteAt(buf[:n], off); err != nil {
					dst.Close()
					return fmt.Errorf("write at offset %d: %w", off, err)
				}
			}
			off += n
		}
	}
	if err := dst.Sync(); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}

type rawFile struct {
	*os.File
	size int64
}

func (f rawFile) Size() int64 { return f.size }
