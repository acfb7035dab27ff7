package workflows

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/replicator/replicator/internal/contract"
)

// transferActivity is the options of one disk transfer. It heartbeats its
// acknowledged position every few seconds: a worker that dies is noticed
// within HeartbeatTimeout and the retry resumes from that position (and from
// the agent's durable one). Retries go on, with backoff capped at a minute,
// until the backup window closes (or a day when there is no window): a network
// failure inside a run is retried inside the run.
func transferActivity(queue string, deadline, now time.Time) workflow.ActivityOptions {
	limit := 24 * time.Hour
	if !deadline.IsZero() {
		// The window's own timer cancels transfers when it closes; the
		// timeout only backs it up, so that a cancellation (which keeps the
		// figures and says "partial") wins over a timeout.
		limit = deadline.Sub(now) + 2*time.Minute
	}
	return workflow.ActivityOptions{
		TaskQueue:              queue,
		ScheduleToCloseTimeout: limit,
		// Cancellation reaches an activity with a heartbeat response, and the
		// SDK sends heartbeats at most every 80% of this: a window that closes
		// stops transfers within about 8 s.
		HeartbeatTimeout:    10 * time.Second,
		WaitForCancellation: true,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:    time.Second,
			BackoffCoefficient: 2,
			MaximumInterval:    time.Minute,
			NonRetryableErrorTypes: []string{
				contract.ErrTypeBadConfig, contract.ErrTypeVMNotFound, contract.ErrTypeCheckpointNotFound,
				contract.ErrTypeAuthentication, contract.ErrTypeBadInput,
			},
		},
	}
}

// longActivity is for checkpoints and commits: minutes of work (guest
// processing, fsync of large files, retention merges) that heartbeat.
func longActivity(queue string) workflow.ActivityOptions {
	o := shortActivity(queue)
	o.ScheduleToCloseTimeout = 2 * time.Hour
	o.StartToCloseTimeout = time.Hour
	o.HeartbeatTimeout = time.Minute
	o.RetryPolicy.NonRetryableErrorTypes = append(o.RetryPolicy.NonRetryableErrorTypes,
		contract.ErrTypeCheckpointNotFound, contract.ErrTypeReplicaLocked)
	return o
}

// VMReplicationWorkflow replicates one VM: checkpoint (after guest processing),
// one transfer per disk, the restore-point commit with retention, and the
// checkpoint turned into the next reference point. When the backup window
// closes first, it stops the transfers and keeps the checkpoint so that the
// next run continues those disks from where they stopped.
func VMReplicationWorkflow(ctx workflow.Context, in contract.VMInput) (contract.VMResult, error) {
	var newest time.Time
	res, err := replicateVM(ctx, in, &newest)
	if err == nil {
		measureLag(ctx, &res, in.Job.RPO, newest)
	}
	return res, err
}

// measureLag sets the age of the VM's newest restore point (the time its
// data was frozen) and flags a VM whose point is older than the rpo.
func measureLag(ctx workflow.Context, res *contract.VMResult, rpo time.Duration, newest time.Time) {
	res.PointTime = newest
	if !newest.IsZero() {
		res.LagSeconds = workflow.Now(ctx).Sub(newest).Seconds()
	}
	if rpo <= 0 {
		return
	}
	switch {
	case newest.IsZero():
		res.RPOExceeded = true
		res.Warning = joinText(res.Warning, fmt.Sprintf("rpo %s missed: the VM has no restore point yet", rpo))
	case workflow.Now(ctx).Sub(newest) > rpo:
		res.RPOExceeded = true
		res.Warning = joinText(res.Warning, fmt.Sprintf("rpo %s missed: the newest restore point is %s old (its data is of %s)",
			rpo, workflow.Now(ctx).Sub(newest).Round(time.Second), newest.UTC().Format(time.RFC3339)))
	}
}

// replicateVM is the VM's run; it keeps *newest at the time of the VM's
// newest committed restore point.
func replicateVM(ctx workflow.Context, in contract.VMInput, newest *time.Time) (contract.VMResult, error) {
	logger := workflow.GetLogger(ctx)
	res := contract.VMResult{Name: in.VM.Name, ID: in.VM.ID, Status: contract.StatusRunning, Disks: []contract.DiskResult{}}
	for _, d := range in.VM.Disks {
		res.Disks = append(res.Disks, contract.DiskResult{ID: d.ID, Status: contract.StatusPending, Size: d.VirtualSize})
	}
	if err := workflow.SetQueryHandler(ctx, contract.ProgressQuery, func() (contract.VMResult, error) { return res, nil }); err != nil {
		return res, err
	}
	job := in.Job
	source := contract.SourceQueue(job.Source)
	// The Web UI's current details say which VM this is and how far it got.
	step := func(what string) { setVMDetails(ctx, res, what) }
	step("preparing the replica")
	target := contract.TargetQueue(job.Target)

	// The window: when it closes, work is cancelled through workCtx; cleanup
	// then runs on a disconnected context.
	workCtx, stopWork := workflow.WithCancel(ctx)
	windowClosed := false
	if !in.Deadline.IsZero() {
		remaining := in.Deadline.Sub(workflow.Now(ctx))
		if remaining <= 0 {
			return partialAll(res, "backup window closed before this VM started"), nil
		}
		workflow.Go(ctx, func(gctx workflow.Context) {
			if err := workflow.NewTimer(gctx, remaining).Get(gctx, nil); err == nil {
				windowClosed = true
				stopWork()
			}
		})
	}
	cleanupCtx, _ := workflow.NewDisconnectedContext(ctx)
	// Every checkpoint this run makes is released or left for the next run
	// to reuse, on every path, and the run removes what earlier ones left.
	everyCheckpoint := workflow.GetVersion(ctx, "release-every-checkpoint", workflow.DefaultVersion, 1) == 1
	// sweep removes the job's checkpoints of this VM but keep (the one a
	// restore point continues from).
	sweep := func(keep string) {
		var removed []string
		err := workflow.ExecuteActivity(workflow.WithActivityOptions(cleanupCtx, shortActivity(source)),
			contract.ActSweepCheckpoints, contract.SweepInput{Host: job.Source, Job: job.Name, VMID: in.VM.ID, Keep: keep}).Get(cleanupCtx, &removed)
		if err != nil {
			logger.Error("removing leftover checkpoints failed", "error", err)
			res.Warning = joinText(res.Warning, "checkpoints of this job left on the host could not be removed: "+errorText(err))
		} else if len(removed) > 0 {
			logger.Info("removed leftover checkpoints", "checkpoints", removed)
		}
	}

	// Replica state: an interrupted restore point, the newest point, the reference point.
	var state contract.ReplicaState
	if err := workflow.ExecuteActivity(workflow.WithActivityOptions(workCtx, longActivity(target)),
		contract.ActPrepareReplica, in.Job.Name, in.VM).Get(workCtx, &state); err != nil {
		return stopped(res, windowClosed, fmt.Errorf("preparing the replica: %w", err))
	}
	*newest = state.NewestPointTime

	// Fewer round trips through the server: the checkpoint activity sweeps
	// too, and the disks' progress goes to the run beside the commit
	// instead of before it. Nothing runs in another order on a host.
	fewerTrips := everyCheckpoint && workflow.GetVersion(ctx, "fewer-round-trips", workflow.DefaultVersion, 1) == 1

	// Checkpoint (guest processing inside), reusing the interrupted one if it still exists.
	asked := workflow.Now(ctx)
	var cp contract.CheckpointResult
	if err := workflow.ExecuteActivity(workflow.WithActivityOptions(workCtx, longActivity(source)),
		contract.ActCreateCheckpoint, contract.CheckpointInput{
			Host: job.Source, Job: job.Name, VMID: in.VM.ID, VMName: in.VM.Name, ReuseID: state.OpenCheckpointID,
			Sweep: fewerTrips,
		}).Get(workCtx, &cp); err != nil {
		if everyCheckpoint {
			// The activity may have failed, or been cancelled, after the host
			// made the checkpoint: nothing but the interrupted point's stays.
			sweep(state.OpenCheckpointID)
		}
		return stopped(res, windowClosed, fmt.Errorf("creating the checkpoint: %w", err))
	}
	res.Warning = joinText(res.Warning, cp.Warning)
	step("checkpoint " + cp.ID + " taken; opening the restore point")
	switch {
	case fewerTrips:
		// The checkpoint activity removed the leftovers itself (Sweep).
		if cp.SweepError != "" {
			logger.Error("removing leftover checkpoints failed", "error", cp.SweepError)
			res.Warning = joinText(res.Warning, "checkpoints of this job left on the host could not be removed: "+cp.SweepError)
		} else if len(cp.Removed) > 0 {
			logger.Info("removed leftover checkpoints", "checkpoints", cp.Removed)
		}
	case everyCheckpoint:
		// Leftovers of earlier runs, and of attempts of this one that made a
		// checkpoint before failing, are of no use now.
		sweep(cp.ID)
	}
	release := func(reason string) {
		logger.Info("releasing checkpoint", "checkpoint", cp.ID, "reason", reason)
		err := workflow.ExecuteActivity(workflow.WithActivityOptions(cleanupCtx, longActivity(source)),
			contract.ActReleaseCheckpoint, contract.ReleaseInput{Host: job.Source, VMID: in.VM.ID, CheckpointID: cp.ID}).Get(cleanupCtx, nil)
		if err != nil {
			logger.Error("releasing the checkpoint failed; it stays on the host", "checkpoint", cp.ID, "error", err)
			res.Warning = joinText(res.Warning, "checkpoint "+cp.ID+" could not be released: "+errorText(err))
		}
	}

	var begin contract.BeginResult
	if err := workflow.ExecuteActivity(workflow.WithActivityOptions(workCtx, longActivity(target)),
		contract.ActBeginRestorePoint, contract.BeginInput{
			Job: job.Name, VMID: in.VM.ID, RunID: workflow.GetInfo(ctx).WorkflowExecution.RunID,
			CheckpointID: cp.ID, ChangeTracking: job.ChangeTracking, BlockSize: job.BlockSize, VM: &in.VM,
			Exclusions:     &contract.Exclusions{Swap: job.ExcludeSwap, Paths: job.ExcludePaths},
			CheckpointTime: cp.Taken,
		}).Get(workCtx, &begin); err != nil {
		switch {
		case everyCheckpoint && windowClosed && cp.Reused:
			// The interrupted point is still keyed by this checkpoint: the
			// next run continues it.
		case everyCheckpoint:
			// No restore point continues from this checkpoint (or one whose
			// transfers were cancelled is discarded by the next run).
			release("opening the restore point did not finish")
		case isCancel(err) && !windowClosed:
			release("run cancelled")
		}
		return stopped(res, windowClosed, fmt.Errorf("opening the restore point: %w", err))
	}

	step("transferring")
	// One transfer per disk, all disks of the VM at once.
	tctx := workflow.WithActivityOptions(workCtx, transferActivity(source, in.Deadline, workflow.Now(ctx)))
	futures := make([]workflow.Future, len(in.VM.Disks))
	for i, d := range in.VM.Disks {
		res.Disks[i].Status = contract.StatusRunning
		res.Disks[i].Position = begin.Positions[d.ID]
		futures[i] = workflow.ExecuteActivity(tctx, contract.ActTransferDisk, contract.TransferInput{
			Job: job, VMID: in.VM.ID, DiskID: d.ID, CheckpointID: cp.ID,
			ReferencePoint: state.ReferencePoint, HasPreviousPoint: state.NewestPoint != "",
			ParentWorkflowID: in.ParentWorkflowID, Deadline: in.Deadline, Token: begin.Token,
			PreviousExclusions: state.Exclusions,
		})
	}
	var firstErr error
	for i, f := range futures {
		var dr contract.DiskResult
		err := f.Get(ctx, &dr)
		if err == nil {
			res.Disks[i] = dr
			res.Disks[i].Status = contract.StatusSuccess
			continue
		}
		// A cancelled transfer, or one stopped by the window, reports its
		// figures so far in the error's details.
		var canceled *temporal.CanceledError
		if errors.As(err, &canceled) && canceled.HasDetails() {
			if derr := canceled.Details(&dr); derr == nil {
				res.Disks[i] = dr
			}
		}
		if isWindowClosed(err) {
			var app *temporal.ApplicationError
			if errors.As(err, &app) && app.HasDetails() {
				if derr := app.Details(&dr); derr == nil {
					res.Disks[i] = dr
				}
			}
			// The transfer saw the window close before the timer here did.
			windowClosed = true
		}
		res.Disks[i].ID = in.VM.Disks[i].ID
		res.Disks[i].Size = in.VM.Disks[i].VirtualSize
		if windowClosed && (isCancel(err) || temporal.IsTimeoutError(err) || isWindowClosed(err)) {
			res.Disks[i].Status = contract.StatusPartial
			res.Disks[i].Error = "backup window closed; the next run continues from the acknowledged position"
		} else {
			res.Disks[i].Status = contract.StatusFailed
			res.Disks[i].Error = errorText(err)
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	if windowClosed {
		// The agent's durable positions are what the next run continues from.
		var positions map[string]int64
		if err := workflow.ExecuteActivity(workflow.WithActivityOptions(cleanupCtx, shortActivity(target)),
			contract.ActSessionPositions, contract.PositionsInput{Job: job.Name, VMID: in.VM.ID}).Get(cleanupCtx, &positions); err == nil {
			for i := range res.Disks {
				if p, ok := positions[res.Disks[i].ID]; ok && res.Disks[i].Status != contract.StatusSuccess {
					res.Disks[i].Position = p
				}
			}
		}
	}
	for _, d := range res.Disks {
		if fewerTrips {
			// Sent with the next command; the run also has the VM's result.
			sendProgress(cleanupCtx, in, d)
		} else {
			signalProgress(cleanupCtx, in, d)
		}
		// What a transfer could not do as configured is the VM's warning.
		if d.Warning != "" && !strings.Contains(res.Warning, d.Warning) {
			res.Warning = joinText(res.Warning, d.Warning)
		}
	}

	if windowClosed || firstErr != nil || ctx.Err() != nil {
		switch {
		case ctx.Err() != nil && !windowClosed:
			// Cancelled by an operator: release the checkpoint; the open restore
			// point is discarded by the next run, which brings a new checkpoint.
			release("run cancelled")
			res.Status = contract.StatusFailed
			res.Error = "run cancelled"
		case windowClosed:
			res.Status = contract.StatusPartial
			res.Error = "backup window closed; the checkpoint is kept and the next run continues"
		case temporal.IsApplicationError(firstErr) && isNonRetryable(firstErr):
			release("transfer failed for good")
			res.Status = contract.StatusFailed
			res.Error = errorText(firstErr)
		default:
			// Transient failures outlasted their retries: keep the checkpoint so
			// the next run continues from the acknowledged positions.
			res.Status = contract.StatusFailed
			res.Error = errorText(firstErr)
			res.Retryable = mayPass(firstErr)
		}
		return res, nil
	}

	step("committing the restore point")
	// Commit the restore point and apply retention.
	var point string
	if err := workflow.ExecuteActivity(workflow.WithActivityOptions(cleanupCtx, longActivity(target)),
		contract.ActCommitRestorePoint, contract.CommitInput{Job: job.Name, VMID: in.VM.ID, Retention: job.Retention, CheckpointID: cp.ID}).Get(cleanupCtx, &point); err != nil {
		if everyCheckpoint && isNonRetryable(err) {
			// The next run cannot commit this point: it starts over from a
			// new checkpoint. A transient failure keeps the checkpoint, and
			// the next run commits what was sent.
			release("commit failed for good")
		}
		res.Status = contract.StatusFailed
		res.Error = "committing the restore point: " + errorText(err)
		res.Retryable = mayPass(err)
		return res, nil
	}
	res.RestorePoint = point
	res.Status = contract.StatusSuccess
	*newest = cp.Taken
	if cp.Taken.IsZero() {
		// A proxy that does not say when it took the checkpoint: the data
		// of a new checkpoint is no older than the request for it.
		*newest = asked
	}

	// The checkpoint becomes the next reference point (its changes are what the
	// next run sends); the replica records which one, so that CBT is only used
	// against the point it describes.
	var ref string
	err := workflow.ExecuteActivity(workflow.WithActivityOptions(cleanupCtx, longActivity(source)),
		contract.ActConvertToReferencePoint, contract.ReferencePointInput{
			Host: job.Source, VMID: in.VM.ID, CheckpointID: cp.ID, Previous: state.ReferencePoint,
		}).Get(cleanupCtx, &ref)
	if err != nil {
		res.Warning = joinText(res.Warning, "turning the checkpoint into a reference point failed; the next run compares digests: "+errorText(err))
		release("reference point failed")
		return res, nil
	}
	if err := workflow.ExecuteActivity(workflow.WithActivityOptions(cleanupCtx, longActivity(target)),
		contract.ActRecordReferencePoint, contract.RecordReferenceInput{
			Job: job.Name, VMID: in.VM.ID, Point: point, ReferencePoint: ref,
		}).Get(cleanupCtx, nil); err != nil {
		res.Warning = joinText(res.Warning, "recording the reference point failed; the next run compares digests: "+errorText(err))
	}
	return res, nil
}

// sendProgress signals a disk's progress to the run without waiting for
// the signal to be delivered: best effort, as signalProgress.
func sendProgress(ctx workflow.Context, in contract.VMInput, d contract.DiskResult) {
	if in.ParentWorkflowID == "" {
		return
	}
	workflow.SignalExternalWorkflow(ctx, in.ParentWorkflowID, "", contract.ProgressSignal,
		contract.ProgressUpdate{VMID: in.VM.ID, Disk: d})
}

func signalProgress(ctx workflow.Context, in contract.VMInput, d contract.DiskResult) {
	if in.ParentWorkflowID == "" {
		return
	}
	// Best effort: the parent also gets the final result from the child.
	_ = workflow.SignalExternalWorkflow(ctx, in.ParentWorkflowID, "", contract.ProgressSignal,
		contract.ProgressUpdate{VMID: in.VM.ID, Disk: d}).Get(ctx, nil)
}

// stopped is the result of a VM whose run stopped before its transfers.
func stopped(res contract.VMResult, windowClosed bool, err error) (contract.VMResult, error) {
	if windowClosed && isCancel(err) {
		return partialAll(res, "backup window closed before the transfers started"), nil
	}
	res.Status = contract.StatusFailed
	res.Error = errorText(err)
	res.Retryable = mayPass(err)
	for i := range res.Disks {
		res.Disks[i].Status = contract.StatusFailed
	}
	return res, nil
}

// mayPass says whether trying the VM again later may succeed where err
// failed: not after a cancellation or a failure no retry fixes (a bad
// setting, a missing VM, a bad name), but after a timeout, a replica another
// process held, a checkpoint that vanished, or retries that ran out.
func mayPass(err error) bool {
	if err == nil || isCancel(err) {
		return false
	}
	var app *temporal.ApplicationError
	if errors.As(err, &app) && app.NonRetryable() {
		switch app.Type() {
		case contract.ErrTypeReplicaLocked, contract.ErrTypeCheckpointNotFound:
			return true
		}
		return false
	}
	return true
}

func partialAll(res contract.VMResult, reason string) contract.VMResult {
	res.Status = contract.StatusPartial
	res.Error = reason
	for i := range res.Disks {
		res.Disks[i].Status = contract.StatusPartial
	}
	return res
}

func isCancel(err error) bool {
	var c *temporal.CanceledError
	return errors.As(err, &c)
}

func isNonRetryable(err error) bool {
	var app *temporal.ApplicationError
	return errors.As(err, &app) && app.NonRetryable()
}

func joinText(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

func isWindowClosed(err error) bool {
	var app *temporal.ApplicationError
	return errors.As(err, &app) && app.Type() == contract.ErrTypeWindowClosed
}

// setVMDetails shows the VM, its disks and its state in the Web UI.
func setVMDetails(ctx workflow.Context, res contract.VMResult, state string) {
	var done, size int64
	for _, d := range res.Disks {
		done += d.Position
		size += d.Size
	}
	text := fmt.Sprintf("**%s** — %s; %s of %s acknowledged\n\n", res.Name, state, humanBytes(done), humanBytes(size))
	for _, d := range res.Disks {
		text += fmt.Sprintf("- disk %s: %s %s/%s\n", d.ID, d.Status, humanBytes(d.Position), humanBytes(d.Size))
	}
	workflow.SetCurrentDetails(ctx, text)
}
