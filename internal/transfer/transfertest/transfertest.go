// Package transfertest holds what tests of the data channel share: a
// file-backed transfer.Target that keeps each disk as a raw file with its
// digests and a durable position (data fsynced, then the position written to
// a temporary file, fsynced, renamed, directory fsynced), and a file-backed
// disk.Image with explicit allocated extents; and a hand-written client of
// the wire format (wire.go) for tests that send what the product never would.
package transfertest

import (
	"context"
	"crypto/subtle"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/replicator/replicator/internal/digest"
	"github.com/replicator/replicator/internal/disk"
	"github.com/replicator/replicator/internal/transfer"
)

// Target keeps replicas under Dir as <job>/<vm>/<disk>.img, with
// <disk>.sums (the digests of the point being written), <disk>.pos (its
// checkpoint and durable position) and <disk>.prev (block size and digests of
// the newest complete point). A disk can be opened only for a checkpoint
// whose session Begin opened, by a Hello that carries the Target's Token.
type Target struct {
	Dir string
	// Token is the session token every Hello must carry (DefaultToken when empty).
	Token string

	mu     sync.Mutex
	opened int // OpenDisk calls that got past the session check
}

var _ transfer.Target = (*Target)(nil)

// DefaultToken is the session token of a Target whose Token is empty.
const DefaultToken = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// Admit refuses a Hello without the Target's token or without an open session.
func (t *Target) Admit(ctx context.Context, h transfer.Hello, peer string) error {
	want := t.Token
	if want == "" {
		want = DefaultToken
	}
	if subtle.ConstantTimeCompare([]byte(h.Token), []byte(want)) != 1 {
		return fmt.Errorf("%w for checkpoint %s of %s/%s", transfer.ErrBadToken, h.CheckpointID, h.Job, h.VMID)
	}
	if _, err := os.Stat(filepath.Join(t.Dir, h.Job, h.VMID, "session-"+h.CheckpointID)); err != nil {
		return fmt.Errorf("no open restore point for checkpoint %s of %s/%s", h.CheckpointID, h.Job, h.VMID)
	}
	return nil
}

// Begin opens the restore-point session of checkpoint for job/vm.
func (t *Target) Begin(job, vm, checkpoint string) error {
	dir := filepath.Join(t.Dir, job, vm)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "session-"+checkpoint), nil, 0o644)
}

// Opened counts the disks opened so far.
func (t *Target) Opened() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.opened
}

// Path returns the file of h's disk with the given extension (img, sums, pos, prev).
func (t *Target) Path(h transfer.Hello, ext string) string {
	return filepath.Join(t.Dir, h.Job, h.VMID, h.DiskID+"."+ext)
}

type position struct {
	Checkpoint string `json:"checkpoint"`
	Position   int64  `json:"position"`
	Complete   bool   `json:"complete"`
}

// OpenDisk opens or creates the disk's raw file, sized to the disk.
func (t *Target) OpenDisk(ctx context.Context, h transfer.Hello, peer string) (transfer.Sink, error) {
	dir := filepath.Join(t.Dir, h.Job, h.VMID)
	if _, err := os.Stat(filepath.Join(dir, "session-"+h.CheckpointID)); err != nil {
		return nil, fmt.Errorf("no open restore point for checkpoint %s of %s/%s", h.CheckpointID, h.Job, h.VMID)
	}
	t.mu.Lock()
	t.opened++
	t.mu.Unlock()
	var pos position
	if b, err := os.ReadFile(t.Path(h, "pos")); err == nil {
		if err := json.Unmarshal(b, &pos); err != nil {
			return nil, fmt.Errorf("read %s: %w", t.Path(h, "pos"), err)
		}
	}
	if pos.Checkpoint != h.CheckpointID {
		// A new point starts from the previous point's digests.
		pos = position{Checkpoint: h.CheckpointID}
		sums := make([]byte, 0)
		if b, err := os.ReadFile(t.Path(h, "prev")); err == nil && len(b) >= 8 {
			sums = b[8:]
		}
		if err := os.WriteFile(t.Path(h, "sums"), sums, 0o644); err != nil {
			return nil, err
		}
	}
	img, err := os.OpenFile(t.Path(h, "img"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if st, err := img.Stat(); err == nil && st.Size() < h.DiskSize {
		if err := img.Truncate(h.DiskSize); err != nil {
			img.Close()
			return nil, err
		}
	}
	sums, err := os.OpenFile(t.Path(h, "sums"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		img.Close()
		return nil, err
	}
	return &Sink{t: t, h: h, img: img, sums: sums, pos: pos, pending: map[int64]digest.Sum{}}, nil
}

// Digests returns the newest complete point's digests.
func (t *Target) Digests(ctx context.Context, h transfer.Hello) (int64, []digest.Sum, error) {
	b, err := os.ReadFile(t.Path(h, "prev"))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil, transfer.ErrNoDigests
	}
	if err != nil {
		return 0, nil, err
	}
	if len(b) < 8 || (len(b)-8)%digest.Size != 0 {
		return 0, nil, fmt.Errorf("%s: %d bytes is not a digest table", t.Path(h, "prev"), len(b))
	}
	bs := int64(binary.BigEndian.Uint64(b))
	sums := make([]digest.Sum, (len(b)-8)/digest.Size)
	for i := range sums {
		copy(sums[i][:], b[8+i*digest.Size:])
	}
	return bs, sums, nil
}

// ReadSums returns the digests of the point being written.
func (t *Target) ReadSums(h transfer.Hello) ([]digest.Sum, error) {
	b, err := os.ReadFile(t.Path(h, "sums"))
	if err != nil {
		return nil, err
	}
	sums := make([]digest.Sum, len(b)/digest.Size)
	for i := range sums {
		copy(sums[i][:], b[i*digest.Size:])
	}
	return sums, nil
}

// Sink is one open disk of Target.
type Sink struct {
	t       *Target
	h       transfer.Hello
	img     *os.File
	sums    *os.File
	pos     position
	pending map[int64]digest.Sum
}

func (s *Sink) WriteAt(p []byte, off int64) (int, error) { return s.img.WriteAt(p, off) }
func (s *Sink) Position() int64                          { return s.pos.Position }
func (s *Sink) ReadAt(p []byte, off int64) (int, error)  { return s.img.ReadAt(p, off) }
func (s *Sink) SetDigest(i int64, d digest.Sum)          { s.pending[i] = d }

// Persist writes the pending digests, fsyncs data and digests, then records
// the position atomically and durably.
func (s *Sink) Persist(pos int64) error {
	for i, d := range s.pending {
		if _, err := s.sums.WriteAt(d[:], i*digest.Size); err != nil {
			return err
		}
	}
	clear(s.pending)
	if err := s.img.Sync(); err != nil {
		return err
	}
	if err := s.sums.Sync(); err != nil {
		return err
	}
	p := s.pos
	p.Position = pos
	if err := s.writePos(p); err != nil {
		return err
	}
	s.pos = p
	return nil
}

// Complete records the point as complete and its digests as the newest
// complete point's.
func (s *Sink) Complete() error {
	if s.pos.Position != s.h.DiskSize {
		return fmt.Errorf("complete at position %d of %d", s.pos.Position, s.h.DiskSize)
	}
	sums, err := io.ReadAll(io.NewSectionReader(s.sums, 0, 1<<40))
	if err != nil {
		return err
	}
	prev := binary.BigEndian.AppendUint64(nil, uint64(s.h.BlockSize))
	if err := writeFileDurably(s.t.Path(s.h, "prev"), append(prev, sums...)); err != nil {
		return err
	}
	p := s.pos
	p.Complete = true
	if err := s.writePos(p); err != nil {
		return err
	}
	s.pos = p
	return nil
}

func (s *Sink) Close() error {
	return errors.Join(s.img.Close(), s.sums.Close())
}

func (s *Sink) writePos(p position) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return writeFileDurably(s.t.Path(s.h, "pos"), b)
}

func writeFileDurably(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if runtime.GOOS == "windows" {
		return nil // directories cannot be flushed there
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Image is a file read as a disk, with the allocated extents it is given.
type Image struct {
	f         *os.File
	size      int64
	allocated []disk.Extent
}

var _ disk.Image = (*Image)(nil)

// OpenImage opens path as a disk image; allocated nil means the whole file.
func OpenImage(path string, allocated []disk.Extent) (*Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if allocated == nil {
		allocated = []disk.Extent{{Offset: 0, Length: st.Size()}}
	}
	return &Image{f: f, size: st.Size(), allocated: allocated}, nil
}

func (m *Image) ReadAt(p []byte, off int64) (int, error) { return m.f.ReadAt(p, off) }
func (m *Image) Close() error                            { return m.f.Close() }
func (m *Image) Size() int64                             { return m.size }
func (m *Image) SectorSize() int                         { return 512 }
func (m *Image) Allocated() []disk.Extent                { return m.allocated }
