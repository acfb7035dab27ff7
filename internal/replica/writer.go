package replica

import (
	"context"
	"errors"
	"fmt"
	"github.com/replicator/replicator/internal/atomicfile"
	"github.com/replicator/replicator/internal/contract"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Writer is the one writer of a replica. It holds the replica's lock until
// Close. Its methods may be called from several goroutines; a DiskWriter is
// used by one goroutine, different disks in parallel.
type Writer struct {
	r      *Replica
	l      layout
	format chainFormat
	lock   *fileLock

	mu     sync.Mutex // guards everything below and every metadata write
	meta   *metadata  // nil until Prepare on a new replica
	ses    *Session
	closed bool
}

// Lock takes the replica for writing: an exclusive lock on <replica>/lock
// that the kernel releases when its holder exits or dies, so the replica of a
// crashed writer is taken over by the next one. A replica already held, by
// this process or another, gives ErrLocked naming the holder. Taking the lock
// finishes an interrupted retention merge and removes files a crash left
// unreferenced; an open session is kept for Begin to continue or discard.
func (r *Replica) Lock(ctx context.Context, owner string) (*Writer, error) {
	d, err := r.dir(true)
	if err != nil {
		return nil, err
	}
	l := layout(d)
	lk, err := acquireLock(l.lock(), owner)
	if err != nil {
		return nil, err
	}
	w := &Writer{r: r, l: l, format: r.store.format, lock: lk}
	m, err := loadMeta(l.meta())
	switch {
	case errors.Is(err, ErrNoReplica):
	case err != nil:
		lk.release()
		return nil, err
	default:
		w.meta = m
		if err := w.recover(ctx); err != nil {
			lk.release()
			return nil, fmt.Errorf("recover replica %s: %w", d, err)
		}
	}
	return w, nil
}

// Dir returns the replica folder.
func (w *Writer) Dir() string { return string(w.l) }

// Close ends an open session without committing it (its durable positions
// stay for the next run) and releases the lock.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	var errs []error
	if w.ses != nil {
		errs = append(errs, w.ses.closeDisks())
		w.ses = nil
	}
	errs = append(errs, w.lock.release())
	return errors.Join(errs...)
}

func (w *Writer) usable() error {
	if w.closed {
		return errors.New("replica writer is closed")
	}
	return nil
}

// hasReplica is usable for what needs a prepared replica. Called with w.mu
// held.
func (w *Writer) hasReplica() error {
	if err := w.usable(); err != nil {
		return err
	}
	if w.meta == nil {
		return fmt.Errorf("replica %s: %w", w.l, ErrNoReplica)
	}
	return nil
}

// update applies change to a copy of the metadata, writes it atomically and
// only then makes it current. Called with w.mu held.
func (w *Writer) update(change func(m *metadata) error) error {
	m := w.meta.clone()
	if err := change(m); err != nil {
		return err
	}
	if err := saveMeta(w.l.meta(), m); err != nil {
		return err
	}
	w.meta = m
	return nil
}

// recover finishes what a crashed writer left: a recorded merge, a session
// whose files are gone, files nothing refers to. Called with w.mu held or
// before the writer is shared.
func (w *Writer) recover(ctx context.Context) error {
	if w.meta.Merge != nil {
		if err := w.finishMerge(ctx); err != nil {
			return err
		}
	}
	if s := w.meta.Session; s != nil {
		for _, d := range s.Disks {
			for _, p := range []string{w.l.vhdx(d.ID, d.Chain[0]), w.l.sums(d.ID, d.Digests)} {
				if _, err := os.Stat(p); err != nil {
					// The session cannot continue without its files; the next
					// run starts a new point from the last complete one.
					if err := w.update(func(m *metadata) error { m.Session = nil; return nil }); err != nil {
						return err
					}
					return w.collectGarbage()
				}
			}
		}
	}
	return w.collectGarbage()
}

// Prepare records the VM (created on first use, refreshed later). A disk whose
// size or sector size differs from what the replica holds is an error naming
// the disk: its restore points could not describe the new disk.
func (w *Writer) Prepare(vm VMInfo) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return err
	}
	if vm.ID != w.r.vmID {
		return fmt.Errorf("prepare replica %s: VM id %q does not match the replica's %q", w.l, vm.ID, w.r.vmID)
	}
	vm.Disks = append([]DiskInfo(nil), vm.Disks...)
	seen := map[string]bool{}
	for i := range vm.Disks {
		d := &vm.Disks[i]
		if err := CheckName("disk", d.ID); err != nil {
			return fmt.Errorf("prepare replica %s: %w", w.l, err)
		}
		if seen[d.ID] {
			return fmt.Errorf("prepare replica %s: disk %s listed twice", w.l, d.ID)
		}
		seen[d.ID] = true
		if d.SectorSize == 0 {
			d.SectorSize = 512
		}
		if d.SectorSize != 512 && d.SectorSize != 4096 {
			return fmt.Errorf("prepare replica %s: disk %s: sector size %d (512 or 4096)", w.l, d.ID, d.SectorSize)
		}
		if d.Size <= 0 || d.Size%int64(d.SectorSize) != 0 {
			return fmt.Errorf("prepare replica %s: disk %s: size %d is not a positive multiple of the sector size %d", w.l, d.ID, d.Size, d.SectorSize)
		}
	}
	if w.meta == nil {
		m := &metadata{Version: metaVersion, Job: w.r.job, VM: vm, NextSeq: 1}
		if err := saveMeta(w.l.meta(), m); err != nil {
			return err
		}
		w.meta = m
		return nil
	}
	known := map[string]DiskInfo{}
	for _, d := range w.meta.VM.Disks {
		known[d.ID] = d
	}
	if n := len(w.meta.Points); n > 0 {
		for _, d := range w.meta.Points[n-1].Disks {
			known[d.ID] = DiskInfo{ID: d.ID, Size: d.Size, SectorSize: d.SectorSize}
		}
	}
	for _, d := range vm.Disks {
		if k, ok := known[d.ID]; ok {
			if k.Size != d.Size {
				return fmt.Errorf("prepare replica %s: disk %s changed size from %d to %d bytes; its restore points cannot continue (start a new replica)", w.l, d.ID, k.Size, d.Size)
			}
			if k.SectorSize != d.SectorSize {
				return fmt.Errorf("prepare replica %s: disk %s changed sector size from %d to %d", w.l, d.ID, k.SectorSize, d.SectorSize)
			}
		}
	}
	return w.update(func(m *metadata) error { m.VM = vm; return nil })
}

// SessionSpec describes the restore point a run writes.
type SessionSpec struct {
	RunID          string
	CheckpointID   string // the source checkpoint the data comes from
	ChangeTracking string // rct | digest | full
	BlockSize      int64  // digest block size
	// CheckpointTime is when the source froze the data: the restore point's
	// time. Zero means when the session began.
	CheckpointTime time.Time
	// Exclusions is what the point is made without (recorded with it).
	Exclusions *contract.Exclusions
}

// Begin opens the restore point of a run. An open session of the same source
// checkpoint (and block size, and disks) continues where each disk stopped
// (Session.Resumed). An open session of another checkpoint cannot continue,
// its checkpoint being gone: its files are discarded and a new point starts
// from the last complete one.
func (w *Writer) Begin(spec SessionSpec) (*Session, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return nil, err
	}
	if w.meta == nil {
		return nil, fmt.Errorf("begin restore point in %s: the replica is not prepared", w.l)
	}
	if l := w.meta.lifecycle(); l.State != StateReady {
		// A replica VM runs on the replica's points: replication never
		// writes it until it is ready again.
		return nil, &StateError{Job: w.r.job, VM: w.meta.VM.Name, State: l.State, Since: l.Since, Operation: "replication", Want: []State{StateReady}}
	}
	if spec.CheckpointID == "" {
		return nil, fmt.Errorf("begin restore point in %s: no source checkpoint id", w.l)
	}
	if spec.BlockSize <= 0 || spec.BlockSize%512 != 0 || spec.BlockSize > 1<<30 {
		return nil, fmt.Errorf("begin restore point in %s: block size %d is not a multiple of 512 up to 1 GiB", w.l, spec.BlockSize)
	}
	if len(w.meta.VM.Disks) == 0 {
		return nil, fmt.Errorf("begin restore point in %s: the VM has no disks", w.l)
	}
	if w.ses != nil {
		if len(w.ses.open) > 0 {
			return nil, fmt.Errorf("begin restore point in %s: session %s still has disks open", w.l, w.ses.pointID)
		}
		w.ses.done = true
		w.ses = nil
	}
	if w.meta.Merge != nil {
		if err := w.finishMerge(context.Background()); err != nil {
			return nil, err
		}
	}
	if s := w.meta.Session; s != nil {
		if s.CheckpointID == spec.CheckpointID && s.BlockSize == spec.BlockSize && sameDisks(s, w.meta.VM.Disks) {
			w.ses = &Session{w: w, pointID: s.PointID, resumed: true, open: map[string]*DiskWriter{}}
			return w.ses, nil
		}
		if err := w.discardSession(); err != nil {
			return nil, err
		}
	}
	return w.newSession(spec)
}

func sameDisks(s *sessionRecord, disks []DiskInfo) bool {
	if len(s.Disks) != len(disks) {
		return false
	}
	for _, d := range disks {
		sd := s.disk(d.ID)
		if sd == nil || sd.Size != d.Size || sd.SectorSize != d.SectorSize {
			return false
		}
	}
	return true
}

// discardSession forgets the open session, then removes its files.
func (w *Writer) discardSession() error {
	if err := w.update(func(m *metadata) error { m.Session = nil; return nil }); err != nil {
		return err
	}
	return w.collectGarbage()
}

func (w *Writer) newSession(spec SessionSpec) (*Session, error) {
	now := time.Now().UTC()
	pointID := fmt.Sprintf("%s-%04d", now.Format("20060102T150405Z"), w.meta.NextSeq)
	rec := &sessionRecord{
		PointID: pointID, RunID: spec.RunID, CheckpointID: spec.CheckpointID,
		ChangeTracking: spec.ChangeTracking, BlockSize: spec.BlockSize, Started: now,
		CheckpointTime: spec.CheckpointTime.UTC(), Exclusions: spec.Exclusions,
	}
	if spec.CheckpointTime.IsZero() {
		rec.CheckpointTime = now
	}
	var prev *pointRecord
	if n := len(w.meta.Points); n > 0 {
		prev = &w.meta.Points[n-1]
	}
	file := pointID + ".vhdx"
	sums := pointID + ".sum"
	for _, d := range w.meta.VM.Disks {
		diskDir, err := resolveWithin(string(w.l), true, "disks", d.ID)
		if err != nil {
			return nil, err
		}
		sumDir, err := resolveWithin(string(w.l), true, "digests", d.ID)
		if err != nil {
			return nil, err
		}
		path := filepath.Join(diskDir, file)
		var pd *pointDiskRecord
		if prev != nil {
			pd = prev.disk(d.ID)
		}
		// The sequence number is new, so a file of that name is a leftover
		// of a crash before the session was recorded.
		for _, p := range []string{path, filepath.Join(sumDir, sums)} {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("remove leftover %s: %w", p, err)
			}
		}
		chain := []string{file}
		var table *DigestTable
		var img writableDisk
		if pd == nil {
			img, err = w.format.createBase(path, d.Size, d.SectorSize)
			if err != nil {
				return nil, fmt.Errorf("create base disk %s: %w", path, err)
			}
			table = zeroTable(d.Size, spec.BlockSize)
		} else {
			chain = append(chain, pd.Chain...)
			img, err = w.format.createChild(path, w.l.vhdx(d.ID, pd.Chain[0]), d.Size, d.SectorSize)
			if err != nil {
				return nil, fmt.Errorf("create differencing disk %s: %w", path, err)
			}
			table, err = w.inheritDigests(prev, pd, spec.BlockSize)
			if err != nil {
				img.Close()
				return nil, err
			}
		}
		if err := img.Sync(); err != nil {
			img.Close()
			return nil, fmt.Errorf("sync %s: %w", path, err)
		}
		if err := img.Close(); err != nil {
			return nil, fmt.Errorf("close %s: %w", path, err)
		}
		if err := writeDigestFile(filepath.Join(sumDir, sums), table); err != nil {
			return nil, err
		}
		if err := atomicfile.SyncDir(diskDir); err != nil {
			return nil, err
		}
		if err := atomicfile.SyncDir(sumDir); err != nil {
			return nil, err
		}
		rec.Disks = append(rec.Disks, sessionDiskRecord{pointDiskRecord: pointDiskRecord{
			ID: d.ID, Size: d.Size, SectorSize: d.SectorSize, Chain: chain, Digests: sums,
		}})
	}
	err := w.update(func(m *metadata) error {
		m.NextSeq++
		m.Session = rec
		return nil
	})
	if err != nil {
		return nil, err
	}
	w.ses = &Session{w: w, pointID: pointID, open: map[string]*DiskWriter{}}
	return w.ses, nil
}

// inheritDigests starts the digests of a new point from the previous point's:
// blocks the run does not write keep the previous bytes. With another block
// size the previous point is read and digested anew.
func (w *Writer) inheritDigests(prev *pointRecord, pd *pointDiskRecord, blockSize int64) (*DigestTable, error) {
	if prev.BlockSize == blockSize {
		t, err := readDigestFile(w.l.sums(pd.ID, pd.Digests), pd.Size)
		if err != nil {
			return nil, fmt.Errorf("point %s disk %s: %w", prev.ID, pd.ID, err)
		}
		if t.BlockSize == blockSize {
			return t, nil
		}
	}
	img, err := w.format.openReadOnly(w.l.chainPaths(pd.ID, pd.Chain), w.meta.Merge != nil)
	if err != nil {
		return nil, fmt.Errorf("point %s disk %s: open chain: %w", prev.ID, pd.ID, err)
	}
	defer img.Close()
	t, err := digestImage(context.Background(), img, blockSize)
	if err != nil {
		return nil, fmt.Errorf("point %s disk %s: %w", prev.ID, pd.ID, err)
	}
	return t, nil
}

// Session returns the open session of this writer, if any.
func (w *Writer) Session() (*Session, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ses, w.ses != nil
}

// OpenSession describes the session replica.json records as open: what a
// run that finds it can continue.
type OpenSession struct {
	PointID      string
	RunID        string
	CheckpointID string
	BlockSize    int64
	Positions    map[string]int64
	Complete     map[string]bool
	// TokenHash is the hex SHA-256 of the session's data-channel token
	// ("" when none was set).
	TokenHash string
}

// OpenSession returns the open session recorded in the metadata, if any.
func (w *Writer) OpenSession() (OpenSession, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.meta == nil || w.meta.Session == nil {
		return OpenSession{}, false
	}
	s := w.meta.Session
	o := OpenSession{PointID: s.PointID, RunID: s.RunID, CheckpointID: s.CheckpointID, BlockSize: s.BlockSize,
		Positions: map[string]int64{}, Complete: map[string]bool{}, TokenHash: s.TokenHash}
	for _, d := range s.Disks {
		o.Positions[d.ID] = d.Position
		o.Complete[d.ID] = d.Complete
	}
	return o, true
}

// SetSessionToken records durably the hash of the token the data channel must
// present to write the open session of checkpoint (hex SHA-256). A new
// token replaces the old one: connections holding the old token are refused.
func (w *Writer) SetSessionToken(checkpoint, tokenHash string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return err
	}
	if w.meta == nil || w.meta.Session == nil || w.meta.Session.CheckpointID != checkpoint {
		return fmt.Errorf("set session token in %s: no open restore point of checkpoint %s", w.l, checkpoint)
	}
	return w.update(func(m *metadata) error { m.Session.TokenHash = tokenHash; return nil })
}

// collectGarbage removes files of disks/ and digests/ that no point, session
// or merge intent refers to: what a crash left between creating files and
// recording them, or between recording a removal and doing it. Called with
// w.mu held.
func (w *Writer) collectGarbage() error {
	keep := map[string]bool{} // "disks/<id>/<file>" and "digests/<id>/<file>"
	add := func(d pointDiskRecord) {
		for _, f := range d.Chain {
			keep["disks/"+d.ID+"/"+f] = true
		}
		keep["digests/"+d.ID+"/"+d.Digests] = true
	}
	for _, p := range w.meta.Points {
		for _, d := range p.Disks {
			add(d)
		}
	}
	if s := w.meta.Session; s != nil {
		for _, d := range s.Disks {
			add(d.pointDiskRecord)
		}
	}
	if g := w.meta.Merge; g != nil {
		for _, d := range g.Disks {
			keep["disks/"+d.ID+"/"+d.Child] = true
			keep["disks/"+d.ID+"/"+d.Base] = true
			for _, f := range d.Relink {
				keep["disks/"+d.ID+"/"+f] = true
			}
		}
	}
	var errs []error
	for _, kind := range []string{"disks", "digests"} {
		top := filepath.Join(string(w.l), kind)
		ids, err := os.ReadDir(top)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("list %s: %w", top, err)
		}
		for _, id := range ids {
			if !id.IsDir() || id.Type()&os.ModeSymlink != 0 {
				continue
			}
			dir := filepath.Join(top, id.Name())
			files, err := os.ReadDir(dir)
			if err != nil {
				return fmt.Errorf("list %s: %w", dir, err)
			}
			removed := false
			for _, f := range files {
				name := f.Name()
				ours := strings.HasSuffix(name, ".vhdx") || strings.HasSuffix(name, ".sum") || strings.HasSuffix(name, sealSuffix) || strings.Contains(name, ".tmp-")
				if !ours || f.IsDir() || keep[kind+"/"+id.Name()+"/"+strings.TrimSuffix(name, sealSuffix)] {
					continue
				}
				if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
					errs = append(errs, fmt.Errorf("remove unreferenced %s: %w", filepath.Join(dir, name), err))
				}
				removed = true
			}
			if removed {
				errs = append(errs, atomicfile.SyncDir(dir))
			}
		}
	}
	return errors.Join(errs...)
}
