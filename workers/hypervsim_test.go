package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.temporal.io/api/serviceerror"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/provider"
	"github.com/replicator/replicator/internal/provider/hyperv/hvsim"
	"github.com/replicator/replicator/internal/provider/lab"
	"github.com/replicator/replicator/internal/testkit"
)

// The end-to-end suite through the Hyper-V provider over the WMI-level
// simulator: the same runs as over the lab, with everything above the COM
// calls as it runs against a real host.

// simulated serves the job's source host through the Hyper-V simulator.
func simulated(delay time.Duration, warnings bool) func(*config.Config) {
	return func(c *config.Config) {
		c.Hosts[0].Provider = "hyperv-sim"
		c.Hosts[0].Simulator = config.Simulator{JobDelay: delay, JobWarnings: warnings}
	}
}

// simState is what the simulated host holds of a VM: its checkpoints and
// reference points, once every due job has ended.
func simState(t *testing.T, h *harness, vm string) (checkpoints []provider.Checkpoint, referencePoints []lab.ReferencePoint) {
	t.Helper()
	ctx := context.Background()
	s, err := hvsim.Open(h.cfg.Hosts[0].Name, h.cfg.Hosts[0].Path, hvsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	cps, err := s.Lab().Checkpoints(ctx, vm)
	if err != nil {
		t.Fatal(err)
	}
	rps, err := s.Lab().ReferencePoints(ctx, vm)
	if err != nil {
		t.Fatal(err)
	}
	return cps, rps
}

// requireOneReferencePoint: after a good run the host holds one reference
// point of the job per VM, named for it, and no checkpoint.
func requireOneReferencePoint(t *testing.T, h *harness, res contract.ReplicationResult) {
	t.Helper()
	for _, vm := range res.VMs {
		cps, rps := simState(t, h, vm.ID)
		if len(cps) != 0 || len(rps) != 1 {
			t.Fatalf("VM %s: %d checkpoints and %d reference points on the host, want 0 and 1: %+v %+v", vm.Name, len(cps), len(rps), cps, rps)
		}
		if want := provider.CheckpointName(res.Job, vm.Name); rps[0].Name != want {
			t.Errorf("VM %s: reference point named %q, want %q", vm.Name, rps[0].Name, want)
		}
	}
}

func TestHypervSimFullThenIncremental(t *testing.T) {
	h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, false, simulated(0, false))
	res := h.run(contract.ReplicationInput{Job: "demo"})
	requireSuccess(t, res)
	if len(res.VMs) != 2 {
		t.Fatalf("want the 2 demo VMs, got %d", len(res.VMs))
	}
	for _, vm := range res.VMs {
		for _, d := range vm.Disks {
			if d.ChangeTracking != contract.TrackingFull || d.BytesRead == 0 {
				t.Errorf("first run of %s disk %s: %+v", vm.Name, d.ID, d)
			}
		}
	}
	h.checkReplicaMatchesSource(res)
	requireOneReferencePoint(t, h, res)

	// 1% of every disk of web01 changes: RCT finds it, and little is read.
	host := lab.New("hv01", h.cfg.Hosts[0].Path)
	var web01 contract.VMResult
	for _, vm := range res.VMs {
		if vm.Name == "web01" {
			web01 = vm
		}
	}
	for i := range web01.Disks {
		if err := host.Write(context.Background(), "web01", i, 1, int64(100+i)); err != nil {
			t.Fatal(err)
		}
	}
	res2 := h.run(contract.ReplicationInput{Job: "demo", VMs: []string{"web01"}})
	requireSuccess(t, res2)
	for _, d := range res2.VMs[0].Disks {
		if d.ChangeTracking != contract.TrackingRCT {
			t.Fatalf("second run, disk %s: change tracking %q, want rct", d.ID, d.ChangeTracking)
		}
		if d.BytesRead == 0 || d.BytesRead > d.Size/20 {
			t.Fatalf("second run read %d bytes of disk %s (%d bytes) after a 1%% change: more than 5%%", d.BytesRead, d.ID, d.Size)
		}
		t.Logf("incremental by RCT over the simulated host: disk %s, %d of %d bytes read", d.ID, d.BytesRead, d.Size)
	}
	h.checkReplicaMatchesSource(res2)
	requireOneReferencePoint(t, h, res2)

	// An administrator removes the reference point (RCT gone): the next run
	// compares digests and stays exact.
	_, rps := simState(t, h, web01.ID)
	if err := host.DestroyReferencePoint(context.Background(), web01.ID, rps[0].ID); err != nil {
		t.Fatal(err)
	}
	if err := host.Write(context.Background(), "web01", 0, 1, 7); err != nil {
		t.Fatal(err)
	}
	res3 := h.run(contract.ReplicationInput{Job: "demo", VMs: []string{"web01"}})
	requireSuccess(t, res3)
	if d := res3.VMs[0].Disks[0]; d.ChangeTracking != contract.TrackingDigest || d.BlocksChanged == 0 {
		t.Fatalf("run without a reference point: %+v, want digest with changed blocks", d)
	}
	h.checkReplicaMatchesSource(res3)
	requireOneReferencePoint(t, h, res3)
}

func TestHypervSimWindowExpiryResumesNextRun(t *testing.T) {
	endToEndWindowExpiry(t, simulated(0, false))
}

func TestHypervSimProxyKilledMidTransfer(t *testing.T) {
	endToEndProxyKilled(t, simulated(0, false))
}

func TestHypervSimConnectionCutTenTimes(t *testing.T) {
	endToEndConnectionCuts(t, simulated(0, false))
}

// A cancelled run releases its checkpoint on the host; the next run succeeds.
func TestHypervSimCancelledRunLeavesNoCheckpoint(t *testing.T) {
	h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, true, simulated(0, false))
	h.proxy.setRate(1 << 20)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	run := h.startRun(ctx, contract.ReplicationInput{Job: "demo", VMs: []string{"web01"}})
	id := run.GetID()
	waitFor(t, "the transfer's first 2 MiB", 2*time.Minute, 50*time.Millisecond, func() bool { return h.proxy.forwarded() >= 2<<20 })
	vms, err := lab.New("hv01", h.cfg.Hosts[0].Path).VMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var vmID string
	for _, vm := range vms {
		if vm.Name == "web01" {
			vmID = vm.ID
		}
	}
	if cps, _ := simState(t, h, vmID); len(cps) != 1 {
		t.Fatalf("%d checkpoints during the transfer, want 1", len(cps))
	}
	if err := h.c.CancelWorkflow(ctx, id, ""); err != nil {
		t.Fatal(err)
	}
	_ = run.Get(ctx, nil)
	h.proxy.setRate(0)
	testkit.Eventually(t, time.Minute, 200*time.Millisecond, func() error {
		if cps, _ := simState(t, h, vmID); len(cps) > 0 {
			return fmt.Errorf("the cancelled run left checkpoints: %+v", cps)
		}
		return nil
	})
	res := h.run(contract.ReplicationInput{Job: "demo", VMs: []string{"web01"}})
	requireSuccess(t, res)
	h.checkReplicaMatchesSource(res)
	requireOneReferencePoint(t, h, res)
}

// Every job ends in 32768 (completed with warnings): the run succeeds and
// the VM's result carries the host's warning.
func TestHypervSimJobWarnings(t *testing.T) {
	h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, false, simulated(0, true))
	res := h.run(contract.ReplicationInput{Job: "demo", VMs: []string{"web01"}})
	requireSuccess(t, res)
	if w := res.VMs[0].Warning; !strings.Contains(w, "completed with warnings") {
		t.Fatalf("VM warning %q, want the job's warning", w)
	}
	h.checkReplicaMatchesSource(res)
	requireOneReferencePoint(t, h, res)
}

// Checkpoint and conversion jobs that run longer than the activities'
// one-minute heartbeat timeout: the activities heartbeat while they wait, so
// no second attempt starts, and the host ends with exactly one reference
// point and no checkpoint. 65 s keeps the test short while outlasting the
// timeout; `workers --dev --hyperv-sim --hyperv-sim-job-delay 3m` runs the
// same with three minutes.
func TestHypervSimJobsOutlastHeartbeatTimeout(t *testing.T) {
	h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, false, simulated(65*time.Second, false))
	start := time.Now()
	res := h.run(contract.ReplicationInput{Job: "demo", VMs: []string{"web01"}})
	requireSuccess(t, res)
	if took := time.Since(start); took < 130*time.Second {
		t.Fatalf("the run took %s: the two jobs did not run their 65 s each", took)
	}
	h.checkReplicaMatchesSource(res)
	requireOneReferencePoint(t, h, res)
}

// A VM with a pass-through disk (and one with a VHD disk) fails with the
// reason naming the disk, before any checkpoint is made on it; the other VMs
// of the run are replicated.
func TestHypervSimUnsupportedDisksRefused(t *testing.T) {
	h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, false, simulated(0, false))
	ctx := context.Background()
	host := h.cfg.Hosts[0].Name
	s, err := hvsim.Open(host, h.cfg.Hosts[0].Path, hvsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	vms, err := s.Lab().VMs(ctx)
	if err != nil || len(vms) != 2 {
		t.Fatalf("demo VMs %+v, %v", vms, err)
	}
	refused := vms[0]
	if err := s.SetVM(ctx, refused.Name, hvsim.VMOptions{ExtraDisks: []hvsim.ExtraDisk{{Kind: "passthrough", Path: `\\.\PHYSICALDRIVE4`, Size: 64 << 20}}}); err != nil {
		t.Fatal(err)
	}
	res := h.run(contract.ReplicationInput{Job: "demo"})
	if res.Status != contract.StatusPartial {
		t.Fatalf("run %s, want partial: %+v", res.Status, res)
	}
	// The job's check refuses the VM, naming the disk; the host's own
	// refusal at CreateSnapshot would name the call instead.
	requireRefusedByCheck(t, res, host, refused, `PHYSICALDRIVE4) is a pass-through disk`)
	for _, vm := range res.VMs {
		if vm.ID != refused.ID && vm.Status != contract.StatusSuccess {
			t.Errorf("VM %s: %+v", vm.Name, vm)
		}
	}
	requireNothingOfVM(t, h, s, refused, 1)

	// A VHD disk instead: refused the same way, naming the file.
	if err := s.SetVM(ctx, refused.Name, hvsim.VMOptions{ExtraDisks: []hvsim.ExtraDisk{{Kind: "vhd", Path: "/srv/legacy/data.vhd", Size: 64 << 20}}}); err != nil {
		t.Fatal(err)
	}
	res = h.run(contract.ReplicationInput{Job: "demo", VMs: []string{refused.Name}})
	if res.Status != contract.StatusFailed || len(res.VMs) != 1 {
		t.Fatalf("VHD disk: %+v", res)
	}
	requireRefusedByCheck(t, res, host, refused, "(/srv/legacy/data.vhd) is a VHD file")
	requireNothingOfVM(t, h, s, refused, 1)
}

// requireRefusedByCheck: the run's check "the job's VMs can be replicated"
// failed naming the VM and why, and the VM failed with the same reason.
func requireRefusedByCheck(t *testing.T, res contract.ReplicationResult, host string, vm provider.VM, why string) {
	t.Helper()
	var check *contract.Check
	for i := range res.Checks {
		if res.Checks[i].Name == "the job's VMs can be replicated from "+host {
			check = &res.Checks[i]
		}
	}
	if check == nil || check.OK || !strings.Contains(check.Detail, "VM "+vm.Name+": ") || !strings.Contains(check.Detail, why) {
		t.Fatalf("checks %+v: want a failed check naming VM %s and %q", res.Checks, vm.Name, why)
	}
	for _, r := range res.VMs {
		if r.ID != vm.ID {
			continue
		}
		if r.Status != contract.StatusFailed || !strings.HasPrefix(r.Error, "VM "+vm.Name+" cannot be replicated from host "+host+": ") || !strings.Contains(r.Error, why) {
			t.Fatalf("VM %s: status %s, error %q; want failed by the check, naming %q", r.Name, r.Status, r.Error, why)
		}
		return
	}
	t.Fatalf("VM %s missing from the result %+v", vm.Name, res.VMs)
}

// requireNothingOfVM: no workflow of the VM started, the host ran
// snapshots CreateSnapshot jobs in all, those of the job's other VMs, and it
// holds no checkpoint or reference point of the VM.
func requireNothingOfVM(t *testing.T, h *harness, s *hvsim.Sim, vm provider.VM, snapshots int) {
	t.Helper()
	ctx := context.Background()
	id := contract.VMWorkflowID(h.cfg.Hosts[0].Name, vm.ID)
	var notFound *serviceerror.NotFound
	if _, err := h.c.DescribeWorkflowExecution(ctx, id, ""); !errors.As(err, &notFound) {
		t.Fatalf("workflow %s of the refused VM: %v; want none started", id, err)
	}
	jobs, err := s.Query(ctx, "SELECT * FROM Msvm_ConcreteJob WHERE ElementName = 'CreateSnapshot'")
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != snapshots {
		t.Fatalf("the host ran %d CreateSnapshot jobs, want %d (none for VM %s): %+v", len(jobs), snapshots, vm.Name, jobs)
	}
	if cps, rps := simState(t, h, vm.ID); len(cps) != 0 || len(rps) != 0 {
		t.Fatalf("the refused VM has %d checkpoints and %d reference points", len(cps), len(rps))
	}
}
