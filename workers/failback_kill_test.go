//go:build unix

package main

import (
	"context"
	"testing"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/provider/lab"
)

// The worker that runs the workflows and the proxy (which receives a
// failback) is killed with SIGKILL while the failback sends; another one
// starts, and the failback completes with identical disks.
func TestFailbackSurvivesWorkerKill(t *testing.T) {
	h := newHarness(t, roleSet{target: true}, false, nil)
	worker := startChild(t, h, "jobs,proxy")
	defer func() { kill(t, worker) }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	src := lab.New("hv01", h.cfg.Hosts[0].Path)
	dr := lab.New("dr01", h.cfg.Agent.Host.Path)
	requireSuccess(t, h.run(contract.ReplicationInput{Job: "demo", VMs: []string{"web01"}}))
	op := func(workflowType string, in any, out any) error {
		run, err := h.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: contract.ReplicaOpWorkflowID("demo", "web01"), TaskQueue: "replication"}, workflowType, in)
		if err != nil {
			return err
		}
		return run.Get(ctx, out)
	}
	var rep contract.ReplicaOpResult
	if err := op(contract.FailoverWorkflow, contract.ReplicaOpInput{Job: "demo", VM: "web01"}, &rep); err != nil {
		t.Fatal(err)
	}
	// Enough written in failover that sending it back takes a while.
	if err := dr.Write(ctx, "web01_replica", 0, 60, 21); err != nil {
		t.Fatal(err)
	}
	run, err := h.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: contract.ReplicaOpWorkflowID("demo", "web01"), TaskQueue: "replication"},
		contract.FailbackWorkflow, contract.FailbackInput{Job: "demo", VM: "web01"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the failback transfer", time.Minute, 5*time.Millisecond, func() bool {
		d, err := h.c.DescribeWorkflowExecution(ctx, run.GetID(), run.GetRunID())
		if err != nil {
			return false
		}
		for _, a := range d.PendingActivities {
			// Started by the proxy in the child, not only scheduled: the
			// kill must interrupt the transfer.
			if a.GetActivityType().GetName() == contract.ActReceiveFailback && a.GetState() == enums.PENDING_ACTIVITY_STATE_STARTED {
				return true
			}
		}
		return false
	})
	time.Sleep(300 * time.Millisecond)
	kill(t, worker)
	worker = startChild(t, h, "jobs,proxy")
	var fb contract.FailbackResult
	if err := run.Get(ctx, &fb); err != nil {
		t.Fatal(err)
	}
	if fb.Replica.State != "failback" {
		t.Fatalf("failback after the kill: %+v", fb)
	}
	// The kill interrupted the send: the workflow opened a second channel.
	opens := 0
	it := h.c.GetWorkflowHistory(ctx, run.GetID(), run.GetRunID(), false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			t.Fatal(err)
		}
		if a := e.GetActivityTaskScheduledEventAttributes(); a != nil && a.GetActivityType().GetName() == contract.ActOpenFailbackChannel {
			opens++
		}
	}
	if opens < 2 {
		t.Fatalf("the failback channel was opened %d times: the kill did not interrupt the send", opens)
	}
	compareVMs(t, src, dr, "web01", "web01_replica")
}
