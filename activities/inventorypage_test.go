package activities

import (
	"context"
	"fmt"
	"slices"
	"testing"

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
