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
	if err := needJobAndVM(in.Job, in.VM); err != nil {
		return contract.FailbackResult{}, err
	}
	if (in.ToHost == "") != (in.As == "") {
		return contract.FailbackResult{}, temporal.NewNonRetryableApplicationError(
			"a failback to a new VM needs both toHost and as (the host and the new VM's name)", contract.ErrTypeBadInput, nil)
	}
	r, err := startReplicaOp(ctx, contract.ReplicaOpInput{Job: in.Job, VM: in.VM})
	if err != nil {
		return contract.FailbackResult{}, err
	}
	f := &failback{ctx: ctx, in: in, replicaOpRun: r, whole: in.ToHost != ""}
	if err := f.prepare(); err != nil {
		return f.out, err
	}
	if err := f.send(); err != nil {
		return f.out, fmt.Errorf("sending the failover changes back: %w", err)
	}
	err = f.start()
	return f.out, err
}

// failback is a failback under way.
type failback struct {
	replicaOpRun
	ctx workflow.Context
	in  contract.FailbackInput
	// whole: every block goes to a new VM on in.ToHost, not the changes to
	// the original VM.
	whole bool
	plan  contract.FailbackPlan
	// vm is the VM that receives the data, and ch the failback channel of
	// the last attempt to send it.
	vm  contract.ShutdownInput
	ch  contract.FailbackChannelInput
	out contract.FailbackResult
}

// prepare stops the replica VM (its disks are what goes back) and readies
// the VM that receives them: the original VM powered off, or a new VM.
func (f *failback) prepare() error {
	// 1. The replica VM stops; its disks are what goes back.
	if err := workflow.ExecuteActivity(f.target, contract.ActPrepareFailback, f.op).Get(f.ctx, &f.plan); err != nil {
		return err
	}
	f.out.ToHost, f.out.ToVM = f.spec.Source, f.plan.VM
	f.vm = contract.ShutdownInput{Host: f.spec.Source, VMID: f.plan.VMID}
	if !f.whole {
		// 2. The original VM is powered off before it is written.
		if err := workflow.ExecuteActivity(f.source, contract.ActShutdownVM, f.vm).Get(f.ctx, nil); err != nil {
			return fmt.Errorf("shutting the original VM %s down: %w", f.plan.VM, err)
		}
		return nil
	}
	// 2. A new VM on the other host, powered off, with empty disks: it
	// receives every block the replica VM holds.
	f.source = workflow.WithActivityOptions(f.ctx, replicaOpActivity(contract.SourceQueue(f.in.ToHost)))
	var id string
	if err := workflow.ExecuteActivity(f.source, contract.ActCreateFailbackVM, contract.CreateVMInput{
		Host: f.in.ToHost, Name: f.in.As, Disks: f.plan.Disks, Config: f.plan.Config}).Get(f.ctx, &id); err != nil {
		return fmt.Errorf("creating VM %s on host %s: %w", f.in.As, f.in.ToHost, err)
	}
	f.vm = contract.ShutdownInput{Host: f.in.ToHost, VMID: id}
	f.out.ToHost, f.out.ToVM = f.in.ToHost, f.in.As
	return nil
}

// send sends the data through a failback channel: the agent opens it, the
// proxy connects to it (as for replication: the proxy dials, the agent
// accepts) and writes what the agent sends into the VM; closing the channel
// gives the agent's result. A channel whose proxy or agent died is given up
// for a new one, up to failbackAttempts.
func (f *failback) send() error {
	f.ch = contract.FailbackChannelInput{Operation: f.op.Operation, Host: f.vm.Host, VMID: f.vm.VMID}
	var sendErr error
	for attempt := 1; attempt <= failbackAttempts; attempt++ {
		f.ch.Operation = fmt.Sprintf("%s/%d", f.op.Operation, attempt)
		attemptOp := f.op
		attemptOp.Operation = f.ch.Operation
		var fc contract.FailbackChannel
		if err := workflow.ExecuteActivity(f.target, contract.ActOpenFailbackChannel, contract.OpenFailbackInput{
			ReplicaOpActivityInput: attemptOp, VMID: f.vm.VMID, Whole: f.whole}).Get(f.ctx, &fc); err != nil {
			return fmt.Errorf("opening the failback channel on the agent: %w", err)
		}
		recvErr := workflow.ExecuteActivity(workflow.WithActivityOptions(f.ctx, sendActivity(contract.SourceQueue(f.vm.Host))),
			contract.ActReceiveFailback, contract.ReceiveFailbackInput{Job: f.in.Job, Host: f.vm.Host, VMID: f.vm.VMID,
				Address: fc.Address, Token: fc.Token}).Get(f.ctx, nil)
		// The channel is closed whatever happened; its result is the agent's.
		sendErr = workflow.ExecuteActivity(f.target, contract.ActCloseFailbackChannel, f.ch).Get(f.ctx, &f.out)
		// A proxy that refused for good (its host cannot be written, a
		// forged address) says why; otherwise the agent's outcome counts.
		if recvErr != nil && (sendErr == nil || isNonRetryable(recvErr)) {
			sendErr = recvErr
		}
		if sendErr == nil || (isNonRetryable(sendErr) && !isErrType(sendErr, contract.ErrTypeFailbackInterrupted)) {
			break
		}
		workflow.GetLogger(f.ctx).Warn("failback transfer failed; sending again through a new channel", "attempt", attempt, "error", sendErr)
	}
	return sendErr
}

// start starts the VM on what the replica VM left and moves the replica to
// failback.
func (f *failback) start() error {
	f.out.ToHost, f.out.ToVM = f.vm.Host, f.plan.VM
	if f.whole {
		f.out.ToVM = f.in.As
	}
	if err := workflow.ExecuteActivity(f.source, contract.ActStartVM, f.vm).Get(f.ctx, nil); err != nil {
		return fmt.Errorf("starting VM %s on host %s: %w", f.out.ToVM, f.vm.Host, err)
	}
	return workflow.ExecuteActivity(f.target, contract.ActFinishFailback, f.ch, f.op).Get(f.ctx, &f.out.Replica)
}

// CommitFailbackWorkflow makes a failed-back replica ready again; the next
// replication run continues incrementally from the failed-back VM.
func CommitFailbackWorkflow(ctx workflow.Context, in contract.ReplicaOpInput) (contract.ReplicaOpResult, error) {
	return replicaOp(ctx, in, contract.ActCommitFailback)
}

// UndoFailbackWorkflow returns a failed-back replica to failover: the
// source VM is shut down and the replica VM started again.
func UndoFailbackWorkflow(ctx workflow.Context, in contract.ReplicaOpInput) (contract.ReplicaOpResult, error) {
	r, err := startReplicaOp(ctx, in)
	if err != nil {
		return contract.ReplicaOpResult{}, err
	}
	status, err := r.replicaInState(ctx, "failback undo", "failback", "")
	if err != nil {
		return status, err
	}
	if err := r.shutDownSource(ctx, status); err != nil {
		return status, err
	}
	var res contract.ReplicaOpResult
	err = workflow.ExecuteActivity(r.target, contract.ActUndoFailback, r.op).Get(ctx, &res)
	return res, err
}

// isErrType says whether an activity's error has the given type.
func isErrType(err error, typ string) bool {
	var app *temporal.ApplicationError
	return errors.As(err, &app) && app.Type() == typ
}
