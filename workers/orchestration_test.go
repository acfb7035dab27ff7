//go:build unix

package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/provider/lab"
)

// orchestrationVMsEnv sets the number of VMs of TestOrchestrationOverhead
// (`make bench` asks 50).
const orchestrationVMsEnv = "REPLICATOR_ORCHESTRATION_VMS"

// TestOrchestrationOverhead measures what Temporal and the workflows cost
// per VM when the data path has nothing to do: a job of N small lab VMs is
// replicated once, then again with nothing changed (change tracking finds
// no block to send), at parallelism 1 and 8. The unchanged run is all
// orchestration: prepare, checkpoint, begin, one transfer that sends
// nothing, commit, reference point, their workflow tasks and the child
// workflow. It asserts what users depend on (every run succeeds, nothing is
// sent the second time) and logs the figures; it times nothing against a
// limit.
//
//	REPLICATOR_ORCHESTRATION_VMS=50 go test ./workers -run TestOrchestrationOverhead -v
func TestOrchestrationOverhead(t *testing.T) {
	n := 8
	if v := os.Getenv(orchestrationVMsEnv); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive number of VMs", orchestrationVMsEnv, v)
		}
	}
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("orch%04d", i+1)
	}
	h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, false, func(c *config.Config) {
		c.Jobs[0].VMs = names
		c.Jobs[0].Exclude.Swap = false
	})
	ctx := context.Background()
	labPath := h.cfg.Hosts[0].Path
	host := lab.New("hv01", labPath)
	for i, name := range names {
		if _, err := lab.CreateVM(labPath, name, []int64{8 << 20}); err != nil {
			t.Fatal(err)
		}
		if err := host.Write(ctx, name, 0, 25, int64(i+1)); err != nil {
			t.Fatal(err)
		}
	}
	timed := func(parallelism int) (time.Duration, contract.ReplicationResult, string) {
		h.cfg.Jobs[0].Parallelism = parallelism
		h.writeConfig()
		id := fmt.Sprintf("orch-%d", time.Now().UnixNano())
		began := time.Now()
		run, err := h.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: "replication"},
			contract.ReplicationWorkflow, contract.ReplicationInput{Job: "demo"})
		if err != nil {
			t.Fatal(err)
		}
		firstRunID := run.GetRunID()
		var res contract.ReplicationResult
		if err := run.Get(ctx, &res); err != nil {
			t.Fatal(err)
		}
		wall := time.Since(began)
		requireSuccess(t, res)
		if len(res.VMs) != n {
			t.Fatalf("want %d VMs, got %d", n, len(res.VMs))
		}
		events := 0
		for _, hist := range jobHistories(t, h.c, id, firstRunID) {
			events += hist.events
		}
		return wall, res, fmt.Sprintf("%.1f", float64(events)/float64(n))
	}

	full, _, _ := timed(8)
	t.Logf("first run (full copy of %d VMs of 8 MiB, 25%% written): %s", n, full.Round(time.Millisecond))
	t.Logf("| parallelism | VMs | wall of the unchanged run | per VM | history events per VM (job run's share + the VM's) |")
	t.Logf("|---|---|---|---|---|")
	for _, p := range []int{1, 8} {
		wall, res, events := timed(p)
		for _, vm := range res.VMs {
			for _, d := range vm.Disks {
				if d.ChangeTracking != contract.TrackingRCT || d.BlocksChanged != 0 || d.BytesSent != 0 {
					t.Fatalf("unchanged VM %s disk %s: %+v; want change tracking and nothing sent", vm.Name, d.ID, d)
				}
			}
		}
		t.Logf("| %d | %d | %.2f s | %.0f ms | %s |", p, n, wall.Seconds(), wall.Seconds()*1000/float64(n), events)
	}
}
