package lab

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/replicator/replicator/internal/atomicfile"
	"github.com/replicator/replicator/internal/disk"
	"github.com/replicator/replicator/internal/provider"
	"github.com/replicator/replicator/internal/vhdx"
)

// Limits of the runs that Write makes.
const (
	minWriteRun   = 64 << 10
	maxWriteRun   = 1 << 20
	writeAlign    = 4 << 10
	writeBatchMax = 4 << 20 // bytes written under one hold of the lock
)

// CreateVM creates a VM in the lab folder path with one dynamic VHDX per
// size (bytes, a multiple of 1 MiB). It fails if the VM exists.
func CreateVM(path, name string, diskSizes []int64) (provider.VM, error) {
	return CreateVMWith(path, name, diskSizes, Hardware{})
}

// CreateVMWith is CreateVM with the VM's virtual hardware.
func CreateVMWith(path, name string, diskSizes []int64, hw Hardware) (provider.VM, error) {
	cfg, err := hw.config(len(diskSizes))
	if err != nil {
		return provider.VM{}, fmt.Errorf("create lab VM %s: %w", name, err)
	}
	if err := validVMName(name); err != nil {
		return provider.VM{}, fmt.Errorf("create lab VM: %w", err)
	}
	if len(diskSizes) == 0 {
		return provider.VM{}, fmt.Errorf("create lab VM %s: at least one disk is needed", name)
	}
	for i, s := range diskSizes {
		if s < 1<<20 || s%(1<<20) != 0 {
			return provider.VM{}, fmt.Errorf("create lab VM %s: disk %d: size %d is not a positive multiple of 1 MiB", name, i, s)
		}
	}
	if err := os.MkdirAll(path, 0o755); err != nil {
		return provider.VM{}, fmt.Errorf("create lab VM %s: %w", name, err)
	}
	dir := filepath.Join(path, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return provider.VM{}, fmt.Errorf("create lab VM %s: %s exists already", name, dir)
		}
		return provider.VM{}, fmt.Errorf("create lab VM %s: %w", name, err)
	}
	rec, err := createVMFiles(dir, name, diskSizes, &cfg)
	if err != nil {
		os.RemoveAll(dir)
		return provider.VM{}, fmt.Errorf("create lab VM %s: %w", name, err)
	}
	if err := atomicfile.SyncDir(path); err != nil {
		return provider.VM{}, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	return vmOf(abs, rec), nil
}

func createVMFiles(dir, name string, diskSizes []int64, cfg *provider.VMConfig) (*vmRecord, error) {
	rec := &vmRecord{
		ID:                   newUUID(),
		Name:                 name,
		State:                "running",
		Generation:           2,
		ConfigurationVersion: configurationVersion,
		Created:              time.Now().UTC(),
		ChangeInterval:       1,
		Checkpoints:          []checkpointRecord{},
		ReferencePoints:      []referencePointRecord{},
		Config:               cfg,
	}
	for i, size := range diskSizes {
		d := diskRecord{ID: fmt.Sprint(i), File: baseDiskName(i), VirtualSize: size}
		vd, err := vhdx.Create(filepath.Join(dir, d.File), vhdx.CreateOptions{Size: size, BlockSize: baseBlockSize})
		if err != nil {
			return nil, err
		}
		if err := vd.Close(); err != nil {
			return nil, err
		}
		if err := createChangeMap(filepath.Join(dir, changeMapName(d.ID, rec.ChangeInterval)), size); err != nil {
			return nil, err
		}
		rec.Disks = append(rec.Disks, d)
	}
	if f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o644); err == nil {
		f.Close()
	}
	// vm.json last: the VM exists once it is complete.
	return rec, writeRecord(dir, rec)
}

// pendingWrite is one write to a VM disk.
type pendingWrite struct {
	off  int64
	data []byte
}

// WriteAt writes p at off to disk diskIndex of the VM (id or name), as the
// guest would: to the file the VM writes to now, the change recorded first.
func (h *Host) WriteAt(ctx context.Context, vm string, diskIndex int, p []byte, off int64) error {
	return h.writeBatch(ctx, vm, diskIndex, []pendingWrite{{off: off, data: p}})
}

// writeBatch records the ranges in the current change map (durably), then
// writes the data to the active file and syncs it, all under the VM's lock.
func (h *Host) writeBatch(ctx context.Context, vm string, diskIndex int, writes []pendingWrite) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	dir, rec, l, err := h.lockedVM(vm)
	if err != nil {
		return err
	}
	defer l.unlock()
	return writeToDisk(ctx, dir, rec, diskIndex, writes)
}

// writeToDisk does the work of writeBatch; the caller holds the lock (or the
// VM is not visible yet).
func writeToDisk(ctx context.Context, dir string, rec *vmRecord, diskIndex int, writes []pendingWrite) error {
	if diskIndex < 0 || diskIndex >= len(rec.Disks) {
		return fmt.Errorf("write to VM %s: no disk %d (it has %d)", rec.Name, diskIndex, len(rec.Disks))
	}
	d := rec.Disks[diskIndex]
	extents := make([]disk.Extent, 0, len(writes))
	for _, w := range writes {
		e := disk.Extent{Offset: w.off, Length: int64(len(w.data))}
		if e.Offset < 0 || e.End() > d.VirtualSize {
			return fmt.Errorf("write to VM %s disk %d: range [%d, %d) outside the disk of %d bytes", rec.Name, diskIndex, e.Offset, e.End(), d.VirtualSize)
		}
		extents = append(extents, e)
	}
	if err := markChanged(filepath.Join(dir, changeMapName(d.ID, rec.ChangeInterval)), d.VirtualSize, extents); err != nil {
		return fmt.Errorf("write to VM %s disk %d: %w", rec.Name, diskIndex, err)
	}
	active := filepath.Join(dir, d.File)
	// The chain is the one vm.json records. A merge interrupted by a crash
	// changes the parent's DataWriteGuid before vm.json moves the VM back to
	// it; the child over the partly merged parent still reads the same bytes,
	// so the guest keeps writing until the release is retried.
	vd, err := vhdx.OpenWith(active, vhdx.OpenOptions{Writable: true, IgnoreParentLinkage: true})
	if err != nil {
		return fmt.Errorf("write to VM %s disk %d: %w", rec.Name, diskIndex, err)
	}
	for _, w := range writes {
		if err := ctx.Err(); err != nil {
			vd.Close()
			return err
		}
		if _, err := vd.WriteAt(w.data, w.off); err != nil {
			vd.Close()
			return fmt.Errorf("write to VM %s disk %d (%s) at offset %d: %w", rec.Name, diskIndex, active, w.off, err)
		}
	}
	if err := vd.Sync(); err != nil {
		vd.Close()
		return fmt.Errorf("write to VM %s disk %d (%s): %w", rec.Name, diskIndex, active, err)
	}
	if err := vd.Close(); err != nil {
		return fmt.Errorf("write to VM %s disk %d (%s): %w", rec.Name, diskIndex, active, err)
	}
	return nil
}

// writeRun is one run of a seeded write.
type writeRun struct {
	off    int64
	length int
}

// planWrites lists the runs of Write: runs of 64 KiB to 1 MiB at random
// 4 KiB-aligned offsets until percent of the disk's bytes are written. The
// same size, percent and seed give the same runs.
func planWrites(size int64, percent float64, seed int64) []writeRun {
	total := int64(float64(size) * percent / 100)
	rng := rand.New(rand.NewPCG(uint64(seed), 0x6c6162))
	var runs []writeRun
	for written := int64(0); written < total; {
		n := int64(minWriteRun + rng.IntN((maxWriteRun-minWriteRun)/writeAlign+1)*writeAlign)
		n = min(n, total-written, size)
		n = (n + writeAlign - 1) / writeAlign * writeAlign
		n = min(n, size)
		off := rng.Int64N((size-n)/writeAlign+1) * writeAlign
		runs = append(runs, writeRun{off: off, length: int(n)})
		written += n
	}
	return runs
}

// runData is the content of run i of a seeded write: random bytes, so that
// every write is new data.
func runData(seed int64, i int, n int) []byte {
	rng := rand.New(rand.NewPCG(uint64(seed), uint64(i)+1))
	b := make([]byte, n+7)
	for j := 0; j < n; j += 8 {
		binary.LittleEndian.PutUint64(b[j:], rng.Uint64())
	}
	return b[:n]
}

// Write makes seeded random writes over percent of the bytes of disk
// diskIndex of the VM (id or name): runs of 64 KiB to 1 MiB at random
// offsets, to the file the VM writes to now (the child of a checkpoint if
// there is one). The lock is taken per batch of runs, so a checkpoint may
// come between two batches, as it would between two guest writes.
func (h *Host) Write(ctx context.Context, vmName string, diskIndex int, percent float64, seed int64) error {
	if !(percent > 0 && percent <= 100) {
		return fmt.Errorf("write to VM %s: percent %v: want more than 0 and at most 100", vmName, percent)
	}
	_, rec, err := h.readVM(vmName)
	if err != nil {
		return err
	}
	if diskIndex < 0 || diskIndex >= len(rec.Disks) {
		return fmt.Errorf("write to VM %s: no disk %d (it has %d)", rec.Name, diskIndex, len(rec.Disks))
	}
	runs := planWrites(rec.Disks[diskIndex].VirtualSize, percent, seed)
	for _, batch := range batchRuns(runs) {
		writes := make([]pendingWrite, 0, len(batch))
		for _, i := range batch {
			writes = append(writes, pendingWrite{off: runs[i].off, data: runData(seed, i, runs[i].length)})
		}
		if err := h.writeBatch(ctx, rec.ID, diskIndex, writes); err != nil {
			return err
		}
	}
	return nil
}

// batchRuns groups consecutive runs (by index) into batches of about
// writeBatchMax bytes: each batch is written under one hold of the lock.
func batchRuns(runs []writeRun) [][]int {
	var batches [][]int
	var cur []int
	n := 0
	for i, r := range runs {
		cur = append(cur, i)
		n += r.length
		if n >= writeBatchMax {
			batches = append(batches, cur)
			cur, n = nil, 0
		}
	}
	if len(cur) > 0 {
		batches = append(batches, cur)
	}
	return batches
}
