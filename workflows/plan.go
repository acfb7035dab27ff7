package workflows

import (
	"fmt"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/replicator/replicator/internal/contract"
)

// loadPlan reads a failover plan of the configuration.
func loadPlan(ctx workflow.Context, in contract.FailoverPlanInput) (contract.PlanSpec, error) {
	var plan contract.PlanSpec
	if in.Plan == "" {
		return plan, temporal.NewNonRetryableApplicationError(`input needs a plan name: {"plan": "NAME"}`, contract.ErrTypeBadInput, nil)
	}
	lctx := workflow.WithActivityOptions(ctx, replicaOpActivity(""))
	if err := workflow.ExecuteActivity(lctx, contract.ActLoadFailoverPlan, in.Plan).Get(ctx, &plan); err != nil {
		return plan, fmt.Errorf("loading failover plan %q: %w", in.Plan, err)
	}
	return plan, nil
}

// replicaOpChild runs one replica's operation as a child under the
// replica's own workflow id, so that it never overlaps another operation on
// that replica started from elsewhere.
func replicaOpChild(ctx workflow.Context, workflowType string, vm contract.PlanVMSpec) (contract.ReplicaOpResult, error) {
	cctx := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
		WorkflowID:        contract.ReplicaOpWorkflowID(vm.Job, vm.VM),
		ParentClosePolicy: enums.PARENT_CLOSE_POLICY_ABANDON,
	})
	var res contract.ReplicaOpResult
	err := workflow.ExecuteChildWorkflow(cctx, workflowType, contract.ReplicaOpInput{Job: vm.Job, VM: vm.VM}).Get(ctx, &res)
	return res, err
}

// FailoverPlanWorkflow fails the VMs of a plan over in the plan's order,
// waiting each VM's delay before the next one. A VM that fails stops the
// plan: the VMs after it stay pending and those before it stay failed over
// (`failover plan undo` returns them to ready).
func FailoverPlanWorkflow(ctx workflow.Context, in contract.FailoverPlanInput) (contract.FailoverPlanResult, error) {
	res := contract.FailoverPlanResult{Plan: in.Plan, Status: contract.StatusRunning, VMs: []contract.PlanVMResult{}}
	if err := workflow.SetQueryHandler(ctx, contract.ProgressQuery, func() (contract.FailoverPlanResult, error) { return res, nil }); err != nil {
		return res, err
	}
	plan, err := loadPlan(ctx, in)
	if err != nil {
		res.Status = contract.StatusFailed
		return res, err
	}
	for _, vm := range plan.VMs {
		res.VMs = append(res.VMs, contract.PlanVMResult{Job: vm.Job, VM: vm.VM, Status: contract.StatusPending})
	}
	for i, vm := range plan.VMs {
		r := &res.VMs[i]
		r.Started = workflow.Now(ctx)
		rep, err := replicaOpChild(ctx, contract.FailoverWorkflow, vm)
		r.Replica = rep
		if err != nil {
			r.Status, r.Error = contract.StatusFailed, errorText(err)
			res.Status = contract.StatusFailed
			if i > 0 {
				res.Status = contract.StatusPartial
			}
			return res, nil
		}
		r.Status = contract.StatusSuccess
		if vm.Delay > 0 && i < len(plan.VMs)-1 {
			if err := workflow.Sleep(ctx, vm.Delay); err != nil {
				res.Status = contract.StatusPartial
				return res, err
			}
		}
	}
	res.Status = contract.StatusSuccess
	return res, nil
}

// UndoFailoverPlanWorkflow undoes the failover of every VM of a plan, last
// first. A VM that is not in failover (already undone, or never failed
// over) is skipped and said so; one that fails does not stop the others.
func UndoFailoverPlanWorkflow(ctx workflow.Context, in contract.FailoverPlanInput) (contract.FailoverPlanResult, error) {
	res := contract.FailoverPlanResult{Plan: in.Plan, Status: contract.StatusRunning, VMs: []contract.PlanVMResult{}}
	plan, err := loadPlan(ctx, in)
	if err != nil {
		res.Status = contract.StatusFailed
		return res, err
	}
	failed := 0
	for i := len(plan.VMs) - 1; i >= 0; i-- {
		vm := plan.VMs[i]
		r := contract.PlanVMResult{Job: vm.Job, VM: vm.VM, Started: workflow.Now(ctx)}
		rep, err := replicaOpChild(ctx, contract.UndoFailoverWorkflow, vm)
		r.Replica = rep
		switch {
		case err == nil:
			r.Status = contract.StatusSuccess
		case isErrType(err, contract.ErrTypeReplicaState):
			r.Status, r.Error = "skipped", errorText(err)
		default:
			r.Status, r.Error = contract.StatusFailed, errorText(err)
			failed++
		}
		res.VMs = append(res.VMs, r)
	}
	switch {
	case failed == 0:
		res.Status = contract.StatusSuccess
	case failed == len(plan.VMs):
		res.Status = contract.StatusFailed
	default:
		res.Status = contract.StatusPartial
	}
	return res, nil
}
