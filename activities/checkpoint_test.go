package activities

import (
	"context"
	"slices"
	"testing"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/provider"
	"github.com/replicator/replicator/internal/provider/lab"
)

// TestCheckpointSweepsInTheSameActivity checks the one-round-trip
// checkpoint: the job's leftover checkpoint of the VM is removed once the new
// one exists, the new one stays, and checkpoints another job or an
// administrator made are left alone. Without Sweep nothing is removed.
func TestCheckpointSweepsInTheSameActivity(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	vm, err := lab.CreateVM(dir, "web01", []int64{1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	host := lab.New("hv01", dir)
	cfg := &config.Config{Jobs: []config.Job{{Name: "demo", Source: "hv01", Target: "dr01", VMs: []string{"web01"}}}}
	src := &Source{Providers: map[string]provider.Provider{"hv01": host}, Config: func() (*config.Config, error) { return cfg, nil }}

	take := func(name string) string {
		cp, err := host.CreateCheckpoint(ctx, vm.ID, provider.CheckpointOptions{Name: name, Consistency: provider.CrashConsistent})
		if err != nil {
			t.Fatal(err)
		}
		return cp.ID
	}
	leftover := take(provider.CheckpointName("demo", "web01"))
	other := take(provider.CheckpointName("other", "web01"))
	admin := take("before patching")

	in := contract.CheckpointInput{Host: "hv01", Job: "demo", VMID: vm.ID, VMName: "web01"}
	plain, err := src.CreateCheckpoint(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if len(plain.Removed) != 0 || !has(t, host, vm.ID, leftover) {
		t.Fatalf("without sweep: removed %v; the leftover %s must stay", plain.Removed, leftover)
	}

	in.Sweep = true
	cp, err := src.CreateCheckpoint(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if cp.SweepError != "" {
		t.Fatalf("sweep error: %s", cp.SweepError)
	}
	slices.Sort(cp.Removed)
	want := []string{leftover, plain.ID}
	slices.Sort(want)
	if !slices.Equal(cp.Removed, want) {
		t.Errorf("removed %v, want the job's earlier checkpoints %v", cp.Removed, want)
	}
	for _, id := range []string{cp.ID, other, admin} {
		if !has(t, host, vm.ID, id) {
			t.Errorf("checkpoint %s was removed; only the job's earlier ones may be", id)
		}
	}
	for _, id := range want {
		if has(t, host, vm.ID, id) {
			t.Errorf("checkpoint %s is still on the host", id)
		}
	}
}

func has(t *testing.T, p provider.Provider, vmID, id string) bool {
	t.Helper()
	cps, err := p.Checkpoints(context.Background(), vmID)
	if err != nil {
		t.Fatal(err)
	}
	for _, cp := range cps {
		if cp.ID == id {
			return true
		}
	}
	return false
}
