package devserver

import (
	"context"
	"slices"
	"testing"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/replicator/replicator/internal/testkit"
)

// chain runs n activities one after the other, alternating between the
// queues, as a VM's run alternates between its target's and its source's.
func chain(ctx workflow.Context, n int, queues []string) (int, error) {
	x := 0
	for i := range n {
		c := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{TaskQueue: queues[i%len(queues)], StartToCloseTimeout: time.Minute})
		if err := workflow.ExecuteActivity(c, "next", x).Get(ctx, &x); err != nil {
			return 0, err
		}
	}
	return x, nil
}

// TestChainOfActivitiesAndRestart: a workflow's chain of activities
// alternating between two task queues, as a VM's run alternates between its
// target and its source, runs on the embedded server, and its history is
// still there after the server restarts on the same folder. It logs what a
// round trip costs (event times: the server's clock): with the transfer
// queue paced at its default of 20 reads a second per shard an activity
// took 88 ms on an idle machine, 10 ms without; it asserts no time, since
// on a machine busy with other work both are slower and alike.
func TestChainOfActivitiesAndRestart(t *testing.T) {
	dir := t.TempDir()
	addr := testkit.FreeAddr(t)
	s, err := Start(Options{DataDir: dir, FrontendAddress: addr, Namespace: "default"})
	if err != nil {
		t.Fatal(err)
	}
	var workers []worker.Worker
	stopped := false
	stop := func() {
		if !stopped {
			for _, w := range workers {
				w.Stop()
			}
			s.Stop()
			stopped = true
		}
	}
	defer stop()
	c, err := client.Dial(client.Options{HostPort: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	queues := []string{"target", "source"}
	wf := worker.New(c, "jobs", worker.Options{})
	wf.RegisterWorkflowWithOptions(chain, workflow.RegisterOptions{Name: "chain"})
	workers = append(workers, wf)
	for _, q := range queues {
		w := worker.New(c, q, worker.Options{DisableWorkflowWorker: true})
		w.RegisterActivityWithOptions(func(_ context.Context, x int) (int, error) { return x + 1, nil }, activity.RegisterOptions{Name: "next"})
		workers = append(workers, w)
	}
	for _, w := range workers {
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const n = 30
	var id, runID string
	// The first round, short, warms the workers' connections and caches.
	for round := range 3 {
		length := n
		if round == 0 {
			length = 5
		}
		run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{TaskQueue: "jobs"}, "chain", length, queues)
		if err != nil {
			t.Fatal(err)
		}
		var x int
		if err := run.Get(ctx, &x); err != nil || x != length {
			t.Fatalf("chain of %d activities: %d, %v", length, x, err)
		}
		if round == 0 {
			continue
		}
		id, runID = run.GetID(), run.GetRunID()
		wall, waits := chainTimes(t, ctx, c, id, runID)
		if len(waits) != n {
			t.Fatalf("found %d activities followed by a workflow task in the history, want %d", len(waits), n)
		}
		slices.Sort(waits)
		t.Logf("round %d: %s per activity; dispatch waits per activity (its task + the workflow task after it): median %s, max %s",
			round, wall/n, waits[n/2], waits[n-1])
	}

	// The history is on disk: a server started again on the folder has it.
	stop()
	addr = testkit.FreeAddr(t)
	s2, err := Start(Options{DataDir: dir, FrontendAddress: addr, Namespace: "default"})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Stop()
	c2, err := client.Dial(client.Options{HostPort: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	d, err := c2.DescribeWorkflowExecution(ctx, id, runID)
	if err != nil {
		t.Fatal(err)
	}
	if st := d.GetWorkflowExecutionInfo().GetStatus(); st != enums.WORKFLOW_EXECUTION_STATUS_COMPLETED {
		t.Fatalf("after a restart the workflow is %s, want completed", st)
	}
}

// chainTimes returns the workflow's time from started to completed and,
// for every activity followed by a workflow task, the time from its task
// scheduled to started plus that of the workflow task after it (event
// times: the server's clock).
func chainTimes(t *testing.T, ctx context.Context, c client.Client, id, runID string) (time.Duration, []time.Duration) {
	t.Helper()
	var waits []time.Duration
	var first, last time.Time
	scheduled := map[enums.EventType]time.Time{}
	var activityWait time.Duration
	it := c.GetWorkflowHistory(ctx, id, runID, false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			t.Fatal(err)
		}
		at := e.GetEventTime().AsTime()
		if first.IsZero() {
			first = at
		}
		last = at
		switch e.GetEventType() {
		case enums.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED, enums.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
			scheduled[e.GetEventType()] = at
		case enums.EVENT_TYPE_ACTIVITY_TASK_STARTED:
			activityWait = at.Sub(scheduled[enums.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED])
		case enums.EVENT_TYPE_WORKFLOW_TASK_STARTED:
			if activityWait > 0 {
				waits = append(waits, activityWait+at.Sub(scheduled[enums.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED]))
				activityWait = 0
			}
		}
	}
	return last.Sub(first), waits
}

// grow runs batches of activities until the server suggests continuing as
// new (or the history is far past where it should have), and returns the
// history length at which it did.
func grow(ctx workflow.Context) (int, error) {
	c := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: time.Minute})
	for {
		info := workflow.GetInfo(ctx)
		if info.GetContinueAsNewSuggested() || info.GetCurrentHistoryLength() > 3*historyCountSuggestContinueAsNew {
			return info.GetCurrentHistoryLength(), nil
		}
		var batch []workflow.Future
		for range 20 {
			batch = append(batch, workflow.ExecuteActivity(c, "next", 0))
		}
		for _, f := range batch {
			if err := f.Get(ctx, nil); err != nil {
				return 0, err
			}
		}
	}
}

// TestLongHistoriesAreToldToContinueAsNew: the server suggests continuing as
// new at historyCountSuggestContinueAsNew events, not at its default of
// 4,096: a Temporal Schedule's own workflow continues as new only when told,
// and a job with rpo 30s would otherwise take its schedule's history past
// 2,000 events within the hour.
func TestLongHistoriesAreToldToContinueAsNew(t *testing.T) {
	addr := testkit.FreeAddr(t)
	s, err := Start(Options{DataDir: t.TempDir(), FrontendAddress: addr, Namespace: "default"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	c, err := client.Dial(client.Options{HostPort: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w := worker.New(c, "grow", worker.Options{})
	w.RegisterWorkflowWithOptions(grow, workflow.RegisterOptions{Name: "grow"})
	w.RegisterActivityWithOptions(func(_ context.Context, x int) (int, error) { return x + 1, nil }, activity.RegisterOptions{Name: "next"})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{TaskQueue: "grow"}, "grow")
	if err != nil {
		t.Fatal(err)
	}
	var at int
	if err := run.Get(ctx, &at); err != nil {
		t.Fatal(err)
	}
	// One batch adds about 63 events past the point.
	if at < historyCountSuggestContinueAsNew || at > historyCountSuggestContinueAsNew+100 {
		t.Fatalf("continuing as new was suggested at %d events, want from %d", at, historyCountSuggestContinueAsNew)
	}
	t.Logf("continuing as new suggested at %d events", at)
}
