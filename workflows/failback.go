package workflows

import (
	"errors"
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/replicator/replicator/internal/contract"
)

// failbackAttempts bounds how many failback channels a failback opens: a new
// one after the proxy (which holds the channel) or the agent died.
const failbackAttempts = 10

// sendActivity is the options of the proxy's side of a failback transfer:
// the agent's sender rides out network blips inside; one attempt here, since
// a channel whose agent died never comes back: the workflow opens a new one
// and sends again. Heartbeats tell a dead proxy within 15 seconds.
func sendActivity(queue string) workflow.ActivityOptions {
	o := replicaOpActivity(queue)
	o.ScheduleToCloseTimeout = 24 * time.Hour
	o.StartToCloseTimeout = 12 * time.Hour
	o.HeartbeatTimeout = 15 * time.Second
	o.RetryPolicy.MaximumAttempts = 1
	return o
}

// FailbackWorkflow sends what the replica VM changed in failover back to the
// source VM, which is powered off first and started after; or, with ToHost
// and As, everything the replica VM holds to a new VM on that host. The
// replica goes to failback.
func FailbackWorkflow(ctx workflow.Context, in contract.FailbackInput) (contract.FailbackResult, error) {
	var out contract.FailbackResult
	if in.Job == "" || in.VM == "" {
		return out, temporal.NewNonRetryableApplicationError(
			`input needs a job and a VM: {"job": "NAME", "vm": "NAME or id"}`, contract.ErrTypeBadInput, nil)
	}
	if (in.ToHost == "") != (in.As == "") {
		return out, temporal.NewNonRetryableApplicationError(
			"a failback to a new VM needs both toHost and as (the host and the new VM's name)", contract.ErrTypeBadInput, nil)
	}
	var spec contract.JobSpec
	if err := workflow.ExecuteActivity(workflow.WithActivityOptions(ctx, replicaOpActivity("")), contract.ActLoadJob, in.Job).Get(ctx, &spec); err != nil {
		return out, fmt.Errorf("loading job %q: %w", in.Job, err)
	}
	info := workflow.GetInfo(ctx)
	op := contract.ReplicaOpActivityInput{ReplicaOpInput: contract.ReplicaOpInput{Job: in.Job, VM: in.VM},
		Operation: info.WorkflowExecution.ID + "/" + info.WorkflowExecution.RunID}
	tctx := workflow.WithActivityOptions(ctx, replicaOpActivity(contract.TargetQueue(spec.Target)))
	sctx := workflow.WithActivityOptions(ctx, replicaOpActivity(contract.SourceQueue(spec.Source)))

	// 1. The replica VM stops; its disks are what goes back.
	var plan contract.FailbackPlan
	if err := workflow.ExecuteActivity(tctx, contract.ActPrepareFailback, op).Get(ctx, &plan); err != nil {
		return out, err
	}
	out.ToHost, out.ToVM = spec.Source, plan.VM
	vm := contract.ShutdownInput{Host: spec.Source, VMID: plan.VMID}
	whole := in.ToHost != ""
	if whole {
		// 2. A new VM on the other host, powered off, with empty disks:
		// it receives every block the replica VM holds.
		sctx = workflow.WithActivityOptions(ctx, replicaOpActivity(contract.SourceQueue(in.ToHost)))
		var id string
		if err := workflow.ExecuteActivity(sctx, contract.ActCreateFailbackVM, contract.CreateVMInput{
			Host: in.ToHost, Name: in.As, Disks: plan.Disks, Config: plan.Config}).Get(ctx, &id); err != nil {
			return out, fmt.Errorf("creating VM %s on host %s: %w", in.As, in.ToHost, err)
		}
		vm = contract.ShutdownInput{Host: in.ToHost, VMID: id}
		out.ToHost, out.ToVM = in.ToHost, in.As
	} else {
		// 2. The original VM is powered off before it is written.
		if err := workflow.ExecuteActivity(sctx, contract.ActShutdownVM, vm).Get(ctx, nil); err != nil {
			return out, fmt.Errorf("shutting the original VM %s down: %w", plan.VM, err)
		}
	}
	// 3. The change set: the agent opens a failback channel, the proxy
	// connects to it (as for replication: the proxy dials, the agent
	// accepts) and writes what the agent sends into the VM; closing the
	// channel gives the agent's result.
	ch := contract.FailbackChannelInput{Operation: op.Operation, Host: vm.Host, VMID: vm.VMID}
	var sendErr error
	for attempt := 1; attempt <= failbackAttempts; attempt++ {
		ch.Operation = fmt.Sprintf("%s/%d", op.Operation, attempt)
		attemptOp := op
		attemptOp.Operation = ch.Operation
		var fc contract.FailbackChannel
		if err := workflow.ExecuteActivity(tctx, contract.ActOpenFailbackChannel, contract.OpenFailbackInput{
			ReplicaOpActivityInput: attemptOp, VMID: vm.VMID, Whole: whole}).Get(ctx, &fc); err != nil {
			return out, fmt.Errorf("opening the failback channel on the agent: %w", err)
		}
		recvErr := workflow.ExecuteActivity(workflow.WithActivityOptions(ctx, sendActivity(contract.SourceQueue(vm.Host))),
			contract.ActReceiveFailback, contract.ReceiveFailbackInput{Job: in.Job, Host: vm.Host, VMID: vm.VMID,
				Address: fc.Address, Token: fc.Token}).Get(ctx, nil)
		// The channel is closed whatever happened; its result is the agent's.
		sendErr = workflow.ExecuteActivity(tctx, contract.ActCloseFailbackChannel, ch).Get(ctx, &out)
		// A proxy that refused for good (its host cannot be written, a
		// forged address) says why; otherwise the agent's outcome counts.
		if recvErr != nil && (sendErr == nil || nonRetryable(recvErr)) {
			sendErr = recvErr
		}
		if sendErr == nil || (nonRetryable(sendErr) && !isErrType(sendErr, contract.ErrTypeFailbackInterrupted)) {
			break
		}
		workflow.GetLogger(ctx).Warn("failback transfer failed; sending again through a new channel", "attempt", attempt, "error", sendErr)
	}
	if sendErr != nil {
		return out, fmt.Errorf("sending the failover changes back: %w", sendErr)
	}
	out.ToHost, out.ToVM = vm.Host, plan.VM
	if whole {
		out.ToVM = in.As
	}
	// 4. The VM starts on what the replica VM left.
	if err := workflow.ExecuteActivity(sctx, contract.ActStartVM, vm).Get(ctx, nil); err != nil {
		return out, fmt.Errorf("starting VM %s on host %s: %w", out.ToVM, vm.Host, err)
	}
	if err := workflow.ExecuteActivity(tctx, contract.ActFinishFailback, ch, op).Get(ctx, &out.Replica); err != nil {
		return out, err
	}
	return out, nil
}

// CommitFailbackWorkflow makes a failed-back replica ready again; the next
// replication run continues incrementally from the failed-back VM.
func CommitFailbackWorkflow(ctx workflow.Context, in contract.ReplicaOpInput) (contract.ReplicaOpResult, error) {
	return replicaOp(ctx, in, contract.ActCommitFailback)
}

// UndoFailbackWorkflow returns a failed-back replica to failover: the
// source VM is shut down and the replica VM started again.
func UndoFailbackWorkflow(ctx workflow.Context, in contract.ReplicaOpInput) (contract.ReplicaOpResult, error) {
	if in.Job == "" || in.VM == "" {
		return contract.ReplicaOpResult{}, temporal.NewNonRetryableApplicationError(
			`input needs a job and a VM: {"job": "NAME", "vm": "NAME or id"}`, contract.ErrTypeBadInput, nil)
	}
	var spec contract.JobSpec
	if err := workflow.ExecuteActivity(workflow.WithActivityOptions(ctx, replicaOpActivity("")), contract.ActLoadJob, in.Job).Get(ctx, &spec); err != nil {
		return contract.ReplicaOpResult{}, fmt.Errorf("loading job %q: %w", in.Job, err)
	}
	info := workflow.GetInfo(ctx)
	op := contract.ReplicaOpActivityInput{ReplicaOpInput: in, Operation: info.WorkflowExecution.ID + "/" + info.WorkflowExecution.RunID}
	tctx := workflow.WithActivityOptions(ctx, replicaOpActivity(contract.TargetQueue(spec.Target)))
	var status contract.ReplicaOpResult
	if err := workflow.ExecuteActivity(tctx, contract.ActReplicaStatus, op).Get(ctx, &status); err != nil {
		return status, err
	}
	if status.State != "failback" {
		return status, temporal.NewNonRetryableApplicationError(fmt.Sprintf(
			"failback undo of %s in job %s refused: the replica is in state %s (failback undo needs failback)", status.VM, in.Job, status.State),
			contract.ErrTypeReplicaState, nil)
	}
	sctx := workflow.WithActivityOptions(ctx, replicaOpActivity(contract.SourceQueue(spec.Source)))
	if err := workflow.ExecuteActivity(sctx, contract.ActShutdownVM, contract.ShutdownInput{Host: spec.Source, VMID: status.VMID}).Get(ctx, nil); err != nil {
		return status, fmt.Errorf("shutting the source VM %s down: %w", status.VM, err)
	}
	var res contract.ReplicaOpResult
	err := workflow.ExecuteActivity(tctx, contract.ActUndoFailback, op).Get(ctx, &res)
	return res, err
}

// nonRetryable says whether an activity's error is final.
func nonRetryable(err error) bool {
	var app *temporal.ApplicationError
	return errors.As(err, &app) && app.NonRetryable()
}

// isErrType says whether an activity's error has the given type.
func isErrType(err error, typ string) bool {
	var app *temporal.ApplicationError
	return errors.As(err, &app) && app.Type() == typ
}
