package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/diskimage"
	"github.com/replicator/replicator/internal/provider/lab"
	"github.com/replicator/replicator/internal/replica"
	"github.com/replicator/replicator/internal/replica/replicatest"
	"github.com/replicator/replicator/internal/vhdx"
)

// replicaRow is what `starter replica ls --json` prints of one replica.
type replicaRow struct {
	Job, VM, VMID, State, Point, NewestPoint, ReplicaVM, Host string
	Points                                                    int
}

func (h *harness) replicaList(t *testing.T, starter string) []replicaRow {
	t.Helper()
	res := runStarterBin(t, starter, h.dir, "replica", "ls", "--json", "--config", h.cfgFile)
	if res.code != 0 {
		t.Fatalf("replica ls: exit %d: %s", res.code, res.stderr)
	}
	var rows []replicaRow
	if err := json.Unmarshal([]byte(res.stdout), &rows); err != nil {
		t.Fatalf("replica ls --json: %v\n%s", err, res.stdout)
	}
	return rows
}

func rowOf(t *testing.T, rows []replicaRow, vm string) replicaRow {
	t.Helper()
	for _, r := range rows {
		if r.VM == vm {
			return r
		}
	}
	t.Fatalf("replica ls has no %s: %+v", vm, rows)
	return replicaRow{}
}

// checkReplicaVMOnPoint compares every disk of the replica VM with the
// replica's restore point, byte for byte.
func (h *harness) checkReplicaVMOnPoint(t *testing.T, r *replica.Replica, vmName, point string) {
	t.Helper()
	dr := lab.New("dr01", h.cfg.Agent.Host.Path)
	vm, err := dr.ReplicaVM(context.Background(), vmName)
	if err != nil {
		t.Fatal(err)
	}
	pts, err := r.Points()
	if err != nil {
		t.Fatal(err)
	}
	if len(vm.Disks) != len(pts[0].Disks) {
		t.Fatalf("replica VM has %d disks, the replica %d", len(vm.Disks), len(pts[0].Disks))
	}
	for _, d := range vm.Disks {
		got, err := diskimage.Open(d.Path)
		if err != nil {
			t.Fatal(err)
		}
		want, err := r.OpenPoint(point, d.ID)
		if err != nil {
			t.Fatal(err)
		}
		replicatest.RequireSameImage(t, "replica VM "+vmName+" disk "+d.ID, want, got, want.Size(), nil)
		got.Close()
		want.Close()
	}
}

// Replicate three times with writes between, fail over to the middle point:
// the replica VM runs on the disk of that run; replication skips it and
// writes nothing; refused operations exit 1 naming the state and change
// nothing; undo returns it to ready on the newest point and the next run is
// incremental.
func TestFailoverToAPointAndUndo(t *testing.T) {
	h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, false, nil)
	starter := buildStarter(t, filepath.Join(h.dir, "bin"))
	ctx := context.Background()
	src := lab.New("hv01", h.cfg.Hosts[0].Path)
	var runs []contract.ReplicationResult
	for i := 0; i < 3; i++ {
		if i > 0 {
			if err := src.Write(ctx, "web01", 0, 2, int64(100+i)); err != nil {
				t.Fatal(err)
			}
		}
		res := h.run(contract.ReplicationInput{Job: "demo", VMs: []string{"web01"}})
		requireSuccess(t, res)
		// The point equals the source at this run (outside excluded ranges).
		h.checkReplicaMatchesSource(res)
		runs = append(runs, res)
	}
	vmID := runs[0].VMs[0].ID
	store, err := replica.Open(h.cfg.Agent.Datastore)
	if err != nil {
		t.Fatal(err)
	}
	r, err := store.Replica("demo", vmID)
	if err != nil {
		t.Fatal(err)
	}

	// After each commit the replica VM is registered, off, on the newest point.
	rows := h.replicaList(t, starter)
	row := rowOf(t, rows, "web01")
	if row.State != "ready" || row.NewestPoint != runs[2].VMs[0].RestorePoint || row.ReplicaVM != "web01_replica" || row.Points != 3 {
		t.Fatalf("before failover: %+v", row)
	}
	h.checkReplicaVMOnPoint(t, r, "web01_replica", runs[2].VMs[0].RestorePoint)

	// Refused before a failover: undo of nothing, an unknown point, a missing replica.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"failover", "undo", "demo", "web01"}, "state ready"},
		{[]string{"failover", "demo", "web01", "--point", "nope"}, runs[0].VMs[0].RestorePoint},
		{[]string{"failover", "demo", "nosuchvm"}, "no replica"},
	} {
		res := runStarterBin(t, starter, h.dir, append(c.args, "--config", h.cfgFile)...)
		if res.code != 1 || !strings.Contains(res.stderr, c.want) {
			t.Fatalf("starter %v: exit %d, stderr %q; want exit 1 naming %q", c.args, res.code, res.stderr, c.want)
		}
		if got := rowOf(t, h.replicaList(t, starter), "web01"); got != row {
			t.Fatalf("refused %v changed the replica: %+v, was %+v", c.args, got, row)
		}
	}

	// Fail over to the middle point.
	middle := runs[1].VMs[0].RestorePoint
	res := runStarterBin(t, starter, h.dir, "failover", "demo", "web01", "--point", middle, "--output", "json", "--config", h.cfgFile)
	if res.code != 0 {
		t.Fatalf("failover: exit %d: %s", res.code, res.stderr)
	}
	var op contract.ReplicaOpResult
	if err := json.Unmarshal([]byte(res.stdout), &op); err != nil {
		t.Fatalf("failover output: %v\n%s", err, res.stdout)
	}
	if op.State != "failover" || op.Point != middle || op.VMState != "running" || op.ReplicaVM != "web01_replica" {
		t.Fatalf("failover result %+v", op)
	}
	h.checkReplicaVMOnPoint(t, r, "web01_replica", middle)
	inFailover := rowOf(t, h.replicaList(t, starter), "web01")
	if inFailover.State != "failover" || inFailover.Point != middle {
		t.Fatalf("replica ls in failover: %+v", inFailover)
	}

	// The replica VM writes; the restore points are never written.
	dr := lab.New("dr01", h.cfg.Agent.Host.Path)
	if err := dr.Write(ctx, "web01_replica", 0, 5, 7); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{runs[0].VMs[0].RestorePoint, middle, runs[2].VMs[0].RestorePoint} {
		if _, err := r.Verify(ctx, p); err != nil {
			t.Fatalf("restore point %s after writes in failover: %v", p, err)
		}
	}

	// Replication skips the VM and says so; no point is added.
	if err := src.Write(ctx, "web01", 0, 1, 200); err != nil {
		t.Fatal(err)
	}
	skipped := h.run(contract.ReplicationInput{Job: "demo", VMs: []string{"web01"}})
	if vm := skipped.VMs[0]; vm.RestorePoint != "" || !strings.Contains(vm.Error, "skipped") || !strings.Contains(vm.Error, "failover") {
		t.Fatalf("run during failover: %+v", vm)
	}
	if got := rowOf(t, h.replicaList(t, starter), "web01"); got.Points != 3 || got.State != "failover" {
		t.Fatalf("run during failover changed the replica: %+v", got)
	}

	// A second failover is refused, naming the state.
	res = runStarterBin(t, starter, h.dir, "failover", "demo", "web01", "--output", "json", "--config", h.cfgFile)
	if res.code != 1 || !strings.Contains(res.stderr, "state failover") {
		t.Fatalf("failover in failover: exit %d, %q", res.code, res.stderr)
	}
	if got := rowOf(t, h.replicaList(t, starter), "web01"); got != inFailover {
		t.Fatalf("refused failover changed the replica: %+v", got)
	}

	// Undo: back to ready, the VM off on the newest point, its writes gone.
	res = runStarterBin(t, starter, h.dir, "failover", "undo", "demo", "web01", "--output", "json", "--config", h.cfgFile)
	if res.code != 0 {
		t.Fatalf("failover undo: exit %d: %s", res.code, res.stderr)
	}
	if err := json.Unmarshal([]byte(res.stdout), &op); err != nil || op.State != "ready" || op.VMState != "off" {
		t.Fatalf("undo result %+v, %v", op, err)
	}
	h.checkReplicaVMOnPoint(t, r, "web01_replica", runs[2].VMs[0].RestorePoint)

	// Replication resumes incrementally.
	next := h.run(contract.ReplicationInput{Job: "demo", VMs: []string{"web01"}})
	requireSuccess(t, next)
	d := next.VMs[0].Disks[0]
	if d.ChangeTracking == contract.TrackingFull || d.BytesRead > 40<<20 {
		t.Fatalf("run after undo is not incremental: %+v", d)
	}
	h.checkReplicaMatchesSource(next)
	if got := rowOf(t, h.replicaList(t, starter), "web01"); got.State != "ready" || got.NewestPoint != next.VMs[0].RestorePoint {
		t.Fatalf("after the next run: %+v", got)
	}
}

// Planned failover: the source VM is shut down, a final incremental run
// takes what it wrote since the last run, and the replica VM starts on
// exactly that: no write made before the shutdown is lost.
func TestPlannedFailoverLosesNoWrite(t *testing.T) {
	h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, false, nil)
	starter := buildStarter(t, filepath.Join(h.dir, "bin"))
	ctx := context.Background()
	src := lab.New("hv01", h.cfg.Hosts[0].Path)
	first := h.run(contract.ReplicationInput{Job: "demo", VMs: []string{"web01"}})
	requireSuccess(t, first)
	// Written after the last run: only a final run can bring it.
	if err := src.Write(ctx, "web01", 0, 3, 77); err != nil {
		t.Fatal(err)
	}
	res := runStarterBin(t, starter, h.dir, "failover", "planned", "demo", "web01", "--output", "json", "--config", h.cfgFile)
	if res.code != 0 {
		t.Fatalf("failover planned: exit %d: %s", res.code, res.stderr)
	}
	var out contract.PlannedFailoverResult
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
		t.Fatal(err)
	}
	if out.FinalRun.Status != contract.StatusSuccess || out.Failover.State != "failover" || out.Failover.VMState != "running" {
		t.Fatalf("planned failover: %+v", out)
	}
	if d := out.FinalRun.VMs[0].Disks[0]; d.ChangeTracking == contract.TrackingFull {
		t.Fatalf("the final run was not incremental: %+v", d)
	}
	vm, err := src.ReplicaVM(ctx, "web01")
	if err != nil || vm.State != "off" {
		t.Fatalf("source VM after planned failover: %+v %v", vm, err)
	}
	// The replica VM's disk is the source's disk as it was shut down
	// (outside the ranges replication excludes: swap).
	h.checkReplicaMatchesSource(out.FinalRun)
	store, err := replica.Open(h.cfg.Agent.Datastore)
	if err != nil {
		t.Fatal(err)
	}
	r, err := store.Replica("demo", vm.ID)
	if err != nil {
		t.Fatal(err)
	}
	if out.Failover.Point != out.FinalRun.VMs[0].RestorePoint {
		t.Fatalf("failed over to %s, the final run made %s", out.Failover.Point, out.FinalRun.VMs[0].RestorePoint)
	}
	h.checkReplicaVMOnPoint(t, r, "web01_replica", out.Failover.Point)

	// A planned failover of a replica in failover is refused before the
	// source is touched.
	if err := src.StartVM(ctx, "web01"); err != nil {
		t.Fatal(err)
	}
	res = runStarterBin(t, starter, h.dir, "failover", "planned", "demo", "web01", "--output", "json", "--config", h.cfgFile)
	if res.code != 1 || !strings.Contains(res.stderr, "state failover") {
		t.Fatalf("planned failover in failover: exit %d, %q", res.code, res.stderr)
	}
	if vm, _ := src.ReplicaVM(ctx, "web01"); vm.State != "running" {
		t.Fatalf("a refused planned failover shut the source down: %+v", vm)
	}
}

// diskSum digests what a disk image reads, whole.
func diskSum(t *testing.T, path string) [32]byte {
	t.Helper()
	img, err := diskimage.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	hsh := sha256.New()
	if _, err := io.Copy(hsh, io.NewSectionReader(img, 0, img.Size())); err != nil {
		t.Fatal(err)
	}
	var s [32]byte
	copy(s[:], hsh.Sum(nil))
	return s
}

// Permanent failover: the replica VM keeps what it runs on and wrote, on
// disks of its own; the restore points are deleted; replication skips the VM
// for good.
func TestPermanentFailover(t *testing.T) {
	h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, false, nil)
	starter := buildStarter(t, filepath.Join(h.dir, "bin"))
	ctx := context.Background()
	first := h.run(contract.ReplicationInput{Job: "demo", VMs: []string{"web01"}})
	requireSuccess(t, first)
	res := runStarterBin(t, starter, h.dir, "failover", "permanent", "demo", "web01", "--output", "json", "--config", h.cfgFile)
	if res.code != 1 || !strings.Contains(res.stderr, "state ready") {
		t.Fatalf("permanent of a ready replica: exit %d, %q", res.code, res.stderr)
	}
	if res = runStarterBin(t, starter, h.dir, "failover", "demo", "web01", "--output", "json", "--config", h.cfgFile); res.code != 0 {
		t.Fatalf("failover: exit %d: %s", res.code, res.stderr)
	}
	dr := lab.New("dr01", h.cfg.Agent.Host.Path)
	if err := dr.Write(ctx, "web01_replica", 0, 3, 9); err != nil {
		t.Fatal(err)
	}
	before, err := dr.ReplicaVM(ctx, "web01_replica")
	if err != nil {
		t.Fatal(err)
	}
	want := diskSum(t, before.Disks[0].Path)

	res = runStarterBin(t, starter, h.dir, "failover", "permanent", "demo", "web01", "--output", "json", "--config", h.cfgFile)
	if res.code != 0 {
		t.Fatalf("failover permanent: exit %d: %s", res.code, res.stderr)
	}
	after, err := dr.ReplicaVM(ctx, "web01_replica")
	if err != nil {
		t.Fatal(err)
	}
	img, err := vhdx.Open(after.Disks[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	standalone := !img.HasParent()
	img.Close()
	if !standalone || after.State != "running" {
		t.Fatalf("after permanent: %+v (standalone %v)", after, standalone)
	}
	if got := diskSum(t, after.Disks[0].Path); got != want {
		t.Fatal("the standalone disk does not hold what the replica VM ran on")
	}
	row := rowOf(t, h.replicaList(t, starter), "web01")
	if row.State != "permanent" || row.Points != 0 || row.NewestPoint != "" {
		t.Fatalf("replica after permanent: %+v", row)
	}
	if _, err := os.Stat(filepath.Join(h.cfg.Agent.Datastore, "demo", first.VMs[0].ID, "disks")); !os.IsNotExist(err) {
		t.Fatalf("restore point files still there: %v", err)
	}
	next := h.run(contract.ReplicationInput{Job: "demo", VMs: []string{"web01"}})
	if vm := next.VMs[0]; vm.RestorePoint != "" || !strings.Contains(vm.Error, "permanently") {
		t.Fatalf("run after permanent failover: %+v", vm)
	}
	res = runStarterBin(t, starter, h.dir, "failover", "undo", "demo", "web01", "--output", "json", "--config", h.cfgFile)
	if res.code != 1 || !strings.Contains(res.stderr, "state permanent") {
		t.Fatalf("undo after permanent: exit %d, %q", res.code, res.stderr)
	}
}
