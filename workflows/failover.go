package workflows

import (
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/replicator/replicator/internal/contract"
)

// The disaster-recovery lifecycle of a replica: each operation is a workflow
// whose id is contract.ReplicaOpWorkflowID(job, vm), so that two operations
// on one replica never run at once. The work is done by activities of the
// target that holds the replica; they refuse a replica in the wrong state
// before changing anything, and recognise their own operation when retried
// after a worker died, so that the workflow finishes where it stopped.

// replicaOpActivity is the options of a lifecycle activity: registering a
// VM and making its disks takes seconds to minutes; retries go on for an
// hour, since an operator waits for the outcome; what retrying cannot fix
// (wrong state, unknown point or replica, configuration) fails at once.
func replicaOpActivity(queue string) workflow.ActivityOptions {
	return workflow.ActivityOptions{
		TaskQueue:              queue,
		ScheduleToCloseTimeout: time.Hour,
		StartToCloseTimeout:    30 * time.Minute,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:    time.Second,
			BackoffCoefficient: 2,
			MaximumInterval:    30 * time.Second,
			NonRetryableErrorTypes: []string{
				contract.ErrTypeBadConfig, contract.ErrTypeBadInput, contract.ErrTypeReplicaState,
				contract.ErrTypeNoPoint, contract.ErrTypeNoReplica, contract.ErrTypeVMNotFound,
				contract.ErrTypeReplicaLocked,
			},
		},
	}
}

// replicaOpRun is a lifecycle operation under way: the job's settings, the
// activity input that names this operation (retried activities recognise
// it), and activity contexts on the queues of the job's target and source.
type replicaOpRun struct {
	spec           contract.JobSpec
	op             contract.ReplicaOpActivityInput
	target, source workflow.Context
}

// needJobAndVM refuses an operation's input without a job or a VM.
func needJobAndVM(job, vm string) error {
	if job == "" || vm == "" {
		return temporal.NewNonRetryableApplicationError(
			`input needs a job and a VM: {"job": "NAME", "vm": "NAME or id"}`, contract.ErrTypeBadInput, nil)
	}
	return nil
}

// startReplicaOp checks the input and loads the job's settings through an
// activity (so that an edited job applies to the next operation).
func startReplicaOp(ctx workflow.Context, in contract.ReplicaOpInput) (replicaOpRun, error) {
	var r replicaOpRun
	if err := needJobAndVM(in.Job, in.VM); err != nil {
		return r, err
	}
	load := workflow.WithActivityOptions(ctx, replicaOpActivity(""))
	if err := workflow.ExecuteActivity(load, contract.ActLoadJob, in.Job).Get(ctx, &r.spec); err != nil {
		return r, fmt.Errorf("loading job %q: %w", in.Job, err)
	}
	info := workflow.GetInfo(ctx)
	r.op = contract.ReplicaOpActivityInput{ReplicaOpInput: in, Operation: info.WorkflowExecution.ID + "/" + info.WorkflowExecution.RunID}
	r.target = workflow.WithActivityOptions(ctx, replicaOpActivity(contract.TargetQueue(r.spec.Target)))
	r.source = workflow.WithActivityOptions(ctx, replicaOpActivity(contract.SourceQueue(r.spec.Source)))
	return r, nil
}

// replicaInState reads the replica's status and refuses the operation
// (named what) unless the replica is in state want; after says what was
// left untouched.
func (r replicaOpRun) replicaInState(ctx workflow.Context, what, want, after string) (contract.ReplicaOpResult, error) {
	var status contract.ReplicaOpResult
	if err := workflow.ExecuteActivity(r.target, contract.ActReplicaStatus, r.op).Get(ctx, &status); err != nil {
		return status, err
	}
	if status.State != want {
		return status, temporal.NewNonRetryableApplicationError(fmt.Sprintf(
			"%s of %s in job %s refused: the replica is in state %s (%s needs %s)%s",
			what, status.VM, r.op.Job, status.State, what, want, after), contract.ErrTypeReplicaState, nil)
	}
	return status, nil
}

// shutDownSource shuts the replica's source VM down.
func (r replicaOpRun) shutDownSource(ctx workflow.Context, status contract.ReplicaOpResult) error {
	if err := workflow.ExecuteActivity(r.source, contract.ActShutdownVM, contract.ShutdownInput{Host: r.spec.Source, VMID: status.VMID}).Get(ctx, nil); err != nil {
		return fmt.Errorf("shutting the source VM %s down: %w", status.VM, err)
	}
	return nil
}

// replicaOp runs one lifecycle activity on the target of the job.
func replicaOp(ctx workflow.Context, in contract.ReplicaOpInput, activity string) (contract.ReplicaOpResult, error) {
	r, err := startReplicaOp(ctx, in)
	if err != nil {
		return contract.ReplicaOpResult{}, err
	}
	var res contract.ReplicaOpResult
	if err := workflow.ExecuteActivity(r.target, activity, r.op).Get(ctx, &res); err != nil {
		return res, err
	}
	workflow.SetCurrentDetails(ctx, fmt.Sprintf("**%s** of job %s: %s, replica VM %s (%s)", res.VM, res.Job, res.State, res.ReplicaVM, res.VMState))
	return res, nil
}

// FailoverWorkflow starts the replica VM of in.VM on restore point in.Point
// (default the newest): the replica goes to failover.
func FailoverWorkflow(ctx workflow.Context, in contract.ReplicaOpInput) (contract.ReplicaOpResult, error) {
	return replicaOp(ctx, in, contract.ActFailoverReplica)
}

// UndoFailoverWorkflow powers the replica VM off, discards what it wrote in
// failover and makes the replica ready again.
func UndoFailoverWorkflow(ctx workflow.Context, in contract.ReplicaOpInput) (contract.ReplicaOpResult, error) {
	return replicaOp(ctx, in, contract.ActUndoFailover)
}

// PlannedFailoverWorkflow fails over without losing a write: the replica
// must be ready; the source VM is shut down, a final incremental run
// replicates it, and the replica VM starts on that run's point.
func PlannedFailoverWorkflow(ctx workflow.Context, in contract.ReplicaOpInput) (contract.PlannedFailoverResult, error) {
	var out contract.PlannedFailoverResult
	r, err := startReplicaOp(ctx, in)
	if err != nil {
		return out, err
	}
	// 1. The replica must be ready: the source is not touched otherwise.
	status, err := r.replicaInState(ctx, "planned failover", "ready", "; the source VM was not shut down")
	if err != nil {
		return out, err
	}
	// 2. Shut the source VM down.
	if err := r.shutDownSource(ctx, status); err != nil {
		return out, err
	}
	// 3. The final incremental run of that VM.
	cctx := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{WorkflowID: workflow.GetInfo(ctx).WorkflowExecution.ID + "/final-run"})
	if err := workflow.ExecuteChildWorkflow(cctx, contract.ReplicationWorkflow,
		contract.ReplicationInput{Job: in.Job, VMs: []string{status.VMID}}).Get(ctx, &out.FinalRun); err != nil {
		return out, fmt.Errorf("the final incremental run of %s failed; the source VM is shut down and no failover was made: %w", status.VM, err)
	}
	var point string
	for _, vm := range out.FinalRun.VMs {
		if vm.ID == status.VMID && vm.Status == contract.StatusSuccess {
			point = vm.RestorePoint
		}
	}
	if point == "" {
		return out, temporal.NewNonRetryableApplicationError(fmt.Sprintf(
			"the final incremental run of %s did not succeed (%s); the source VM is shut down and no failover was made",
			status.VM, out.FinalRun.Status), contract.ErrTypeReplicaState, nil)
	}
	// 4. Fail over to exactly that point.
	act := r.op
	act.Point = point
	if err := workflow.ExecuteActivity(r.target, contract.ActFailoverReplica, act).Get(ctx, &out.Failover); err != nil {
		return out, err
	}
	return out, nil
}

// PermanentFailoverWorkflow makes the replica VM of a replica in failover a
// standalone VM and deletes the replica's restore points.
func PermanentFailoverWorkflow(ctx workflow.Context, in contract.ReplicaOpInput) (contract.ReplicaOpResult, error) {
	return replicaOp(ctx, in, contract.ActMakePermanent)
}
