package activities

import (
	"context"
	"strings"
	"testing"

	"go.temporal.io/sdk/testsuite"

	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/provider"
	"github.com/replicator/replicator/internal/provider/lab"
)

// An administrator's checkpoint is never released or turned into a reference
// point, whatever id the input names; replicator's own are.
func TestOnlyOwnCheckpointsReleased(t *testing.T) {
	dir := t.TempDir()
	vm, err := lab.CreateVM(dir, "web01", []int64{8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	h := lab.New("hv01", dir)
	ctx := context.Background()
	admin, err := h.CreateCheckpoint(ctx, vm.ID, provider.CheckpointOptions{Name: "before patching"})
	if err != nil {
		t.Fatal(err)
	}
	ours, err := h.CreateCheckpoint(ctx, vm.ID, provider.CheckpointOptions{Name: provider.CheckpointName("demo", "web01")})
	if err != nil {
		t.Fatal(err)
	}
	src := &Source{Providers: map[string]provider.Provider{"hv01": h}}
	var s testsuite.WorkflowTestSuite
	env := s.NewTestActivityEnvironment()
	env.RegisterActivity(src)

	_, err = env.ExecuteActivity(contract.ActReleaseCheckpoint, contract.ReleaseInput{Host: "hv01", VMID: vm.ID, CheckpointID: admin.ID})
	if err == nil || !strings.Contains(err.Error(), `named "before patching"`) {
		t.Fatalf("release of an administrator's checkpoint: %v", err)
	}
	_, err = env.ExecuteActivity(contract.ActConvertToReferencePoint, contract.ReferencePointInput{Host: "hv01", VMID: vm.ID, CheckpointID: admin.ID})
	if err == nil || !strings.Contains(err.Error(), `named "before patching"`) {
		t.Fatalf("conversion of an administrator's checkpoint: %v", err)
	}
	if _, err := h.Checkpoint(ctx, vm.ID, admin.ID); err != nil {
		t.Fatalf("the administrator's checkpoint is gone: %v", err)
	}

	if _, err := env.ExecuteActivity(contract.ActReleaseCheckpoint, contract.ReleaseInput{Host: "hv01", VMID: vm.ID, CheckpointID: ours.ID}); err != nil {
		t.Fatalf("release of replicator's checkpoint: %v", err)
	}
	if _, err := h.Checkpoint(ctx, vm.ID, ours.ID); err == nil {
		t.Fatal("replicator's checkpoint is still there after its release")
	}
	// Releasing what is gone is not an error.
	if _, err := env.ExecuteActivity(contract.ActReleaseCheckpoint, contract.ReleaseInput{Host: "hv01", VMID: vm.ID, CheckpointID: ours.ID}); err != nil {
		t.Fatalf("release of a missing checkpoint: %v", err)
	}
}
