// Package agent is the target side of replicator: it owns the replica store
// of one datastore, holds the writer lock of every replica it writes, serves
// the data channel's transfer.Target, and carries out the target activities
// (prepare, begin, commit with retention, positions). One agent runs per
// target process; the replica locks keep a second process out.
package agent

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/digest"
	"github.com/replicator/replicator/internal/replica"
	"github.com/replicator/replicator/internal/transfer"
)

// Agent writes replicas into one datastore.
type Agent struct {
	store *replica.Store
	owner string

	// mu guards only the map: the I/O of taking, using and releasing a
	// replica's writer happens under that replica's own lock, so a slow
	// replica (a retention merge waiting for a reader) never holds up another.
	mu       sync.Mutex
	replicas map[string]*replicaSlot // by job/vm-id
}

// replicaSlot is the writer of one replica and the lock that serializes
// taking and releasing it. The lock is a channel so that a wait honours ctx.
type replicaSlot struct {
	lock chan struct{}
	w    *replica.Writer
}

func (s *replicaSlot) acquire(ctx context.Context) error {
	select {
	case s.lock <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *replicaSlot) unlock() { <-s.lock }

// Option changes how New opens the datastore.
type Option func(*options)

type options struct{ key *replica.Key }

// WithKey encrypts replicas at rest with key (nil: not encrypted).
func WithKey(key *replica.Key) Option { return func(o *options) { o.key = key } }

// New opens the datastore (creating it if missing, private to this user).
// owner names this process in lock files ("agent dr01 pid 1234").
func New(datastore, owner string, opts ...Option) (*Agent, error) {
	var o options
	for _, f := range opts {
		f(&o)
	}
	if err := os.MkdirAll(datastore, 0o700); err != nil {
		return nil, fmt.Errorf("datastore %s: %w", datastore, err)
	}
	if err := private(datastore); err != nil {
		return nil, err
	}
	s, err := replica.OpenEncrypted(datastore, true, o.key)
	if err != nil {
		return nil, err
	}
	return &Agent{store: s, owner: owner, replicas: map[string]*replicaSlot{}}, nil
}

// private makes the datastore's folder accessible to this user only: replicas
// are whole disks of the source VMs. A datastore created by an older version
// (mode 0755) is tightened here, which closes everything beneath it.
func private(datastore string) error {
	st, err := os.Stat(datastore)
	if err != nil {
		return fmt.Errorf("datastore %s: %w", datastore, err)
	}
	if runtime.GOOS == "windows" || st.Mode().Perm()&0o077 == 0 {
		return nil // on Windows the folder's ACL governs access
	}
	if err := os.Chmod(datastore, 0o700); err != nil {
		return fmt.Errorf("datastore %s has mode %v (others may read the replicas) and cannot be made private: %w", datastore, st.Mode().Perm(), err)
	}
	return nil
}

// Store returns the replica store.
func (a *Agent) Store() *replica.Store { return a.store }

// Close releases every replica lock.
func (a *Agent) Close() error {
	a.mu.Lock()
	slots := make([]*replicaSlot, 0, len(a.replicas))
	for _, s := range a.replicas {
		slots = append(slots, s)
	}
	a.mu.Unlock()
	var errs []error
	for _, s := range slots {
		s.lock <- struct{}{}
		if s.w != nil {
			errs = append(errs, s.w.Close())
			s.w = nil
		}
		s.unlock()
	}
	return errors.Join(errs...)
}

func (a *Agent) slot(key string) *replicaSlot {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.replicas[key]
	if !ok {
		s = &replicaSlot{lock: make(chan struct{}, 1)}
		a.replicas[key] = s
	}
	return s
}

// held returns the writer of a replica if this agent holds it already.
func (a *Agent) held(ctx context.Context, job, vmID string) (*replica.Writer, error) {
	s := a.slot(job + "/" + vmID)
	if err := s.acquire(ctx); err != nil {
		return nil, err
	}
	defer s.unlock()
	return s.w, nil
}

// writer returns the locked writer of a replica, taking the lock on first use.
func (a *Agent) writer(ctx context.Context, job, vmID string) (*replica.Writer, error) {
	s := a.slot(job + "/" + vmID)
	if err := s.acquire(ctx); err != nil {
		return nil, err
	}
	defer s.unlock()
	if s.w != nil {
		return s.w, nil
	}
	r, err := a.store.Replica(job, vmID)
	if err != nil {
		return nil, err
	}
	w, err := r.Lock(ctx, a.owner)
	if err != nil {
		return nil, err
	}
	s.w = w
	return w, nil
}

// existingWriter is writer for the data channel, which only writes into a
// restore point a run opened: the names a client sends never create a
// replica (its folders and lock). The replica's metadata is read only when
// this agent does not hold the replica already.
func (a *Agent) existingWriter(ctx context.Context, h transfer.Hello) (*replica.Writer, error) {
	w, err := a.held(ctx, h.Job, h.VMID)
	if err != nil || w != nil {
		return w, err
	}
	r, err := a.store.Replica(h.Job, h.VMID)
	if err != nil {
		return nil, err
	}
	if _, err := r.Info(); err != nil {
		if errors.Is(err, replica.ErrNoReplica) {
			return nil, fmt.Errorf("no open restore point for checkpoint %s of %s/%s: no such replica", h.CheckpointID, h.Job, h.VMID)
		}
		return nil, err
	}
	return a.writer(ctx, h.Job, h.VMID)
}

// release closes and forgets a replica's writer (after a commit, or when it broke).
func (a *Agent) release(job, vmID string) error {
	s := a.slot(job + "/" + vmID)
	s.lock <- struct{}{}
	w := s.w
	s.w = nil
	s.unlock()
	if w == nil {
		return nil
	}
	return w.Close()
}

// Prepare records the VM on its replica and says what a run must know: an
// interrupted restore point, the newest point and its reference point.
func (a *Agent) Prepare(ctx context.Context, job string, vm contract.VM) (contract.ReplicaState, error) {
	w, err := a.writer(ctx, job, vm.ID)
	if err != nil {
		return contract.ReplicaState{}, err
	}
	if l, err := w.Lifecycle(); err == nil && l.State != replica.StateReady {
		// A replica VM runs on this replica: the run skips the VM and
		// writes nothing, not even the VM's description.
		name := vm.Name
		if info, err := w.Info(); err == nil && info.Name != "" {
			name = info.Name
		}
		return contract.ReplicaState{}, &replica.StateError{Job: job, VM: name, State: l.State, Since: l.Since, Operation: "replication", Want: []replica.State{replica.StateReady}}
	}
	info := replica.VMInfo{ID: vm.ID, Name: vm.Name, Generation: vm.Generation, Config: vm.Config}
	for _, d := range vm.Disks {
		info.Disks = append(info.Disks, replica.DiskInfo{ID: d.ID, Size: d.VirtualSize, SectorSize: d.SectorSize})
	}
	if err := w.Prepare(info); err != nil {
		return contract.ReplicaState{}, err
	}
	var st contract.ReplicaState
	if open, ok := w.OpenSession(); ok {
		st.OpenCheckpointID = open.CheckpointID
	}
	r, err := a.store.Replica(job, vm.ID)
	if err != nil {
		return st, err
	}
	points, err := r.Points()
	if err != nil {
		return st, err
	}
	if n := len(points); n > 0 {
		st.NewestPoint = points[n-1].ID
		st.Exclusions = points[n-1].Exclusions
		st.NewestPointTime = points[n-1].Time
		if st.ReferencePoint, err = r.ReferencePoint(st.NewestPoint); err != nil {
			return st, err
		}
	}
	return st, nil
}

// Begin opens (or continues) the restore point of a run and returns the
// durable position of every disk.
func (a *Agent) Begin(ctx context.Context, in contract.BeginInput) (contract.BeginResult, error) {
	w, err := a.writer(ctx, in.Job, in.VMID)
	if err != nil {
		return contract.BeginResult{}, err
	}
	ses, err := w.Begin(replica.SessionSpec{RunID: in.RunID, CheckpointID: in.CheckpointID, ChangeTracking: in.ChangeTracking, BlockSize: in.BlockSize, Exclusions: in.Exclusions, CheckpointTime: in.CheckpointTime})
	if err != nil {
		return contract.BeginResult{}, err
	}
	// A new token for every Begin: whatever an earlier attempt was given
	// (and any connection still holding it) can no longer write the point.
	token, err := newToken()
	if err != nil {
		return contract.BeginResult{}, err
	}
	if err := w.SetSessionToken(in.CheckpointID, tokenHash(token)); err != nil {
		return contract.BeginResult{}, err
	}
	res := contract.BeginResult{Resumed: ses.Resumed(), Positions: map[string]int64{}, Token: token}
	if open, ok := w.OpenSession(); ok {
		for id, p := range open.Positions {
			res.Positions[id] = p
		}
	}
	return res, nil
}

// Positions returns the durable positions of the open restore point.
func (a *Agent) Positions(ctx context.Context, job, vmID string) (map[string]int64, error) {
	w, err := a.writer(ctx, job, vmID)
	if err != nil {
		return nil, err
	}
	open, ok := w.OpenSession()
	if !ok {
		return map[string]int64{}, nil
	}
	return open.Positions, nil
}

// Commit makes the open restore point of checkpoint complete, applies
// retention, and releases the replica's lock. When there is no open point
// but the newest point is checkpoint's (an earlier attempt committed it and
// died before answering), it applies retention again and returns that point.
func (a *Agent) Commit(ctx context.Context, job, vmID, checkpoint string, retention int) (string, error) {
	w, err := a.writer(ctx, job, vmID)
	if err != nil {
		return "", err
	}
	if l, err := w.Lifecycle(); err == nil && l.State != replica.StateReady {
		// Failed over while the run transferred: the point is not committed.
		return "", &replica.StateError{Job: job, VM: vmID, State: l.State, Since: l.Since, Operation: "replication", Want: []replica.State{replica.StateReady}}
	}
	var p replica.Point
	ses, inMemory := w.Session()
	open, isOpen := w.OpenSession()
	switch {
	case checkpoint != "" && isOpen && open.CheckpointID != checkpoint:
		return "", fmt.Errorf("commit %s/%s: the open restore point is of checkpoint %s, not %s", job, vmID, open.CheckpointID, checkpoint)
	case inMemory:
	case isOpen: // begun by a process that has since restarted
		ses, err = a.continueSession(w)
	case checkpoint != "": // committed by an attempt that died before answering
		p, err = a.committed(job, vmID, checkpoint)
	default:
		err = fmt.Errorf("commit %s/%s: no open restore point", job, vmID)
	}
	if err != nil {
		return "", err
	}
	if ses != nil {
		if p, err = ses.Commit(ctx); err != nil {
			return "", err
		}
	}
	if retention > 0 {
		if err := w.ApplyRetention(ctx, retention); err != nil {
			return p.ID, fmt.Errorf("restore point %s committed; retention: %w", p.ID, err)
		}
	}
	return p.ID, a.release(job, vmID)
}

// RecordReferencePoint notes which source reference point describes a restore point.
func (a *Agent) RecordReferencePoint(ctx context.Context, job, vmID, pointID, ref string) error {
	w, err := a.writer(ctx, job, vmID)
	if err != nil {
		return err
	}
	defer a.release(job, vmID)
	return w.SetReferencePoint(pointID, ref)
}

// OpenSessions lists the VM ids of the job whose replica has an interrupted restore point.
func (a *Agent) OpenSessions(ctx context.Context, job string) ([]string, error) {
	refs, err := a.store.Replicas()
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, ref := range refs {
		if ref.Job != job {
			continue
		}
		w, err := a.writer(ctx, ref.Job, ref.VMID)
		if err != nil {
			continue // locked elsewhere or damaged: its own run reports it
		}
		if _, open := w.OpenSession(); open {
			ids = append(ids, ref.VMID)
		}
	}
	sort.Strings(ids)
	return ids, nil
}

var _ transfer.Target = (*Agent)(nil)

// newToken returns a session token: 32 bytes from the system's CSPRNG, in hex.
func newToken() (string, error) {
	var b [transfer.TokenLen / 2]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("session token: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// tokenHash is what the replica's metadata keeps of a token.
func tokenHash(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// Admit lets a data connection in only when it presents the token of the
// open restore point of its checkpoint and that point's block size. It runs
// before anything of the replica is opened, read or written, and before the
// connection may displace another one writing the same disk.
func (a *Agent) Admit(ctx context.Context, h transfer.Hello, peer string) error {
	w, err := a.existingWriter(ctx, h)
	if err != nil {
		return err
	}
	open, found := w.OpenSession()
	if !found || open.CheckpointID != h.CheckpointID {
		return fmt.Errorf("no open restore point for checkpoint %s of %s/%s", h.CheckpointID, h.Job, h.VMID)
	}
	if open.TokenHash == "" || subtle.ConstantTimeCompare([]byte(tokenHash(h.Token)), []byte(open.TokenHash)) != 1 {
		return fmt.Errorf("%w for the restore point of checkpoint %s of %s/%s (peer %s)", transfer.ErrBadToken, h.CheckpointID, h.Job, h.VMID, peer)
	}
	if open.BlockSize != h.BlockSize {
		return fmt.Errorf("restore point of checkpoint %s of %s/%s has %d-byte blocks, the sender says %d", h.CheckpointID, h.Job, h.VMID, open.BlockSize, h.BlockSize)
	}
	return nil
}

// OpenDisk opens a disk of the restore point being written for checkpoint
// h.CheckpointID; after a restart of the agent the open session is found in
// the replica's metadata and continued.
func (a *Agent) OpenDisk(ctx context.Context, h transfer.Hello, peer string) (transfer.Sink, error) {
	w, err := a.existingWriter(ctx, h)
	if err != nil {
		return nil, err
	}
	ses, ok := w.Session()
	if !ok || !sameCheckpoint(w, h.CheckpointID) {
		open, found := w.OpenSession()
		if !found || open.CheckpointID != h.CheckpointID {
			return nil, fmt.Errorf("no open restore point for checkpoint %s of %s/%s", h.CheckpointID, h.Job, h.VMID)
		}
		if ses, err = a.continueSession(w); err != nil {
			return nil, err
		}
	}
	dw, err := ses.Disk(h.DiskID)
	if err != nil {
		return nil, err
	}
	if dw.BlockSize() != h.BlockSize {
		dw.Close()
		return nil, fmt.Errorf("restore point of checkpoint %s of %s/%s has %d-byte blocks, the sender says %d", h.CheckpointID, h.Job, h.VMID, dw.BlockSize(), h.BlockSize)
	}
	if dw.Size() != h.DiskSize {
		dw.Close()
		return nil, fmt.Errorf("disk %s of %s/%s is %d bytes on the replica, the sender says %d", h.DiskID, h.Job, h.VMID, dw.Size(), h.DiskSize)
	}
	return sink{dw}, nil
}

// continueSession continues the open session recorded in the replica's
// metadata: what this process must do after a restart, before it writes or
// commits a point an earlier process began.
func (a *Agent) continueSession(w *replica.Writer) (*replica.Session, error) {
	open, ok := w.OpenSession()
	if !ok {
		return nil, errors.New("no open restore point")
	}
	return w.Begin(replica.SessionSpec{RunID: open.RunID, CheckpointID: open.CheckpointID, BlockSize: open.BlockSize})
}

// committed returns the newest point of a replica if it holds checkpoint.
func (a *Agent) committed(job, vmID, checkpoint string) (replica.Point, error) {
	r, err := a.store.Replica(job, vmID)
	if err != nil {
		return replica.Point{}, err
	}
	points, err := r.Points()
	if err != nil {
		return replica.Point{}, err
	}
	if n := len(points); n > 0 && points[n-1].CheckpointID == checkpoint {
		return points[n-1], nil
	}
	return replica.Point{}, fmt.Errorf("commit %s/%s: no open restore point, and the newest point is not of checkpoint %s", job, vmID, checkpoint)
}

func sameCheckpoint(w *replica.Writer, checkpoint string) bool {
	open, ok := w.OpenSession()
	return ok && open.CheckpointID == checkpoint
}

// Digests returns the digests of the disk in the replica's newest complete point.
func (a *Agent) Digests(ctx context.Context, h transfer.Hello) (int64, []digest.Sum, error) {
	r, err := a.store.Replica(h.Job, h.VMID)
	if err != nil {
		return 0, nil, err
	}
	t, err := r.Digests("", h.DiskID)
	if err != nil {
		if errors.Is(err, replica.ErrNoReplica) || errors.Is(err, replica.ErrNoPoint) {
			return 0, nil, transfer.ErrNoDigests
		}
		return 0, nil, err
	}
	return t.BlockSize, t.Sums, nil
}

// sink adapts a replica disk writer to the data channel.
type sink struct{ *replica.DiskWriter }

func (s sink) SetDigest(i int64, d digest.Sum) {
	// Out-of-range indexes cannot come from a validated frame; the writer
	// rejects them and Persist would then fail.
	_ = s.DiskWriter.SetDigest(i, d)
}

// UpdateLifecycle changes a replica's lifecycle record under the replica's
// own lock: change gets the record as it is and returns the new one, or an
// error, in which case nothing is written. A writer this call had to open is
// closed again, so that a run of the replica finds it free; one a run holds
// stays with the run. Other replicas are never held up: only this replica's
// slot is locked while the record is read and written.
func (a *Agent) UpdateLifecycle(ctx context.Context, job, vmID string, change func(replica.Lifecycle) (replica.Lifecycle, error)) (replica.Lifecycle, error) {
	var out replica.Lifecycle
	err := a.withWriter(ctx, job, vmID, func(w *replica.Writer) error {
		cur, err := w.Lifecycle()
		if err != nil {
			return err
		}
		out = cur
		next, err := change(cur)
		if err != nil {
			return err
		}
		if err := w.SetLifecycle(next, time.Now()); err != nil {
			return err
		}
		out, err = w.Lifecycle()
		return err
	})
	return out, err
}

// RemovePoints deletes the restore points of a replica failed over for good.
func (a *Agent) RemovePoints(ctx context.Context, job, vmID string) error {
	return a.withWriter(ctx, job, vmID, func(w *replica.Writer) error { return w.RemovePoints() })
}

// withWriter runs fn with the replica's writer while holding the replica's
// slot, so that no run takes or releases the writer meanwhile. The writer a
// run holds is used as it is; otherwise one is opened for fn and closed after.
func (a *Agent) withWriter(ctx context.Context, job, vmID string, fn func(*replica.Writer) error) error {
	s := a.slot(job + "/" + vmID)
	if err := s.acquire(ctx); err != nil {
		return err
	}
	defer s.unlock()
	if s.w != nil {
		return fn(s.w)
	}
	r, err := a.store.Replica(job, vmID)
	if err != nil {
		return err
	}
	w, err := r.Lock(ctx, a.owner)
	if err != nil {
		return err
	}
	ferr := fn(w)
	return errors.Join(ferr, w.Close())
}
