package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/provider/lab"
	"github.com/replicator/replicator/internal/testkit"
)

// vmIDs maps the lab's VM names to their ids.
func vmIDs(t *testing.T, h *harness) map[string]string {
	t.Helper()
	vms, err := lab.New("hv01", h.cfg.Hosts[0].Path).VMs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, vm := range vms {
		out[vm.Name] = vm.ID
	}
	return out
}

// waitVMRunning waits until a VM's workflow runs.
func waitVMRunning(t *testing.T, h *harness, vmID string) {
	t.Helper()
	id := contract.VMWorkflowID("hv01", vmID)
	waitFor(t, "workflow "+id+" running", time.Minute, 100*time.Millisecond, func() bool {
		d, err := h.c.DescribeWorkflowExecution(context.Background(), id, "")
		return err == nil && d.GetWorkflowExecutionInfo().GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING
	})
}

// summaryOf is a workflow's fixed summary.
func summaryOf(t *testing.T, h *harness, workflowID string) string {
	t.Helper()
	d, err := h.c.DescribeWorkflowExecution(context.Background(), workflowID, "")
	if err != nil {
		t.Fatal(err)
	}
	var s string
	if p := d.GetExecutionConfig().GetUserMetadata().GetSummary(); p != nil {
		_ = converter.GetDefaultDataConverter().FromPayload(p, &s)
	}
	return s
}

// requireSkipped checks that a run left every VM the first run holds to it,
// naming that run.
func requireSkipped(t *testing.T, who string, res contract.ReplicationResult, first string) {
	t.Helper()
	if res.Status == contract.StatusSuccess || len(res.VMs) == 0 {
		t.Fatalf("%s: a run overlapping %s cannot succeed with every VM: %+v", who, first, res)
	}
	for _, vm := range res.VMs {
		if vm.Status == contract.StatusSuccess {
			continue // the first run had finished it already
		}
		if vm.Status != contract.StatusPartial || !strings.Contains(vm.Error, "skipped") || !strings.Contains(vm.Error, "run "+first) {
			t.Fatalf("%s: VM %s is %s with %q; want it skipped naming run %s", who, vm.Name, vm.Status, vm.Error, first)
		}
	}
}

// TestOverlappingRunsLeaveTheRunInProgressAlone starts a run of demo, slowed
// down on the data channel, and while it transfers starts the same job from
// the Temporal client (with nothing but {"job": "demo"}), from `starter run`
// and from a schedule. Each of them ends within seconds, naming the run in
// progress; that run ends success with replicas equal to their sources. With
// overlap: wait, a second run waits and then replicates the VM itself.
func TestOverlappingRunsLeaveTheRunInProgressAlone(t *testing.T) {
	h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, true, nil)
	starter := buildStarter(t, t.TempDir())
	ids := vmIDs(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	h.proxy.setRate(3 << 20) // the first run takes about 15 s
	first, err := h.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "demo-first", TaskQueue: "replication"},
		contract.ReplicationWorkflow, contract.ReplicationInput{Job: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		waitVMRunning(t, h, id)
	}

	// The Temporal client, as `temporal workflow start --input '{"job":"demo"}'` does.
	start := time.Now()
	second, err := h.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "demo-second", TaskQueue: "replication"},
		contract.ReplicationWorkflow, map[string]any{"job": "demo"})
	if err != nil {
		t.Fatal(err)
	}
	var res contract.ReplicationResult
	if err := second.Get(ctx, &res); err != nil {
		t.Fatal(err)
	}
	requireSkipped(t, "Temporal client", res, "demo-first")
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("the second run took %s to end; want it at once", d)
	}

	// starter run --wait: exit 3 (partial), the result naming the run in progress.
	cmd := exec.CommandContext(ctx, starter, "--config", h.cfgFile, "--data-dir", h.dir, "run", "demo", "--wait")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Fatalf("starter run: %v (want exit 3)\n%s", err, out)
	}
	var sres contract.ReplicationResult
	if err := json.Unmarshal(out, &sres); err != nil {
		t.Fatalf("starter run printed %q: %v", out, err)
	}
	requireSkipped(t, "starter run", sres, "demo-first")
	started := strings.Fields(strings.TrimPrefix(stderr.String(), "started workflow "))
	if len(started) == 0 || summaryOf(t, h, started[0]) != "job demo · started by starter run" {
		t.Fatalf("starter run's workflow (%q) lacks its summary", stderr.String())
	}

	// A schedule's run: `starter schedule create` and `starter schedule trigger`.
	for _, args := range [][]string{{"schedule", "create", "demo", "--interval", "1h"}, {"schedule", "trigger", "demo"}} {
		cmd := exec.CommandContext(ctx, starter, append([]string{"--config", h.cfgFile, "--data-dir", h.dir}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("starter %v: %v\n%s", args, err, out)
		}
	}
	sh := h.c.ScheduleClient().GetHandle(ctx, "replication-demo")
	defer func() { _ = sh.Delete(context.Background()) }()
	var scheduled string
	waitFor(t, "a run started by the schedule", time.Minute, 200*time.Millisecond, func() bool {
		d, err := sh.Describe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(d.Info.RecentActions); n > 0 {
			scheduled = d.Info.RecentActions[n-1].StartWorkflowResult.WorkflowID
		}
		return scheduled != ""
	})
	var schres contract.ReplicationResult
	if err := h.c.GetWorkflow(ctx, scheduled, "").Get(ctx, &schres); err != nil {
		t.Fatal(err)
	}
	requireSkipped(t, "schedule", schres, "demo-first")
	if s := summaryOf(t, h, scheduled); s != "job demo · started by schedule replication-demo" {
		t.Fatalf("the schedule's run has summary %q", s)
	}

	// The run in progress was not disturbed.
	d, err := h.c.DescribeWorkflowExecution(ctx, "demo-first", "")
	if err != nil {
		t.Fatal(err)
	}
	if d.GetWorkflowExecutionInfo().GetStatus() != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
		t.Fatal("the first run ended before the overlapping runs did: the test did not overlap them")
	}
	h.proxy.setRate(0)
	var fres contract.ReplicationResult
	if err := first.Get(ctx, &fres); err != nil {
		t.Fatal(err)
	}
	requireSuccess(t, fres)
	h.checkReplicaMatchesSource(fres)

	// overlap: wait: the second run waits for the first and then does the VM.
	h.cfg.Jobs[0].Overlap = contract.OverlapWait
	h.writeConfig()
	// Changed blocks to send, at 2 MiB/s: the first run holds the VM for
	// seconds, not for the few milliseconds an unchanged VM takes.
	if err := lab.New("hv01", h.cfg.Hosts[0].Path).Write(ctx, "web01", 0, 10, 7); err != nil {
		t.Fatal(err)
	}
	h.proxy.setRate(2 << 20)
	in := contract.ReplicationInput{Job: "demo", VMs: []string{"web01"}}
	first, err = h.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "demo-first-wait", TaskQueue: "replication"}, contract.ReplicationWorkflow, in)
	if err != nil {
		t.Fatal(err)
	}
	waitVMRunning(t, h, ids["web01"])
	second, err = h.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "demo-second-wait", TaskQueue: "replication"}, contract.ReplicationWorkflow, in)
	if err != nil {
		t.Fatal(err)
	}
	// While it waits, its progress says for whom.
	testkit.Eventually(t, 30*time.Second, 200*time.Millisecond, func() error {
		v, err := h.c.QueryWorkflow(ctx, "demo-second-wait", "", contract.ProgressQuery)
		if err != nil {
			return fmt.Errorf("the waiting run's progress: %w", err)
		}
		var p contract.ReplicationResult
		if err := v.Get(&p); err != nil {
			return fmt.Errorf("the waiting run's progress: %w", err)
		}
		if len(p.VMs) == 1 && strings.Contains(p.VMs[0].Error, "waiting for VM web01") && strings.Contains(p.VMs[0].Error, "run demo-first-wait") {
			return nil
		}
		return fmt.Errorf("the waiting run's progress does not name the run it waits for: %+v", p.VMs)
	})
	h.proxy.setRate(0)
	if err := first.Get(ctx, &fres); err != nil {
		t.Fatal(err)
	}
	requireSuccess(t, fres)
	if err := second.Get(ctx, &res); err != nil {
		t.Fatal(err)
	}
	requireSuccess(t, res)
	if res.VMs[0].RestorePoint == fres.VMs[0].RestorePoint {
		t.Fatalf("the waiting run made no restore point of its own: %+v", res)
	}
	h.checkReplicaMatchesSource(res)
}
