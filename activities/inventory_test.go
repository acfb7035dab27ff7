package activities

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/provider"
	"github.com/replicator/replicator/internal/provider/hyperv"
	"github.com/replicator/replicator/internal/provider/hyperv/hvsim"
	"github.com/replicator/replicator/internal/provider/lab"
)

// TestInventoryCarriesWhyAVMCannotBeReplicated: the reason the Hyper-V
// provider gives for a VM it cannot replicate reaches the run in the
// inventory, so that the run refuses the VM at its checks, before any
// checkpoint; a VM it can replicate carries none.
func TestInventoryCarriesWhyAVMCannotBeReplicated(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	sim, err := hvsim.Open("hv01", dir, hvsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"web01", "db01"} {
		if _, err := lab.CreateVM(dir, name, []int64{8 << 20}); err != nil {
			t.Fatal(err)
		}
	}
	if err := sim.SetVM(ctx, "web01", hvsim.VMOptions{ExtraDisks: []hvsim.ExtraDisk{{Kind: "passthrough", Path: `\\.\PHYSICALDRIVE4`, Size: 64 << 20}}}); err != nil {
		t.Fatal(err)
	}
	p := hyperv.NewOverWMI(sim, hyperv.Options{Logger: slog.New(slog.DiscardHandler)})
	src := &Source{Providers: map[string]provider.Provider{"hv01": p}}
	vms, err := src.Inventory(ctx, contract.InventoryInput{Host: "hv01", Patterns: []string{"*"}})
	if err != nil || len(vms) != 2 {
		t.Fatalf("inventory %+v, %v", vms, err)
	}
	for _, vm := range vms {
		switch vm.Name {
		case "web01":
			if !strings.Contains(vm.Unsupported, `(\\.\PHYSICALDRIVE4) is a pass-through disk`) {
				t.Errorf("web01: unsupported %q, want the pass-through disk named", vm.Unsupported)
			}
		case "db01":
			if vm.Unsupported != "" {
				t.Errorf("db01: unsupported %q, want none", vm.Unsupported)
			}
		}
	}
}
