//go:build unix

package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/testkit"
)

// TestRPOKeepsTheJobRunning checks what an administrator relies on when
// setting jobs[].rpo: starting the jobs role is enough for the job to run
// (a run the schedule started succeeds with nobody starting one), every
// RPO/2 with runs that never overlap; a changed rpo changes the schedule at
// the next start, a removed one removes it, and a schedule an operator made
// is never removed.
func TestRPOKeepsTheJobRunning(t *testing.T) {
	h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, false, func(c *config.Config) {
		c.Jobs[0].VMs = []string{"web01"}
		c.Jobs[0].RPO = 20 * time.Second
		c.Metrics.Listen = testkit.FreeAddr(t)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	id := contract.ScheduleID("demo")
	describe := func() *client.ScheduleDescription {
		t.Helper()
		d, err := h.c.ScheduleClient().GetHandle(ctx, id).Describe(ctx)
		if err != nil {
			t.Fatalf("schedule %s: %v", id, err)
		}
		return d
	}
	check := func(d *client.ScheduleDescription, every time.Duration) {
		t.Helper()
		if len(d.Schedule.Spec.Intervals) != 1 || d.Schedule.Spec.Intervals[0].Every != every {
			t.Fatalf("schedule intervals %+v, want every %s", d.Schedule.Spec.Intervals, every)
		}
		if d.Schedule.Policy.Overlap != enums.SCHEDULE_OVERLAP_POLICY_BUFFER_ONE {
			t.Fatalf("overlap %s, want buffer one (never two runs at once)", d.Schedule.Policy.Overlap)
		}
		a, ok := d.Schedule.Action.(*client.ScheduleWorkflowAction)
		if !ok || a.TaskQueue != h.cfg.Temporal.TaskQueue {
			t.Fatalf("action %+v", d.Schedule.Action)
		}
	}
	check(describe(), 10*time.Second)

	// The first run the schedule starts replicates the VM.
	var run *client.ScheduleWorkflowExecution
	waitFor(t, "a run started by the schedule", 3*time.Minute, time.Second, func() bool {
		if acts := describe().Info.RecentActions; len(acts) > 0 {
			run = acts[0].StartWorkflowResult
		}
		return run != nil
	})
	var res contract.ReplicationResult
	if err := h.c.GetWorkflow(ctx, run.WorkflowID, run.FirstExecutionRunID).Get(ctx, &res); err != nil {
		t.Fatalf("run %s started by the schedule: %v", run.WorkflowID, err)
	}
	requireSuccess(t, res)
	if vm := res.VMs; len(vm) != 1 || vm[0].RestorePoint == "" || vm[0].PointTime.IsZero() || vm[0].RPOExceeded || vm[0].LagSeconds > 20 {
		t.Fatalf("run started by the schedule: %+v; want web01's new point within the rpo", res)
	}

	// The agent exports the VM's lag and its rpo.
	resp, err := http.Get("http://" + h.cfg.Metrics.Listen + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var age float64 = -1
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, `replicator_restore_point_age_seconds{job="demo",vm="web01"} `); ok {
			age, _ = strconv.ParseFloat(v, 64)
		}
	}
	if age < 0 || age > 60 || !strings.Contains(string(body), `replicator_rpo_seconds{job="demo",vm="web01"} 20`) {
		t.Fatalf("metrics: age %v; want web01's point age (under a minute) and its rpo 20 s in:\n%s", age, body)
	}

	restart := func(edit func(*config.Job)) {
		t.Helper()
		h.stack.stop()
		h.cfg.Metrics.Listen = ""
		edit(&h.cfg.Jobs[0])
		h.writeConfig()
		h.start(roleSet{jobs: true})
	}
	restart(func(j *config.Job) { j.RPO = time.Minute })
	check(describe(), 30*time.Second)

	restart(func(j *config.Job) { j.RPO = 0 })
	_, err = h.c.ScheduleClient().GetHandle(ctx, id).Describe(ctx)
	var nf *serviceerror.NotFound
	if !errors.As(err, &nf) {
		t.Fatalf("schedule of a job without rpo: describe gave %v, want not found", err)
	}

	// An operator's schedule of a job without rpo stays.
	if _, err := h.c.ScheduleClient().Create(ctx, client.ScheduleOptions{
		ID: id, Spec: client.ScheduleSpec{Intervals: []client.ScheduleIntervalSpec{{Every: time.Hour}}},
		Action: &client.ScheduleWorkflowAction{ID: "demo", Workflow: contract.ReplicationWorkflow,
			Args: []interface{}{contract.ReplicationInput{Job: "demo"}}, TaskQueue: h.cfg.Temporal.TaskQueue},
	}); err != nil {
		t.Fatal(err)
	}
	restart(func(j *config.Job) {})
	if d := describe(); d.Schedule.Spec.Intervals[0].Every != time.Hour {
		t.Fatalf("the operator's schedule was changed: %+v", d.Schedule.Spec)
	}
}
