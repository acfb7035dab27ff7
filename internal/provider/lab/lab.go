package lab

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/replicator/replicator/internal/disk"
	"github.com/replicator/replicator/internal/provider"
	"github.com/replicator/replicator/internal/vhdx"
)

// baseBlockSize is the VHDX block size of the disks CreateVM makes: 1 MiB, as
// Microsoft recommends for Linux guests on Hyper-V, keeps allocation close to
// what the guest wrote.
const baseBlockSize = 1 << 20

// maxReferencePoints bounds the reference points a VM keeps (each keeps its
// change intervals), for callers that never destroy the previous one.
const maxReferencePoints = 16

// Host is a lab virtualization host: a folder of VMs.
type Host struct {
	name string
	path string
}

var _ provider.Provider = (*Host)(nil)

// New returns the lab host called name whose VMs live in the folder path.
func New(name, path string) *Host {
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	return &Host{name: name, path: path}
}

// Path is the folder of the host's VMs.
func (h *Host) Path() string { return h.path }

// Host describes the lab host; a missing folder means the host is unreachable.
func (h *Host) Host(ctx context.Context) (provider.Host, error) {
	fi, err := os.Stat(h.path)
	if err != nil {
		return provider.Host{}, fmt.Errorf("lab host %s at %s: %w: %w", h.name, h.path, provider.ErrHostUnreachable, err)
	}
	if !fi.IsDir() {
		return provider.Host{}, fmt.Errorf("lab host %s at %s: %w: not a folder", h.name, h.path, provider.ErrHostUnreachable)
	}
	return provider.Host{Name: h.name, Kind: "lab", Version: hostVersion}, nil
}

// VMs lists the VMs of the host, sorted by name. A folder without a readable
// vm.json is not a VM and is left out, so one broken VM never hides the others.
func (h *Host) VMs(ctx context.Context) ([]provider.VM, error) {
	if _, err := h.Host(ctx); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(h.path)
	if err != nil {
		return nil, fmt.Errorf("lab host %s: list %s: %w: %w", h.name, h.path, provider.ErrHostUnreachable, err)
	}
	vms := []provider.VM{}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(h.path, e.Name())
		rec, err := readRecord(dir)
		if err != nil {
			continue
		}
		vms = append(vms, vmOf(dir, rec))
	}
	sort.Slice(vms, func(i, j int) bool { return vms[i].Name < vms[j].Name })
	return vms, nil
}

func vmOf(dir string, rec *vmRecord) provider.VM {
	vm := provider.VM{
		ID:                   rec.ID,
		Name:                 rec.Name,
		State:                rec.State,
		Generation:           rec.Generation,
		ConfigurationVersion: rec.ConfigurationVersion,
		Disks:                []provider.Disk{},
	}
	for _, d := range rec.Disks {
		vm.Disks = append(vm.Disks, provider.Disk{
			ID:          d.ID,
			Path:        filepath.Join(dir, d.File),
			VirtualSize: d.VirtualSize,
			Format:      "vhdx",
		})
	}
	return vm
}

// findVM returns the folder of the VM whose id or name is vm.
func (h *Host) findVM(vm string) (string, error) {
	notFound := fmt.Errorf("lab host %s: VM %q: %w", h.name, vm, provider.ErrVMNotFound)
	if vm == "" {
		return "", notFound
	}
	// The folder is named after the VM: try the name first.
	if validVMName(vm) == nil {
		dir := filepath.Join(h.path, vm)
		if rec, err := readRecord(dir); err == nil && (rec.Name == vm || rec.ID == vm) {
			return dir, nil
		}
	}
	entries, err := os.ReadDir(h.path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", notFound
		}
		return "", fmt.Errorf("lab host %s: list %s: %w: %w", h.name, h.path, provider.ErrHostUnreachable, err)
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(h.path, e.Name())
		if rec, err := readRecord(dir); err == nil && (rec.ID == vm || rec.Name == vm) {
			return dir, nil
		}
	}
	return "", notFound
}

// readVM finds a VM and reads its record without the lock (vm.json is
// replaced atomically).
func (h *Host) readVM(vm string) (string, *vmRecord, error) {
	dir, err := h.findVM(vm)
	if err != nil {
		return "", nil, err
	}
	rec, err := readRecord(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil, fmt.Errorf("lab host %s: VM %q: %w", h.name, vm, provider.ErrVMNotFound)
	}
	return dir, rec, err
}

// lockedVM finds a VM, locks it and reads its record under the lock.
func (h *Host) lockedVM(vm string) (string, *vmRecord, *vmLock, error) {
	dir, err := h.findVM(vm)
	if err != nil {
		return "", nil, nil, err
	}
	l, err := lockVM(dir)
	if err != nil {
		return "", nil, nil, err
	}
	rec, err := readRecord(dir)
	if err != nil {
		l.unlock()
		if errors.Is(err, fs.ErrNotExist) {
			return "", nil, nil, fmt.Errorf("lab host %s: VM %q: %w", h.name, vm, provider.ErrVMNotFound)
		}
		return "", nil, nil, err
	}
	return dir, rec, l, nil
}

func checkpointNotFound(rec *vmRecord, id string) error {
	return fmt.Errorf("VM %s: checkpoint %q: %w", rec.Name, id, provider.ErrCheckpointNotFound)
}

func checkpointOf(dir string, rec *vmRecord, c *checkpointRecord) provider.Checkpoint {
	out := provider.Checkpoint{ID: c.ID, Name: c.Name, VMID: rec.ID, Created: c.Created, Disks: []provider.CheckpointDisk{}}
	for _, d := range c.Disks {
		var size int64
		if i, ok := rec.diskIndex(d.DiskID); ok {
			size = rec.Disks[i].VirtualSize
		}
		out.Disks = append(out.Disks, provider.CheckpointDisk{DiskID: d.DiskID, Path: filepath.Join(dir, d.Frozen), VirtualSize: size})
	}
	return out
}

// CreateCheckpoint freezes the VM's disks: each gets a differencing child
// that the VM writes to from now on, and the change interval closes. The
// consistency asked for is recorded; with no guest to quiesce, the data is
// crash-consistent, as a running VM without guest processing gives.
func (h *Host) CreateCheckpoint(ctx context.Context, vmID string, opts provider.CheckpointOptions) (provider.Checkpoint, error) {
	if err := ctx.Err(); err != nil {
		return provider.Checkpoint{}, err
	}
	dir, rec, l, err := h.lockedVM(vmID)
	if err != nil {
		return provider.Checkpoint{}, err
	}
	defer l.unlock()

	cp := checkpointRecord{ID: newUUID(), Name: opts.Name, Created: time.Now().UTC(), Consistency: "crash", Interval: rec.ChangeInterval}
	if opts.Consistency == provider.ApplicationConsistent {
		cp.Consistency = "application"
	}
	next := rec.ChangeInterval + 1
	var created []string
	fail := func(err error) (provider.Checkpoint, error) {
		for _, p := range created {
			os.Remove(p)
		}
		return provider.Checkpoint{}, fmt.Errorf("create checkpoint of VM %s: %w", rec.Name, err)
	}
	for i := range rec.Disks {
		d := &rec.Disks[i]
		child := childDiskName(d.File, cp.ID)
		childPath := filepath.Join(dir, child)
		vd, err := vhdx.CreateDifferencing(childPath, filepath.Join(dir, d.File), vhdx.CreateOptions{})
		if err != nil {
			return fail(err)
		}
		created = append(created, childPath)
		if err := vd.Close(); err != nil {
			return fail(err)
		}
		mapPath := filepath.Join(dir, changeMapName(d.ID, next))
		if err := createChangeMap(mapPath, d.VirtualSize); err != nil {
			return fail(err)
		}
		created = append(created, mapPath)
		cp.Disks = append(cp.Disks, checkpointDiskRecord{DiskID: d.ID, Frozen: d.File, Child: child})
	}
	updated := *rec
	updated.Disks = append([]diskRecord(nil), rec.Disks...)
	for i := range updated.Disks {
		updated.Disks[i].File = cp.Disks[i].Child
	}
	updated.ChangeInterval = next
	updated.Checkpoints = append(append([]checkpointRecord(nil), rec.Checkpoints...), cp)
	if err := writeRecord(dir, &updated); err != nil {
		return fail(err)
	}
	return checkpointOf(dir, &updated, &cp), nil
}

// Checkpoint returns an existing checkpoint.
func (h *Host) Checkpoint(ctx context.Context, vmID, checkpointID string) (provider.Checkpoint, error) {
	dir, rec, err := h.readVM(vmID)
	if err != nil {
		return provider.Checkpoint{}, err
	}
	i, ok := rec.checkpoint(checkpointID)
	if !ok {
		return provider.Checkpoint{}, checkpointNotFound(rec, checkpointID)
	}
	return checkpointOf(dir, rec, &rec.Checkpoints[i]), nil
}

// Checkpoints lists the VM's checkpoints, oldest first.
func (h *Host) Checkpoints(ctx context.Context, vmID string) ([]provider.Checkpoint, error) {
	dir, rec, err := h.readVM(vmID)
	if err != nil {
		return nil, err
	}
	out := make([]provider.Checkpoint, 0, len(rec.Checkpoints))
	for i := range rec.Checkpoints {
		out = append(out, checkpointOf(dir, rec, &rec.Checkpoints[i]))
	}
	return out, nil
}

// OpenDisk opens the frozen chain of one disk of a checkpoint read-only.
func (h *Host) OpenDisk(ctx context.Context, vmID, checkpointID, diskID string) (disk.Image, error) {
	dir, rec, l, err := h.lockedVM(vmID)
	if err != nil {
		return nil, err
	}
	// The lock keeps a concurrent release from re-linking the chain while it opens.
	defer l.unlock()
	i, ok := rec.checkpoint(checkpointID)
	if !ok {
		return nil, checkpointNotFound(rec, checkpointID)
	}
	for _, d := range rec.Checkpoints[i].Disks {
		if d.DiskID == diskID {
			img, err := vhdx.Open(filepath.Join(dir, d.Frozen))
			if err != nil {
				return nil, fmt.Errorf("open disk %s of checkpoint %s of VM %s: %w", diskID, checkpointID, rec.Name, err)
			}
			return img, nil
		}
	}
	return nil, fmt.Errorf("VM %s checkpoint %s: no disk %q", rec.Name, checkpointID, diskID)
}

// ChangedRanges returns the 64 KiB-aligned ranges written between the
// reference point and the checkpoint: the union of the change intervals that
// closed after the reference point's checkpoint, up to this checkpoint's.
func (h *Host) ChangedRanges(ctx context.Context, vmID, checkpointID, diskID, referencePoint string) ([]disk.Extent, error) {
	dir, rec, err := h.readVM(vmID)
	if err != nil {
		return nil, err
	}
	ci, ok := rec.checkpoint(checkpointID)
	if !ok {
		return nil, checkpointNotFound(rec, checkpointID)
	}
	di, ok := rec.diskIndex(diskID)
	if !ok {
		return nil, fmt.Errorf("VM %s: no disk %q", rec.Name, diskID)
	}
	if referencePoint == "" {
		return nil, fmt.Errorf("VM %s disk %s: no reference point: %w", rec.Name, diskID, provider.ErrNoChangeTracking)
	}
	ri, ok := rec.referencePoint(referencePoint)
	if !ok {
		return nil, fmt.Errorf("VM %s disk %s: reference point %q is unknown: %w", rec.Name, diskID, referencePoint, provider.ErrNoChangeTracking)
	}
	from, to := rec.ReferencePoints[ri].Interval, rec.Checkpoints[ci].Interval
	if from >= to {
		return nil, fmt.Errorf("VM %s disk %s: reference point %q is not older than checkpoint %s: %w", rec.Name, diskID, referencePoint, checkpointID, provider.ErrNoChangeTracking)
	}
	size := rec.Disks[di].VirtualSize
	union := make([]byte, changeMapLen(size))
	for n := from + 1; n <= to; n++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		bits, err := readChangeMap(filepath.Join(dir, changeMapName(diskID, n)), size)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("VM %s disk %s: %w: %w", rec.Name, diskID, provider.ErrNoChangeTracking, err)
			}
			return nil, err
		}
		for i := range union {
			union[i] |= bits[i]
		}
	}
	return bitmapExtents(union, size), nil
}

// ConvertToReferencePoint merges the checkpoint back and keeps its moment as
// the baseline of later changed ranges; the previous reference point is
// destroyed (an unknown one is not an error: it may be gone already).
func (h *Host) ConvertToReferencePoint(ctx context.Context, vmID, checkpointID, previousReferencePoint string) (string, error) {
	dir, rec, l, err := h.lockedVM(vmID)
	if err != nil {
		return "", err
	}
	defer l.unlock()
	ci, ok := rec.checkpoint(checkpointID)
	if !ok {
		return "", checkpointNotFound(rec, checkpointID)
	}
	cp := rec.Checkpoints[ci]
	remove, err := mergeBack(ctx, dir, rec, ci)
	if err != nil {
		return "", fmt.Errorf("convert checkpoint %s of VM %s to a reference point: %w", checkpointID, rec.Name, err)
	}
	rp := referencePointRecord{ID: newUUID(), Name: cp.Name, Created: cp.Created, Interval: cp.Interval}
	if previousReferencePoint != "" {
		if i, ok := rec.referencePoint(previousReferencePoint); ok {
			rec.ReferencePoints = append(rec.ReferencePoints[:i:i], rec.ReferencePoints[i+1:]...)
		}
	}
	rec.ReferencePoints = append(rec.ReferencePoints, rp)
	if n := len(rec.ReferencePoints); n > maxReferencePoints {
		// The oldest go: changed ranges against them fall back to
		// ErrNoChangeTracking, which is always safe.
		rec.ReferencePoints = append([]referencePointRecord(nil), rec.ReferencePoints[n-maxReferencePoints:]...)
	}
	if err := writeRecord(dir, rec); err != nil {
		return "", fmt.Errorf("convert checkpoint %s of VM %s to a reference point: %w", checkpointID, rec.Name, err)
	}
	removeFiles(dir, remove)
	removeOldChangeMaps(dir, rec)
	return rp.ID, nil
}

// ReleaseCheckpoint merges the checkpoint back without a reference point.
// Change tracking goes on: the intervals stay, so changed ranges against an
// older reference point still cover every write.
func (h *Host) ReleaseCheckpoint(ctx context.Context, vmID, checkpointID string) error {
	dir, rec, l, err := h.lockedVM(vmID)
	if err != nil {
		return err
	}
	defer l.unlock()
	ci, ok := rec.checkpoint(checkpointID)
	if !ok {
		return nil
	}
	remove, err := mergeBack(ctx, dir, rec, ci)
	if err != nil {
		return fmt.Errorf("release checkpoint %s of VM %s: %w", checkpointID, rec.Name, err)
	}
	if err := writeRecord(dir, rec); err != nil {
		return fmt.Errorf("release checkpoint %s of VM %s: %w", checkpointID, rec.Name, err)
	}
	removeFiles(dir, remove)
	removeOldChangeMaps(dir, rec)
	return nil
}

// mergeBack merges the children of checkpoint ci into the files it froze and
// updates rec (not yet written): the frozen file takes the child's place, as
// the file the VM writes to or as the parent of a later checkpoint's child.
// It returns the files to remove once rec is durable. The caller holds the lock.
func mergeBack(ctx context.Context, dir string, rec *vmRecord, ci int) ([]string, error) {
	cp := rec.Checkpoints[ci]
	var remove []string
	for _, cd := range cp.Disks {
		di, ok := rec.diskIndex(cd.DiskID)
		if !ok {
			return nil, fmt.Errorf("checkpoint %s names disk %q that the VM does not have", cp.ID, cd.DiskID)
		}
		frozen, child := filepath.Join(dir, cd.Frozen), filepath.Join(dir, cd.Child)
		// Like Hyper-V's, a merge runs to its end once started: a merge cut
		// short leaves a parent that no longer matches its child's linkage.
		// Release is often the cleanup of a cancelled run, so the caller's
		// cancellation does not stop it.
		if err := vhdx.Merge(context.WithoutCancel(ctx), child, frozen); err != nil {
			return nil, fmt.Errorf("merge %s into %s: %w", child, frozen, err)
		}
		if rec.Disks[di].File == cd.Child {
			rec.Disks[di].File = cd.Frozen
		} else {
			// A later checkpoint froze the child: its own child now hangs
			// from the merged file.
			relinked := false
			for k := range rec.Checkpoints {
				for j := range rec.Checkpoints[k].Disks {
					later := &rec.Checkpoints[k].Disks[j]
					if later.DiskID == cd.DiskID && later.Frozen == cd.Child {
						if err := vhdx.SetParent(filepath.Join(dir, later.Child), frozen); err != nil {
							return nil, fmt.Errorf("relink %s to %s: %w", later.Child, frozen, err)
						}
						later.Frozen = cd.Frozen
						relinked = true
					}
				}
			}
			if !relinked {
				return nil, fmt.Errorf("disk %s: %s is neither written by the VM nor frozen by a later checkpoint", cd.DiskID, cd.Child)
			}
		}
		remove = append(remove, cd.Child)
	}
	rec.Checkpoints = append(rec.Checkpoints[:ci:ci], rec.Checkpoints[ci+1:]...)
	return remove, nil
}

func removeFiles(dir string, names []string) {
	for _, n := range names {
		os.Remove(filepath.Join(dir, n))
	}
}

// removeOldChangeMaps deletes the change intervals that no reference point
// or checkpoint can ask for any more: every interval up to the oldest
// baseline, except the one being written.
func removeOldChangeMaps(dir string, rec *vmRecord) {
	oldest := rec.ChangeInterval - 1
	for _, r := range rec.ReferencePoints {
		oldest = min(oldest, r.Interval)
	}
	for _, c := range rec.Checkpoints {
		oldest = min(oldest, c.Interval)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, "disk") || !strings.HasSuffix(name, ".cbt") {
			continue
		}
		parts := strings.Split(strings.TrimSuffix(name, ".cbt"), ".")
		if len(parts) != 2 {
			continue
		}
		n, err := strconv.ParseInt(parts[1], 10, 64)
		if err != nil || n > oldest || n == rec.ChangeInterval {
			continue
		}
		os.Remove(filepath.Join(dir, name))
	}
}
