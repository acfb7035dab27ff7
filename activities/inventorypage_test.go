package activities

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/provider"
	"github.com/replicator/replicator/internal/provider/lab"
)

// InventoryPage reads a host's VMs page by page: every selected VM once, in
// VM id order, no page over its limit; the first page counts the selection
// and names the patterns that select nothing; a selection that fits one page
// is the host's order, as Inventory answers it.
func TestInventoryPagesEveryVMOnceInIDOrder(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for i := range 7 {
		if _, err := lab.CreateVM(dir, fmt.Sprintf("vm%02d", i), []int64{1 << 20}); err != nil {
			t.Fatal(err)
		}
	}
	src := &Source{Providers: map[string]provider.Provider{"hv01": lab.New("hv01", dir)}}
	patterns := []string{"vm*", "gone01"}
	whole, err := src.Inventory(ctx, contract.InventoryInput{Host: "hv01", Patterns: patterns})
	if err != nil {
		t.Fatal(err)
	}

	var ids []string
	after := ""
	for pages := 0; ; pages++ {
		if pages > 7 {
			t.Fatal("the pages do not end")
		}
		page, err := src.InventoryPage(ctx, contract.InventoryInput{Host: "hv01", Patterns: patterns, After: after, Limit: 3})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.VMs) > 3 || len(page.VMs) == 0 {
			t.Fatalf("page after %q holds %d VMs", after, len(page.VMs))
		}
		if after == "" && (page.Total != 7 || !slices.Equal(page.Missing, []string{"gone01"})) {
			t.Fatalf("first page: total %d, missing %v", page.Total, page.Missing)
		}
		for _, vm := range page.VMs {
			ids = append(ids, vm.ID)
		}
		after = ids[len(ids)-1]
		if !page.More {
			break
		}
	}
	if len(ids) != 7 || !slices.IsSorted(ids) || len(slices.Compact(slices.Clone(ids))) != 7 {
		t.Fatalf("paged ids %v: want all 7 once, sorted", ids)
	}

	one, err := src.InventoryPage(ctx, contract.InventoryInput{Host: "hv01", Patterns: patterns, Limit: 500})
	if err != nil || one.More || len(one.VMs) != len(whole) {
		t.Fatalf("one page: %d VMs, more %v, %v", len(one.VMs), one.More, err)
	}
	for i := range whole {
		if one.VMs[i].ID != whole[i].ID {
			t.Fatalf("one page out of the host's order at %d: %s, want %s", i, one.VMs[i].ID, whole[i].ID)
		}
	}
	if _, err := src.InventoryPage(ctx, contract.InventoryInput{Host: "hv01", Patterns: patterns}); err == nil {
		t.Fatal("a page without a limit was answered")
	}
}

// A run's input narrows its job to some VMs; it cannot widen it: the
// inventory of a job holds only VMs the job's configured selection picks,
// whatever patterns the workflow asks with, and a job is read only from
// its own host.
func TestInventoryStaysWithinTheJob(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for _, name := range []string{"app01", "app02", "hr01"} {
		if _, err := lab.CreateVM(dir, name, []int64{1 << 20}); err != nil {
			t.Fatal(err)
		}
	}
	cfg := config.Dev(t.TempDir())
	cfg.Jobs[0].VMs = []string{"app*"}
	src := &Source{Providers: map[string]provider.Provider{"hv01": lab.New("hv01", dir)},
		Config: func() (*config.Config, error) { return cfg, nil }}
	names := func(vms []contract.VM) []string {
		var out []string
		for _, vm := range vms {
			out = append(out, vm.Name)
		}
		slices.Sort(out)
		return out
	}
	for _, patterns := range [][]string{{"*"}, {"app01", "app02", "hr01"}, {"hr*", "app*"}} {
		vms, err := src.Inventory(ctx, contract.InventoryInput{Host: "hv01", Job: "demo", Patterns: patterns})
		if err != nil {
			t.Fatal(err)
		}
		page, err := src.InventoryPage(ctx, contract.InventoryInput{Host: "hv01", Job: "demo", Patterns: patterns, Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		if got := names(vms); !slices.Equal(got, []string{"app01", "app02"}) {
			t.Errorf("inventory of job demo (vms app*) asked for %v: %v", patterns, got)
		}
		if page.Total != 2 {
			t.Errorf("paged inventory of job demo asked for %v counts %d VMs, want 2", patterns, page.Total)
		}
	}
	page, err := src.InventoryPage(ctx, contract.InventoryInput{Host: "hv01", Job: "demo", Patterns: []string{"hr01", "app01"}, Limit: 5})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(page.VMs); !slices.Equal(got, []string{"app01"}) || !slices.Equal(page.Missing, []string{"hr01"}) {
		t.Errorf("narrowed to hr01 and app01: VMs %v, missing %v; want [app01] and hr01 missing", got, page.Missing)
	}
	// Without a job (histories recorded before it was sent) the patterns alone pick.
	vms, err := src.Inventory(ctx, contract.InventoryInput{Host: "hv01", Patterns: []string{"hr01"}})
	if err != nil || !slices.Equal(names(vms), []string{"hr01"}) {
		t.Errorf("inventory without a job: %v %v", names(vms), err)
	}
	for _, in := range []contract.InventoryInput{
		{Host: "hv02", Job: "demo", Patterns: []string{"*"}},
		{Host: "hv01", Job: "nosuch", Patterns: []string{"*"}},
	} {
		if _, err := src.Inventory(ctx, in); err == nil {
			t.Errorf("inventory of job %q on host %s: no error", in.Job, in.Host)
		}
	}
}
