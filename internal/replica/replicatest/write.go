package replicatest

import (
	"context"
	"testing"

	"github.com/replicator/replicator/internal/replica"
)

// Lock locks the replica of vm in job on st for owner, as the agent does
// before a transfer, and prepares it for vm. The caller closes the writer.
func Lock(t testing.TB, st *replica.Store, job, owner string, vm replica.VMInfo) *replica.Writer {
	t.Helper()
	r, err := st.Replica(job, vm.ID)
	if err != nil {
		t.Fatal(err)
	}
	w, err := r.Lock(context.Background(), owner)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Prepare(vm); err != nil {
		w.Close()
		t.Fatal(err)
	}
	return w
}

// CommitPoint writes one complete restore point with w: a session of spec in
// which write fills every disk of disks (in order), each disk then marked
// complete, and the point committed.
func CommitPoint(t testing.TB, w *replica.Writer, spec replica.SessionSpec, disks []replica.DiskInfo, write func(i int, d replica.DiskInfo, dw *replica.DiskWriter) error) {
	t.Helper()
	ses, err := w.Begin(spec)
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range disks {
		dw, err := ses.Disk(d.ID)
		if err != nil {
			t.Fatal(err)
		}
		if err := write(i, d, dw); err != nil {
			t.Fatal(err)
		}
		if err := dw.Complete(); err != nil {
			t.Fatal(err)
		}
		dw.Close()
	}
	if _, err := ses.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TwoPointVM is the VM of WriteTwoPoints: web01, a 2 MiB disk boot and a
// 1 MiB disk data.
func TwoPointVM(id string) replica.VMInfo {
	return replica.VMInfo{ID: id, Name: "web01", Generation: 2, Disks: []replica.DiskInfo{
		{ID: "boot", Size: 2 << 20, SectorSize: 512}, {ID: "data", Size: 1 << 20, SectorSize: 512},
	}}
}

// WriteTwoPoints writes two restore points (checkpoints ck0 and ck1, full,
// 64 KiB blocks) of TwoPointVM(vmID) in job on st, as the agent would: in
// point p, disk i gets 64 KiB of the byte 1+10p+i at (p+i)×128 KiB. It
// returns each point's bytes per disk.
func WriteTwoPoints(t testing.TB, st *replica.Store, job, vmID, owner string) [][][]byte {
	t.Helper()
	vm := TwoPointVM(vmID)
	w := Lock(t, st, job, owner, vm)
	defer w.Close()
	content := make([][]byte, len(vm.Disks))
	for i, d := range vm.Disks {
		content[i] = make([]byte, d.Size)
	}
	var points [][][]byte
	for p := range 2 {
		spec := replica.SessionSpec{CheckpointID: "ck" + string(rune('0'+p)), ChangeTracking: "full", BlockSize: 64 << 10}
		CommitPoint(t, w, spec, vm.Disks, func(i int, _ replica.DiskInfo, dw *replica.DiskWriter) error {
			blk := make([]byte, 64<<10)
			for j := range blk {
				blk[j] = byte(1 + p*10 + i)
			}
			off := int64(p+i) * (128 << 10)
			copy(content[i][off:], blk)
			_, err := dw.WriteAt(blk, off)
			return err
		})
		point := make([][]byte, len(content))
		for i := range content {
			point[i] = append([]byte(nil), content[i]...)
		}
		points = append(points, point)
	}
	return points
}
