package main

import (
	"strings"
	"testing"
	"time"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/replica"
)

// TestRunOutsideWindowHoursMakesNoCheckpoint: a job permitted only on another
// day makes no checkpoint and no restore point, and says when it may run.
func TestRunOutsideWindowHoursMakesNoCheckpoint(t *testing.T) {
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Fatal(err)
	}
	tomorrow := time.Now().In(tokyo).AddDate(0, 0, 1)
	day := tomorrow.Weekday().String()[:3]
	h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, false, func(c *config.Config) {
		c.Jobs[0].WindowHours = day + " 00:00-24:00"
		c.Jobs[0].Timezone = "Asia/Tokyo"
	})
	res := h.run(contract.ReplicationInput{Job: "demo"})
	opens := time.Date(tomorrow.Year(), tomorrow.Month(), tomorrow.Day(), 0, 0, 0, 0, tokyo).Format(time.RFC3339)
	if res.Status != contract.StatusPartial || len(res.VMs) == 0 {
		t.Fatalf("want every VM partial, got %+v", res)
	}
	for _, vm := range res.VMs {
		if vm.Status != contract.StatusPartial || !strings.Contains(vm.Error, "outside the backup window") || !strings.Contains(vm.Error, "opens at "+opens) {
			t.Fatalf("VM %s: %s %q; want it to say the window opens at %s", vm.Name, vm.Status, vm.Error, opens)
		}
		if cps := jobCheckpoints(t, h, vm.Name); len(cps) != 0 {
			t.Fatalf("a run outside its window made checkpoints: %v", cps)
		}
	}
	store, err := replica.Open(h.cfg.Agent.Datastore)
	if err != nil {
		t.Fatal(err)
	}
	for _, vm := range res.VMs {
		if r, err := store.Replica("demo", vm.ID); err == nil {
			if pts, _ := r.Points(); len(pts) != 0 {
				t.Fatalf("a run outside its window made restore points of %s: %v", vm.Name, pts)
			}
		}
	}
}
