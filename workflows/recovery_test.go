package workflows

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/replicator/replicator/internal/contract"
)

// drTarget answers the lifecycle activities like a target whose replicas
// have the states in state (by VM name), recording calls in order.
type drTarget struct {
	mu    sync.Mutex
	state map[string]string
	fail  map[string]bool // VM names whose failover fails for good
	calls []string
}

func (d *drTarget) register(env *testsuite.TestWorkflowEnvironment, plan contract.PlanSpec) {
	Register(env)
	reg := func(fn interface{}, name string) {
		env.RegisterActivityWithOptions(fn, activity.RegisterOptions{Name: name})
	}
	reg(func(ctx context.Context, job string) (contract.JobSpec, error) {
		return contract.JobSpec{Name: job, Source: "hv01", Target: "dr01"}, nil
	}, contract.ActLoadJob)
	reg(func(ctx context.Context, name string) (contract.PlanSpec, error) { return plan, nil }, contract.ActLoadFailoverPlan)
	reg(func(ctx context.Context, in contract.ReplicaOpActivityInput) (contract.ReplicaOpResult, error) {
		d.mu.Lock()
		defer d.mu.Unlock()
		d.calls = append(d.calls, "failover "+in.VM)
		if d.fail[in.VM] || d.state[in.VM] != "ready" {
			return contract.ReplicaOpResult{}, temporal.NewNonRetryableApplicationError("refused: state "+d.state[in.VM], contract.ErrTypeReplicaState, nil)
		}
		d.state[in.VM] = "failover"
		return contract.ReplicaOpResult{VM: in.VM, State: "failover"}, nil
	}, contract.ActFailoverReplica)
	reg(func(ctx context.Context, in contract.ReplicaOpActivityInput) (contract.ReplicaOpResult, error) {
		d.mu.Lock()
		defer d.mu.Unlock()
		d.calls = append(d.calls, "undo "+in.VM)
		if d.state[in.VM] != "failover" {
			return contract.ReplicaOpResult{}, temporal.NewNonRetryableApplicationError("refused: state "+d.state[in.VM], contract.ErrTypeReplicaState, nil)
		}
		d.state[in.VM] = "ready"
		return contract.ReplicaOpResult{VM: in.VM, State: "ready"}, nil
	}, contract.ActUndoFailover)
	reg(func(ctx context.Context, in contract.ReplicaOpActivityInput) (contract.ReplicaOpResult, error) {
		d.mu.Lock()
		defer d.mu.Unlock()
		d.calls = append(d.calls, "status "+in.VM)
		return contract.ReplicaOpResult{VM: in.VM, VMID: "id-" + in.VM, State: d.state[in.VM]}, nil
	}, contract.ActReplicaStatus)
	reg(func(ctx context.Context, in contract.ShutdownInput) error {
		d.mu.Lock()
		defer d.mu.Unlock()
		d.calls = append(d.calls, "shutdown "+in.VMID)
		return nil
	}, contract.ActShutdownVM)
}

func TestFailoverPlanStopsAtTheFirstFailure(t *testing.T) {
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestWorkflowEnvironment()
	d := &drTarget{state: map[string]string{"a": "ready", "b": "ready", "c": "ready"}, fail: map[string]bool{"b": true}}
	d.register(env, contract.PlanSpec{Name: "p", VMs: []contract.PlanVMSpec{
		{Job: "demo", VM: "a", Delay: time.Minute}, {Job: "demo", VM: "b", Delay: time.Minute}, {Job: "demo", VM: "c"}}})
	env.ExecuteWorkflow(FailoverPlanWorkflow, contract.FailoverPlanInput{Plan: "p"})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	var res contract.FailoverPlanResult
	if err := env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if res.Status != contract.StatusPartial || res.VMs[0].Status != contract.StatusSuccess ||
		res.VMs[1].Status != contract.StatusFailed || res.VMs[2].Status != contract.StatusPending {
		t.Fatalf("plan result %+v", res)
	}
	if got := d.calls; len(got) != 2 || got[0] != "failover a" || got[1] != "failover b" {
		t.Fatalf("calls %v: c must not be failed over after b failed", got)
	}
	if gap := res.VMs[1].Started.Sub(res.VMs[0].Started); gap < time.Minute {
		t.Fatalf("b started %s after a; the delay is a minute", gap)
	}
}

func TestUndoFailoverPlanSkipsReplicasNotInFailover(t *testing.T) {
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestWorkflowEnvironment()
	d := &drTarget{state: map[string]string{"a": "failover", "b": "ready", "c": "failover"}}
	d.register(env, contract.PlanSpec{Name: "p", VMs: []contract.PlanVMSpec{{Job: "demo", VM: "a"}, {Job: "demo", VM: "b"}, {Job: "demo", VM: "c"}}})
	env.ExecuteWorkflow(UndoFailoverPlanWorkflow, contract.FailoverPlanInput{Plan: "p"})
	var res contract.FailoverPlanResult
	if err := env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if res.Status != contract.StatusSuccess || len(res.VMs) != 3 || res.VMs[0].VM != "c" || res.VMs[1].Status != "skipped" {
		t.Fatalf("undo result %+v", res)
	}
	if d.state["a"] != "ready" || d.state["c"] != "ready" {
		t.Fatalf("states %v", d.state)
	}
}

func TestPlannedFailoverRefusesBeforeTouchingTheSource(t *testing.T) {
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestWorkflowEnvironment()
	d := &drTarget{state: map[string]string{"web01": "failover"}}
	d.register(env, contract.PlanSpec{})
	env.ExecuteWorkflow(PlannedFailoverWorkflow, contract.ReplicaOpInput{Job: "demo", VM: "web01"})
	err := env.GetWorkflowError()
	var app *temporal.ApplicationError
	if !errors.As(err, &app) || app.Type() != contract.ErrTypeReplicaState {
		t.Fatalf("err = %v, want a ReplicaState refusal", err)
	}
	for _, c := range d.calls {
		if c != "status web01" {
			t.Fatalf("calls %v: nothing but the status may be asked", d.calls)
		}
	}
}
