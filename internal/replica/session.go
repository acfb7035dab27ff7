package replica

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"sync"

	"github.com/replicator/replicator/internal/digest"
)

// Session is the restore point being written by a run.
type Session struct {
	w       *Writer
	pointID string
	resumed bool
	open    map[string]*DiskWriter // guarded by w.mu
	done    bool                   // committed or replaced; guarded by w.mu
}

// PointID returns the id the restore point will have once committed.
func (s *Session) PointID() string { return s.pointID }

// Resumed reports whether the session continues one an earlier run left open.
func (s *Session) Resumed() bool { return s.resumed }

func (s *Session) record() (*sessionRecord, error) {
	if s.done || s.w.closed {
		return nil, fmt.Errorf("restore point %s: session is no longer open", s.pointID)
	}
	r := s.w.meta.Session
	if r == nil || r.PointID != s.pointID {
		return nil, fmt.Errorf("restore point %s: session is no longer open", s.pointID)
	}
	return r, nil
}

// Disk opens one disk of the session for writing.
func (s *Session) Disk(diskID string) (*DiskWriter, error) {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	rec, err := s.record()
	if err != nil {
		return nil, err
	}
	d := rec.disk(diskID)
	if d == nil {
		return nil, fmt.Errorf("restore point %s: no disk %q in the session", s.pointID, diskID)
	}
	if s.open[diskID] != nil {
		return nil, fmt.Errorf("restore point %s: disk %s is already open", s.pointID, diskID)
	}
	l := s.w.l
	img, err := s.w.format.openWritable(l.chainPaths(d.ID, d.Chain))
	if err != nil {
		return nil, fmt.Errorf("restore point %s disk %s: open %s: %w", s.pointID, d.ID, l.vhdx(d.ID, d.Chain[0]), err)
	}
	sumPath := l.sums(d.ID, d.Digests)
	table, err := readDigestFile(sumPath, d.Size)
	if err != nil {
		img.Close()
		return nil, fmt.Errorf("restore point %s disk %s: %w", s.pointID, d.ID, err)
	}
	if table.BlockSize != rec.BlockSize {
		img.Close()
		return nil, fmt.Errorf("restore point %s disk %s: digests %s have block size %d, the session %d", s.pointID, d.ID, sumPath, table.BlockSize, rec.BlockSize)
	}
	sf, err := os.OpenFile(sumPath, os.O_RDWR|noFollow, 0)
	if err != nil {
		img.Close()
		return nil, fmt.Errorf("restore point %s disk %s: open digests: %w", s.pointID, d.ID, err)
	}
	dw := &DiskWriter{
		ses: s, id: d.ID, size: d.Size, blockSize: rec.BlockSize,
		img: img, sumFile: sf, sumPath: sumPath, table: table,
		dirty: map[int64]bool{}, computed: map[int64]bool{}, unknown: map[int64]bool{},
		position: d.Position, complete: d.Complete,
	}
	s.open[diskID] = dw
	return dw, nil
}

func (s *Session) closeDisks() error {
	var errs []error
	for _, dw := range s.open {
		errs = append(errs, dw.closeFiles())
	}
	s.open = map[string]*DiskWriter{}
	return errors.Join(errs...)
}

// Commit makes the session a restore point once every disk is complete: all
// its files are synced, then one metadata write lists the point. Disks still
// open are closed.
func (s *Session) Commit(ctx context.Context) (Point, error) {
	w := s.w
	w.mu.Lock()
	defer w.mu.Unlock()
	rec, err := s.record()
	if err != nil {
		return Point{}, err
	}
	var missing []string
	for _, d := range rec.Disks {
		if !d.Complete {
			missing = append(missing, fmt.Sprintf("%s at byte %d of %d", d.ID, d.Position, d.Size))
		}
	}
	if len(missing) > 0 {
		return Point{}, fmt.Errorf("commit restore point %s: disks not complete: %v", s.pointID, missing)
	}
	if err := s.closeDisks(); err != nil {
		return Point{}, fmt.Errorf("commit restore point %s: %w", s.pointID, err)
	}
	for _, d := range rec.Disks {
		if err := ctx.Err(); err != nil {
			return Point{}, err
		}
		for _, p := range []string{w.l.vhdx(d.ID, d.Chain[0]), w.l.sums(d.ID, d.Digests)} {
			if err := syncFile(p); err != nil {
				return Point{}, fmt.Errorf("commit restore point %s: %w", s.pointID, err)
			}
		}
	}
	t := rec.CheckpointTime
	if t.IsZero() {
		t = rec.Started
	}
	pr := pointRecord{
		ID: rec.PointID, Time: t, RunID: rec.RunID, CheckpointID: rec.CheckpointID,
		ChangeTracking: rec.ChangeTracking, BlockSize: rec.BlockSize, Exclusions: rec.Exclusions,
	}
	for _, d := range rec.Disks {
		pr.Disks = append(pr.Disks, d.pointDiskRecord)
	}
	err = w.update(func(m *metadata) error {
		pr.Config = m.VM.Config
		m.Points = append(m.Points, pr)
		m.Session = nil
		return nil
	})
	if err != nil {
		return Point{}, fmt.Errorf("commit restore point %s: %w", s.pointID, err)
	}
	s.done = true
	w.ses = nil
	return w.r.describe(string(w.l), &pr), nil
}

// DiskWriter writes one disk of an open restore point. Write blocks with
// WriteAt (whole blocks are digested as they are written; SetDigest gives or
// checks the digest of a block), then Persist a position: once Persist
// returns, everything written below it survives a crash and the next run
// resumes there. One goroutine per DiskWriter.
type DiskWriter struct {
	ses       *Session
	id        string
	size      int64
	blockSize int64
	img       writableDisk
	sumFile   *os.File
	sumPath   string

	mu       sync.Mutex
	table    *DigestTable
	dirty    map[int64]bool // digest changed since the last Persist
	computed map[int64]bool // digest of a whole block written, computed here or checked by the caller (WriteBlock)
	unknown  map[int64]bool // partly written: digest to be read back at Persist
	position int64
	complete bool
	closed   bool
	// rejected is the first digest refused: until the disk is reopened no
	// position is acknowledged past bytes the source did not send.
	rejected error
	// unflushed counts bytes written since writeback was last started.
	unflushed int64
}

// writebackBytes is how much a DiskWriter writes between two requests to
// start writing back (see vhdx.Disk.StartWriteback): Persist's fsync then
// waits for the last few MiB instead of everything since the last Persist,
// and the storage writes while the next blocks arrive.
const writebackBytes = 8 << 20

// ID returns the disk id.
func (dw *DiskWriter) ID() string { return dw.id }

// Size returns the virtual size of the disk.
func (dw *DiskWriter) Size() int64 { return dw.size }

// BlockSize returns the digest block size of the session.
func (dw *DiskWriter) BlockSize() int64 { return dw.blockSize }

// Position returns the durable resume position: the disk's size once complete.
func (dw *DiskWriter) Position() int64 {
	dw.mu.Lock()
	defer dw.mu.Unlock()
	return dw.position
}

// IsComplete reports whether the disk is complete in the session.
func (dw *DiskWriter) IsComplete() bool {
	dw.mu.Lock()
	defer dw.mu.Unlock()
	return dw.complete
}

// WriteAt writes p at byte off of the disk; the range must lie inside it.
func (dw *DiskWriter) WriteAt(p []byte, off int64) (int, error) {
	return dw.write(p, off, nil)
}

// WriteBlock writes block i whole: p must be exactly its bytes, and sum the
// digest of p, which the caller computed over these very bytes (the agent
// checks every frame's digest before it writes the frame). The digest is
// recorded as WriteAt would record it, without digesting p a second time.
func (dw *DiskWriter) WriteBlock(i int64, p []byte, sum digest.Sum) error {
	if i < 0 || i*dw.blockSize >= dw.size || int64(len(p)) != blockLen(dw.size, dw.blockSize, i) {
		return fmt.Errorf("write disk %s block %d: %d bytes, the block is not that (block size %d, disk %d bytes)", dw.id, i, len(p), dw.blockSize, dw.size)
	}
	_, err := dw.write(p, i*dw.blockSize, &sum)
	return err
}

// write is WriteAt; sum, when not nil, is the digest of p, which is then
// exactly one block.
func (dw *DiskWriter) write(p []byte, off int64, sum *digest.Sum) (int, error) {
	dw.mu.Lock()
	defer dw.mu.Unlock()
	if err := dw.writable(); err != nil {
		return 0, err
	}
	end := off + int64(len(p))
	if off < 0 || end > dw.size || end < off {
		return 0, fmt.Errorf("write disk %s at offset %d length %d: outside the disk (%d bytes)", dw.id, off, len(p), dw.size)
	}
	if len(p) == 0 {
		return 0, nil
	}
	n, err := dw.img.WriteAt(p, off)
	if err != nil {
		return n, fmt.Errorf("write disk %s at offset %d: %w", dw.id, off, err)
	}
	if dw.unflushed += int64(n); dw.unflushed >= writebackBytes {
		dw.unflushed = 0
		if wb, ok := dw.img.(interface{ StartWriteback() error }); ok {
			// Only a hint: a failure to write shows at the next Persist's sync.
			_ = wb.StartWriteback()
		}
	}
	bs := dw.blockSize
	for b := off / bs; b*bs < end; b++ {
		start, stop := b*bs, b*bs+blockLen(dw.size, bs, b)
		if start >= off && stop <= end {
			if sum != nil {
				dw.table.Sums[b] = *sum
			} else {
				dw.table.Sums[b] = digest.Of(p[start-off : stop-off])
			}
			dw.computed[b] = true
			delete(dw.unknown, b)
		} else {
			dw.unknown[b] = true
			delete(dw.computed, b)
		}
		dw.dirty[b] = true
	}
	return n, nil
}

// ReadAt reads the disk as this restore point holds it so far: what was
// written since it was opened, the rest from the points it is based on.
func (dw *DiskWriter) ReadAt(p []byte, off int64) (int, error) {
	dw.mu.Lock()
	defer dw.mu.Unlock()
	if dw.closed {
		return 0, fmt.Errorf("disk %s: writer is closed", dw.id)
	}
	if off < 0 || off > dw.size {
		return 0, fmt.Errorf("read disk %s at offset %d: outside the disk (%d bytes)", dw.id, off, dw.size)
	}
	want := len(p)
	if rest := dw.size - off; int64(want) > rest {
		p = p[:rest]
	}
	n, err := dw.img.ReadAt(p, off)
	if err == nil && n < want {
		err = io.EOF
	}
	return n, err
}

func (dw *DiskWriter) writable() error {
	if dw.closed {
		return fmt.Errorf("disk %s: writer is closed", dw.id)
	}
	if dw.complete {
		return fmt.Errorf("disk %s: already complete in restore point %s", dw.id, dw.ses.pointID)
	}
	return nil
}

// SetDigest records the digest the source computed for block i. For a block
// written whole since it was opened, a different digest is an error: the
// bytes written are not the bytes the source read. After a refused digest,
// Persist and Complete fail: reopen the disk and resend from its position.
func (dw *DiskWriter) SetDigest(i int64, d digest.Sum) error {
	dw.mu.Lock()
	defer dw.mu.Unlock()
	if err := dw.writable(); err != nil {
		return err
	}
	if i < 0 || i >= dw.table.Len() {
		return dw.reject(fmt.Errorf("disk %s: digest of block %d: the disk has %d blocks", dw.id, i, dw.table.Len()))
	}
	if dw.computed[i] && dw.table.Sums[i] != d {
		return dw.reject(fmt.Errorf("disk %s block %d at offset %d: digest from the source %s differs from the bytes written %s", dw.id, i, i*dw.blockSize, d, dw.table.Sums[i]))
	}
	dw.table.Sums[i] = d
	dw.dirty[i] = true
	delete(dw.unknown, i)
	return nil
}

func (dw *DiskWriter) reject(err error) error {
	if dw.rejected == nil {
		dw.rejected = err
	}
	return err
}

// Persist makes the disk durable up to pos: the disk's data and allocation
// are synced, then its digests, then pos is written to the metadata. Only
// when Persist returns is pos acknowledged. On a complete disk it does
// nothing and succeeds.
func (dw *DiskWriter) Persist(pos int64) error { return dw.persist(pos, false) }

// Complete persists the whole disk and marks it complete in the session.
func (dw *DiskWriter) Complete() error { return dw.persist(dw.size, true) }

// persist syncs under the disk's lock, then records the position under the
// writer's lock (never both at once: the writer's lock comes first elsewhere).
func (dw *DiskWriter) persist(pos int64, complete bool) error {
	if dw.IsComplete() {
		// Everything is durable already; a retried Done persists again.
		return nil
	}
	if err := dw.syncUpTo(pos); err != nil {
		return err
	}
	w := dw.ses.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, err := dw.ses.record(); err != nil {
		return err
	}
	err := w.update(func(m *metadata) error {
		d := m.Session.disk(dw.id)
		d.Position = pos
		d.Complete = complete
		return nil
	})
	if err != nil {
		return fmt.Errorf("persist disk %s position %d: %w", dw.id, pos, err)
	}
	dw.mu.Lock()
	dw.position = pos
	dw.complete = complete
	dw.mu.Unlock()
	return nil
}

func (dw *DiskWriter) syncUpTo(pos int64) error {
	dw.mu.Lock()
	defer dw.mu.Unlock()
	if err := dw.writable(); err != nil {
		return err
	}
	if dw.rejected != nil {
		return fmt.Errorf("persist disk %s: %w", dw.id, dw.rejected)
	}
	if pos < 0 || pos > dw.size {
		return fmt.Errorf("persist disk %s: position %d outside the disk (%d bytes)", dw.id, pos, dw.size)
	}
	for _, b := range slices.Sorted(maps.Keys(dw.unknown)) {
		n := blockLen(dw.size, dw.blockSize, b)
		buf := make([]byte, n)
		if _, err := dw.img.ReadAt(buf, b*dw.blockSize); err != nil && !(errors.Is(err, io.EOF) && b*dw.blockSize+n == dw.size) {
			return fmt.Errorf("persist disk %s: read back block %d at offset %d: %w", dw.id, b, b*dw.blockSize, err)
		}
		dw.table.Sums[b] = digest.Of(buf)
		delete(dw.unknown, b)
	}
	if err := dw.img.Sync(); err != nil {
		return fmt.Errorf("persist disk %s: sync data: %w", dw.id, err)
	}
	for _, b := range slices.Sorted(maps.Keys(dw.dirty)) {
		s := dw.table.Sums[b]
		off := digestHeaderSize + b*digest.Size
		if _, err := dw.sumFile.WriteAt(s[:], off); err != nil {
			return fmt.Errorf("persist disk %s: write digests %s at offset %d: %w", dw.id, dw.sumPath, off, err)
		}
	}
	if err := dw.sumFile.Sync(); err != nil {
		return fmt.Errorf("persist disk %s: sync digests %s: %w", dw.id, dw.sumPath, err)
	}
	dw.dirty = map[int64]bool{}
	return nil
}

// Close closes the disk's files. What was not persisted is lost; the durable
// position stays.
func (dw *DiskWriter) Close() error {
	w := dw.ses.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if dw.ses.open[dw.id] == dw {
		delete(dw.ses.open, dw.id)
	}
	return dw.closeFiles()
}

func (dw *DiskWriter) closeFiles() error {
	dw.mu.Lock()
	defer dw.mu.Unlock()
	if dw.closed {
		return nil
	}
	dw.closed = true
	return errors.Join(dw.img.Close(), dw.sumFile.Close())
}
