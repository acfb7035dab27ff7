package workflows

import (
	"strings"
	"testing"

	"go.temporal.io/sdk/temporal"

	"github.com/replicator/replicator/internal/contract"
)

// A run that continued as new (its history had grown long) replicates only
// the VMs not started yet, with the settings the run started with (checked
// against the configuration), and its result still holds every VM of the run.
func TestContinuedRunReplicatesOnlyThePendingVMs(t *testing.T) {
	f := newFake()
	web, db := f.vms[0], f.vms[1]
	carried := contract.ReplicationResult{Job: "demo", Status: contract.StatusRunning, RunID: "first-run", VMs: []contract.VMResult{
		{Name: web.Name, ID: web.ID, Status: contract.StatusSuccess, RestorePoint: "rp-earlier",
			Disks: []contract.DiskResult{{ID: "0", Status: contract.StatusSuccess, Size: 64 << 20}}},
		{Name: db.Name, ID: db.ID, Status: contract.StatusPending,
			Disks: []contract.DiskResult{{ID: "0", Status: contract.StatusPending}, {ID: "1", Status: contract.StatusPending}}},
	}}
	spec := newFake().spec
	res, err := run(t, f, contract.ReplicationInput{Job: "demo", Continued: &contract.RunContinuation{
		Spec: spec, Pending: []contract.VM{db}, Result: carried,
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != contract.StatusSuccess || res.RunID != "first-run" || len(res.VMs) != 2 {
		t.Fatalf("result %+v", res)
	}
	if res.VMs[0].RestorePoint != "rp-earlier" || res.VMs[1].Status != contract.StatusSuccess || res.VMs[1].RestorePoint != "rp-"+db.ID {
		t.Fatalf("VMs %+v", res.VMs)
	}
	for _, c := range f.calls {
		if c == "Inventory" || c == "CheckSource" || strings.Contains(c, web.Name) || strings.Contains(c, web.ID) {
			t.Errorf("the continuation called %q", c)
		}
	}
	if len(f.committed) != 1 || f.committed[0] != db.ID {
		t.Fatalf("committed %v, want only %s", f.committed, db.ID)
	}
}

// A continuation whose carried settings are not the configured job's
// (another target address, retention 1, a tiny block size) is refused
// before any VM is touched, naming the settings that differ.
func TestContinuedRunWithForgedSettingsRefused(t *testing.T) {
	f := newFake()
	db := f.vms[1]
	forged := f.spec
	forged.TargetAddress, forged.Retention, forged.BlockSize = "10.6.6.6:7300", 1, 512
	carried := contract.ReplicationResult{Job: "demo", Status: contract.StatusRunning, RunID: "first-run", VMs: []contract.VMResult{
		{Name: db.Name, ID: db.ID, Status: contract.StatusPending,
			Disks: []contract.DiskResult{{ID: "0", Status: contract.StatusPending}, {ID: "1", Status: contract.StatusPending}}},
	}}
	_, err := run(t, f, contract.ReplicationInput{Job: "demo", Continued: &contract.RunContinuation{
		Spec: forged, Pending: []contract.VM{db}, Result: carried,
	}}, nil)
	if err == nil || !strings.Contains(err.Error(), "input continued.spec differs from the configuration of job \"demo\" in [targetAddress blockSize retention]") {
		t.Fatalf("forged continuation: %v", err)
	}
	for _, c := range f.calls {
		if c != "LoadJob" {
			t.Errorf("the refused continuation called %q", c)
		}
	}
}

// A VM waiting for its retry when the run continued as new goes on with its
// attempts counted, and its retries bounded, across the continuation.
func TestContinuedRunCountsAttempts(t *testing.T) {
	f := newFake()
	db := f.vms[1]
	f.spec.Retries = 3 // configured, and carried alike
	spec := f.spec
	carried := contract.ReplicationResult{Job: "demo", Status: contract.StatusRunning, RunID: "first-run", VMs: []contract.VMResult{
		{Name: db.Name, ID: db.ID, Status: contract.StatusPending, Attempts: 2, Retryable: true,
			Disks: []contract.DiskResult{{ID: "0", Status: contract.StatusFailed}, {ID: "1", Status: contract.StatusFailed}}},
	}}
	failed := false
	f.prepare = func(vm contract.VM) error {
		if !failed {
			failed = true
			return temporal.NewNonRetryableApplicationError("replica locked", contract.ErrTypeReplicaLocked, nil)
		}
		return nil
	}
	res, err := run(t, f, contract.ReplicationInput{Job: "demo", Continued: &contract.RunContinuation{
		Spec: spec, Pending: []contract.VM{db}, Result: carried,
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if vm := res.VMs[0]; vm.Status != contract.StatusSuccess || vm.Attempts != 4 {
		t.Fatalf("db01 %s after %d attempts, want success after 4 (2 before the continuation)", vm.Status, vm.Attempts)
	}
}
