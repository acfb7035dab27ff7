package lab

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/replicator/replicator/internal/atomicfile"
	"github.com/replicator/replicator/internal/provider"
	"github.com/replicator/replicator/internal/vhdx"
)

var _ provider.ReplicaHost = (*Host)(nil)

// RegisterReplicaVM creates or updates a replica VM: a lab VM whose disks are
// new differencing children (in the VM's folder) of restore-point files
// elsewhere, which the lab only reads. New children are made and vm.json
// names them before the old ones are removed, so that a crash leaves the old
// VM or the new one; files vm.json does not name are swept at the next
// registration.
func (h *Host) RegisterReplicaVM(ctx context.Context, spec provider.ReplicaVMSpec) (provider.VM, error) {
	if err := validVMName(spec.Name); err != nil {
		return provider.VM{}, fmt.Errorf("register replica VM: %w", err)
	}
	if len(spec.Disks) == 0 {
		return provider.VM{}, fmt.Errorf("register replica VM %s: no disks", spec.Name)
	}
	if err := spec.Config.Check(); err != nil {
		return provider.VM{}, fmt.Errorf("register replica VM %s: %w", spec.Name, err)
	}
	for _, d := range spec.Disks {
		if d.ID == "" || !localName(changeMapName(d.ID, 0)) {
			return provider.VM{}, fmt.Errorf("register replica VM %s: disk id %q is not usable in a file name", spec.Name, d.ID)
		}
		if !filepath.IsAbs(d.Parent) {
			return provider.VM{}, fmt.Errorf("register replica VM %s: disk %s: parent %q is not an absolute path", spec.Name, d.ID, d.Parent)
		}
	}
	if err := os.MkdirAll(h.path, 0o755); err != nil {
		return provider.VM{}, fmt.Errorf("register replica VM %s: %w", spec.Name, err)
	}
	dir := filepath.Join(h.path, spec.Name)
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return provider.VM{}, fmt.Errorf("register replica VM %s: %w", spec.Name, err)
	}
	l, err := lockVM(dir)
	if err != nil {
		return provider.VM{}, err
	}
	defer l.unlock()
	old, err := readRecord(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		old = nil
	case err != nil:
		return provider.VM{}, fmt.Errorf("register replica VM %s: %w", spec.Name, err)
	case old.ReplicaOf == "":
		return provider.VM{}, fmt.Errorf("register replica VM %s: %s holds a VM that is not a replica; rename it", spec.Name, dir)
	case old.State == "running":
		return provider.VM{}, fmt.Errorf("register replica VM %s: %w; power it off first", spec.Name, provider.ErrVMRunning)
	}
	cfg := spec.Config
	rec := &vmRecord{
		ID: newUUID(), Name: spec.Name, State: "off", Generation: cfg.Generation, ConfigurationVersion: configurationVersion,
		Created: time.Now().UTC(), ChangeInterval: 1, Checkpoints: []checkpointRecord{}, ReferencePoints: []referencePointRecord{},
		Config: &cfg, ReplicaOf: spec.SourceID,
	}
	if rec.Generation == 0 {
		rec.Generation = 2
	}
	if old != nil {
		rec.ID, rec.Created, rec.ChangeInterval = old.ID, old.Created, old.ChangeInterval+1
	}
	stamp := newUUID()[:8]
	var made []string
	fail := func(err error) (provider.VM, error) {
		removeFiles(dir, made)
		return provider.VM{}, fmt.Errorf("register replica VM %s: %w", spec.Name, err)
	}
	for _, d := range spec.Disks {
		if err := ctx.Err(); err != nil {
			return fail(err)
		}
		child := fmt.Sprintf("disk%s_%s.avhdx", d.ID, stamp)
		vd, err := vhdx.CreateDifferencing(filepath.Join(dir, child), d.Parent, vhdx.CreateOptions{})
		if err != nil {
			return fail(err)
		}
		size := vd.Size()
		if err := vd.Close(); err != nil {
			return fail(err)
		}
		made = append(made, child)
		cm := changeMapName(d.ID, rec.ChangeInterval)
		if err := createChangeMap(filepath.Join(dir, cm), size); err != nil {
			return fail(err)
		}
		made = append(made, cm)
		rec.Disks = append(rec.Disks, diskRecord{ID: d.ID, File: child, VirtualSize: size})
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		return fail(err)
	}
	if err := writeRecord(dir, rec); err != nil {
		return fail(err)
	}
	sweepUnnamed(dir, rec)
	if err := atomicfile.SyncDir(h.path); err != nil {
		return provider.VM{}, err
	}
	return vmOf(dir, rec), nil
}

// sweepUnnamed removes the disk files and change maps of a replica VM folder
// that its record does not name: those of an earlier registration.
func sweepUnnamed(dir string, rec *vmRecord) {
	keep := map[string]bool{}
	for _, d := range rec.Disks {
		keep[d.File] = true
		keep[changeMapName(d.ID, rec.ChangeInterval)] = true
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		n := e.Name()
		if !keep[n] && (strings.HasSuffix(n, ".avhdx") || strings.HasSuffix(n, ".vhdx") || strings.HasSuffix(n, ".cbt")) {
			os.Remove(filepath.Join(dir, n))
		}
	}
}

// ReplicaVM returns a VM of the host by name or id.
func (h *Host) ReplicaVM(ctx context.Context, name string) (provider.VM, error) {
	dir, rec, err := h.readVM(name)
	if err != nil {
		return provider.VM{}, err
	}
	return vmOf(dir, rec), nil
}

// StartVM records the VM as running: the lab has no processor to run a guest,
// so "running" means the VM's disks are in use by it (writes go to them).
func (h *Host) StartVM(ctx context.Context, name string) error {
	return h.setState(ctx, name, "running")
}

// StopVM records the VM as powered off.
func (h *Host) StopVM(ctx context.Context, name string) error { return h.setState(ctx, name, "off") }

func (h *Host) setState(ctx context.Context, name, state string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	dir, rec, l, err := h.lockedVM(name)
	if err != nil {
		return err
	}
	defer l.unlock()
	if rec.State == state {
		return nil
	}
	rec.State = state
	return writeRecord(dir, rec)
}

// standaloneChunk is the unit of MakeStandalone's copy.
const standaloneChunk = 1 << 20

// MakeStandalone copies each disk of a replica VM (its child and the restore
// points below it) into a new dynamic VHDX of the VM's folder, then records
// the VM as standalone: vm.json names the new disks (written and synced
// first) and no longer says whose replica it is; the old children are
// removed after. It holds the VM's lock, so guest writes wait for it.
func (h *Host) MakeStandalone(ctx context.Context, name string) (provider.VM, error) {
	dir, rec, l, err := h.lockedVM(name)
	if err != nil {
		return provider.VM{}, err
	}
	defer l.unlock()
	if rec.ReplicaOf == "" {
		return vmOf(dir, rec), nil
	}
	stamp := newUUID()[:8]
	var made []string
	fail := func(err error) (provider.VM, error) {
		removeFiles(dir, made)
		return provider.VM{}, fmt.Errorf("make VM %s standalone: %w", rec.Name, err)
	}
	next := *rec
	next.Disks = nil
	for _, d := range rec.Disks {
		file := fmt.Sprintf("disk%s_%s.vhdx", d.ID, stamp)
		if err := copyStandalone(ctx, filepath.Join(dir, d.File), filepath.Join(dir, file)); err != nil {
			made = append(made, file)
			return fail(err)
		}
		made = append(made, file)
		next.Disks = append(next.Disks, diskRecord{ID: d.ID, File: file, VirtualSize: d.VirtualSize})
	}
	next.ReplicaOf = ""
	if err := atomicfile.SyncDir(dir); err != nil {
		return fail(err)
	}
	if err := writeRecord(dir, &next); err != nil {
		return fail(err)
	}
	sweepUnnamed(dir, &next)
	return vmOf(dir, &next), nil
}

// copyStandalone copies what a disk chain holds into a new dynamic VHDX
// without parent, skipping unallocated space and zeros.
func copyStandalone(ctx context.Context, srcPath, dstPath string) error {
	src, err := vhdx.OpenWith(srcPath, vhdx.OpenOptions{IgnoreParentLinkage: true})
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := vhdx.Create(dstPath, vhdx.CreateOptions{Size: src.Size(), BlockSize: baseBlockSize, LogicalSectorSize: uint32(src.SectorSize())})
	if err != nil {
		return err
	}
	buf := make([]byte, standaloneChunk)
	for _, e := range src.Allocated() {
		for off := e.Offset; off < e.End(); {
			if err := ctx.Err(); err != nil {
				dst.Close()
				return err
			}
			n := min(int64(standaloneChunk)-off%standaloneChunk, e.End()-off)
			if _, err := src.ReadAt(buf[:n], off); err != nil {
				dst.Close()
				return fmt.Errorf("read %s at offset %d: %w", srcPath, off, err)
			}
			if _, err := dst.WriteAt(buf[:n], off); err != nil {
				dst.Close()
				return fmt.Errorf("write %s at offset %d: %w", dstPath, off, err)
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
