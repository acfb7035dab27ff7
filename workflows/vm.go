package workflows

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/replicator/replicator/internal/bytesize"
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
	r := newVMRun(ctx, in)
	if err := workflow.SetQueryHandler(ctx, contract.ProgressQuery, func() (contract.VMResult, error) { return r.res, nil }); err != nil {
		return r.res, err
	}
	r.run()
	measureLag(ctx, &r.res, in.Job.RPO, r.newest)
	return r.res, nil
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

// vmRun is one run of a VM: what its steps learned and its result so far.
// run calls the steps in order; after each, settle asks decideOutcome
// whether the VM's run is over and how it ended.
type vmRun struct {
	ctx workflow.Context
	// work is cancelled when the backup window closes; cleanup is
	// disconnected from every cancellation, so that a checkpoint is still
	// released and a point still committed or read after one.
	work, cleanup  workflow.Context
	stopWork       workflow.CancelFunc
	logger         log.Logger
	in             contract.VMInput
	source, target string // the task queues of the job's source host and target
	res            contract.VMResult
	// newest is when the data of the VM's newest committed restore point
	// was frozen (zero: it has none).
	newest time.Time
	// windowClosed says the backup window closed; only closeWindow sets it.
	windowClosed bool
	// everyCheckpoint: every checkpoint the run makes is released or left
	// for the next run to reuse, on every path, and the run removes what
	// earlier ones left. fewerTrips: the checkpoint activity removes those
	// leftovers itself, and the disks' progress goes to the job run beside
	// the commit instead of before it. Both are recorded versions, so that
	// runs recorded before them replay.
	everyCheckpoint, fewerTrips bool

	state contract.ReplicaState     // the replica: interrupted point, newest point, reference point
	asked time.Time                 // when the checkpoint was asked for
	cp    contract.CheckpointResult // the run's checkpoint
	begin contract.BeginResult      // the open restore point: token and the disks' positions
}

// newVMRun is the run of in.VM before its first step: every disk pending.
func newVMRun(ctx workflow.Context, in contract.VMInput) *vmRun {
	r := &vmRun{
		ctx:    ctx,
		logger: workflow.GetLogger(ctx),
		in:     in,
		source: contract.SourceQueue(in.Job.Source),
		target: contract.TargetQueue(in.Job.Target),
		res:    contract.VMResult{Name: in.VM.Name, ID: in.VM.ID, Status: contract.StatusRunning, Disks: []contract.DiskResult{}},
	}
	for _, d := range in.VM.Disks {
		r.res.Disks = append(r.res.Disks, contract.DiskResult{ID: d.ID, Status: contract.StatusPending, Size: d.VirtualSize})
	}
	r.work, r.stopWork = workflow.WithCancel(ctx)
	r.cleanup, _ = workflow.NewDisconnectedContext(ctx)
	return r
}

// run is the VM's steps in order. Each step's error (or the window) goes to
// settle, which ends the run where decideOutcome says it is over.
func (r *vmRun) run() {
	r.step("preparing the replica")
	r.startWindow()
	if r.settle(stageStart, nil) {
		return
	}
	r.everyCheckpoint = workflow.GetVersion(r.ctx, "release-every-checkpoint", workflow.DefaultVersion, 1) == 1
	if r.settle(stagePrepare, r.prepare()) {
		return
	}
	r.fewerTrips = r.everyCheckpoint && workflow.GetVersion(r.ctx, "fewer-round-trips", workflow.DefaultVersion, 1) == 1
	if r.settle(stageCheckpoint, r.checkpoint()) {
		return
	}
	if r.settle(stageBegin, r.openPoint()) {
		return
	}
	if r.settle(stageTransfer, r.transfer()) {
		return
	}
	if r.settle(stageCommit, r.commit()) {
		return
	}
	r.keepReferencePoint()
}

// settle ends the run where decideOutcome says it is over: the
// checkpoint is released, swept or kept as checkpointFate says, then the
// VM's status is set. It says whether the run stops here; a committed point
// goes on to its reference point, which can only add warnings.
func (r *vmRun) settle(s stage, err error) bool {
	f := vmFacts{
		stage: s, err: err, windowClosed: r.windowClosed, cancelled: r.ctx.Err() != nil,
		everyCheckpoint: r.everyCheckpoint, reusedCheckpoint: r.cp.Reused,
	}
	o := decideOutcome(f)
	if o.status == "" {
		return false
	}
	release, sweep := checkpointFate(f)
	if sweep {
		r.sweep(r.state.OpenCheckpointID)
	}
	if release != "" {
		r.release(release)
	}
	r.res.Status, r.res.Error, r.res.Retryable = o.status, o.reason, o.retryable
	if o.disks != "" {
		for i := range r.res.Disks {
			r.res.Disks[i].Status = o.disks
		}
	}
	return o.status != contract.StatusSuccess
}

// step shows in the Web UI which VM this is and how far it got.
func (r *vmRun) step(what string) { setVMDetails(r.ctx, r.res, what) }

// closeWindow records that the backup window closed: its timer fired, or a
// transfer stopped at the deadline it carries before that timer did.
func (r *vmRun) closeWindow() { r.windowClosed = true }

// startWindow starts the backup window's timer: when it fires, the work
// still going (through r.work) is cancelled. A window already closed is
// recorded at once.
func (r *vmRun) startWindow() {
	if r.in.Deadline.IsZero() {
		return
	}
	remaining := r.in.Deadline.Sub(workflow.Now(r.ctx))
	if remaining <= 0 {
		r.closeWindow()
		return
	}
	workflow.Go(r.ctx, func(gctx workflow.Context) {
		if err := workflow.NewTimer(gctx, remaining).Get(gctx, nil); err == nil {
			r.closeWindow()
			r.stopWork()
		}
	})
}

// prepare reads the replica's state: an interrupted restore point, the
// newest point, the reference point.
func (r *vmRun) prepare() error {
	if err := workflow.ExecuteActivity(workflow.WithActivityOptions(r.work, longActivity(r.target)),
		contract.ActPrepareReplica, r.in.Job.Name, r.in.VM).Get(r.work, &r.state); err != nil {
		return fmt.Errorf("preparing the replica: %w", err)
	}
	r.newest = r.state.NewestPointTime
	return nil
}

// checkpoint takes the checkpoint (guest processing inside), reusing the
// interrupted one if it still exists, and removes the job's leftovers.
func (r *vmRun) checkpoint() error {
	job := r.in.Job
	r.asked = workflow.Now(r.ctx)
	if err := workflow.ExecuteActivity(workflow.WithActivityOptions(r.work, longActivity(r.source)),
		contract.ActCreateCheckpoint, contract.CheckpointInput{
			Host: job.Source, Job: job.Name, VMID: r.in.VM.ID, VMName: r.in.VM.Name, ReuseID: r.state.OpenCheckpointID,
			Sweep: r.fewerTrips,
		}).Get(r.work, &r.cp); err != nil {
		return fmt.Errorf("creating the checkpoint: %w", err)
	}
	r.res.Warning = joinText(r.res.Warning, r.cp.Warning)
	r.step("checkpoint " + r.cp.ID + " taken; opening the restore point")
	switch {
	case r.fewerTrips:
		// The checkpoint activity removed the leftovers itself (Sweep).
		var failure error
		if r.cp.SweepError != "" {
			failure = errors.New(r.cp.SweepError)
		}
		r.sweptLeftovers(r.cp.Removed, failure)
	case r.everyCheckpoint:
		// Leftovers of earlier runs, and of attempts of this one that made a
		// checkpoint before failing, are of no use now.
		r.sweep(r.cp.ID)
	}
	return nil
}

// sweep removes the job's checkpoints of this VM but keep (the one a
// restore point continues from).
func (r *vmRun) sweep(keep string) {
	var removed []string
	err := workflow.ExecuteActivity(workflow.WithActivityOptions(r.cleanup, shortActivity(r.source)),
		contract.ActSweepCheckpoints, contract.SweepInput{Host: r.in.Job.Source, Job: r.in.Job.Name, VMID: r.in.VM.ID, Keep: keep}).Get(r.cleanup, &removed)
	r.sweptLeftovers(removed, err)
}

// sweptLeftovers logs the leftover checkpoints removed, or makes the
// failure to remove them the VM's warning.
func (r *vmRun) sweptLeftovers(removed []string, err error) {
	if err != nil {
		r.logger.Error("removing leftover checkpoints failed", "error", err)
		r.res.Warning = joinText(r.res.Warning, "checkpoints of this job left on the host could not be removed: "+errorText(err))
	} else if len(removed) > 0 {
		r.logger.Info("removed leftover checkpoints", "checkpoints", removed)
	}
}

// release releases the run's checkpoint; one that cannot be released stays
// on the host and is the VM's warning.
func (r *vmRun) release(reason string) {
	r.logger.Info("releasing checkpoint", "checkpoint", r.cp.ID, "reason", reason)
	err := workflow.ExecuteActivity(workflow.WithActivityOptions(r.cleanup, longActivity(r.source)),
		contract.ActReleaseCheckpoint, contract.ReleaseInput{Host: r.in.Job.Source, VMID: r.in.VM.ID, CheckpointID: r.cp.ID}).Get(r.cleanup, nil)
	if err != nil {
		r.logger.Error("releasing the checkpoint failed; it stays on the host", "checkpoint", r.cp.ID, "error", err)
		r.res.Warning = joinText(r.res.Warning, "checkpoint "+r.cp.ID+" could not be released: "+errorText(err))
	}
}

// openPoint opens the restore point on the target, keyed by the checkpoint.
func (r *vmRun) openPoint() error {
	job := r.in.Job
	if err := workflow.ExecuteActivity(workflow.WithActivityOptions(r.work, longActivity(r.target)),
		contract.ActBeginRestorePoint, contract.BeginInput{
			Job: job.Name, VMID: r.in.VM.ID, RunID: workflow.GetInfo(r.ctx).WorkflowExecution.RunID,
			CheckpointID: r.cp.ID, ChangeTracking: job.ChangeTracking, BlockSize: job.BlockSize, VM: &r.in.VM,
			Exclusions:     &contract.Exclusions{Swap: job.ExcludeSwap, Paths: job.ExcludePaths},
			CheckpointTime: r.cp.Taken,
		}).Get(r.work, &r.begin); err != nil {
		return fmt.Errorf("opening the restore point: %w", err)
	}
	return nil
}

// transfer runs one transfer per disk, all disks of the VM at once, and
// reports each disk's result to the job run. It returns the first failure
// of a disk that the window does not explain.
func (r *vmRun) transfer() error {
	r.step("transferring")
	tctx := workflow.WithActivityOptions(r.work, transferActivity(r.source, r.in.Deadline, workflow.Now(r.ctx)))
	futures := make([]workflow.Future, len(r.in.VM.Disks))
	for i, d := range r.in.VM.Disks {
		r.res.Disks[i].Status = contract.StatusRunning
		r.res.Disks[i].Position = r.begin.Positions[d.ID]
		futures[i] = workflow.ExecuteActivity(tctx, contract.ActTransferDisk, contract.TransferInput{
			Job: r.in.Job, VMID: r.in.VM.ID, DiskID: d.ID, CheckpointID: r.cp.ID,
			ReferencePoint: r.state.ReferencePoint, HasPreviousPoint: r.state.NewestPoint != "",
			ParentWorkflowID: r.in.ParentWorkflowID, Deadline: r.in.Deadline, Token: r.begin.Token,
			PreviousExclusions: r.state.Exclusions,
		})
	}
	var firstErr error
	for i, f := range futures {
		if err := r.diskDone(i, f); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	if r.windowClosed {
		r.readPositions()
	}
	r.reportDisks()
	return firstErr
}

// diskDone waits for the transfer of disk i and records its result. It
// returns the transfer's error unless the window explains it.
func (r *vmRun) diskDone(i int, f workflow.Future) error {
	var dr contract.DiskResult
	err := f.Get(r.ctx, &dr)
	if err == nil {
		r.res.Disks[i] = dr
		r.res.Disks[i].Status = contract.StatusSuccess
		return nil
	}
	// A cancelled transfer, or one stopped by the window, reports its
	// figures so far in the error's details.
	var canceled *temporal.CanceledError
	if errors.As(err, &canceled) && canceled.HasDetails() && canceled.Details(&dr) == nil {
		r.res.Disks[i] = dr
	}
	if isErrType(err, contract.ErrTypeWindowClosed) {
		var app *temporal.ApplicationError
		if errors.As(err, &app) && app.HasDetails() && app.Details(&dr) == nil {
			r.res.Disks[i] = dr
		}
		// The transfer saw the window close before the timer here did.
		r.closeWindow()
	}
	d := &r.res.Disks[i]
	d.ID, d.Size = r.in.VM.Disks[i].ID, r.in.VM.Disks[i].VirtualSize
	var failed bool
	d.Status, d.Error, failed = diskOutcome(err, r.windowClosed)
	if failed {
		return err
	}
	return nil
}

// readPositions takes the agent's durable positions, which the next run
// continues from, as the positions of the disks not finished.
func (r *vmRun) readPositions() {
	var positions map[string]int64
	if err := workflow.ExecuteActivity(workflow.WithActivityOptions(r.cleanup, shortActivity(r.target)),
		contract.ActSessionPositions, contract.PositionsInput{Job: r.in.Job.Name, VMID: r.in.VM.ID}).Get(r.cleanup, &positions); err != nil {
		return
	}
	for i := range r.res.Disks {
		if p, ok := positions[r.res.Disks[i].ID]; ok && r.res.Disks[i].Status != contract.StatusSuccess {
			r.res.Disks[i].Position = p
		}
	}
}

// reportDisks sends each disk's result to the job run and makes what a
// transfer could not do as configured the VM's warning.
func (r *vmRun) reportDisks() {
	for _, d := range r.res.Disks {
		if r.fewerTrips {
			// Sent with the next command; the run also has the VM's result.
			sendProgress(r.cleanup, r.in, d)
		} else {
			signalProgress(r.cleanup, r.in, d)
		}
		if d.Warning != "" && !strings.Contains(r.res.Warning, d.Warning) {
			r.res.Warning = joinText(r.res.Warning, d.Warning)
		}
	}
}

// commit commits the restore point and applies retention.
func (r *vmRun) commit() error {
	r.step("committing the restore point")
	job := r.in.Job
	var point string
	if err := workflow.ExecuteActivity(workflow.WithActivityOptions(r.cleanup, longActivity(r.target)),
		contract.ActCommitRestorePoint, contract.CommitInput{Job: job.Name, VMID: r.in.VM.ID, Retention: job.Retention, CheckpointID: r.cp.ID}).Get(r.cleanup, &point); err != nil {
		return err
	}
	r.res.RestorePoint = point
	r.newest = r.cp.Taken
	if r.cp.Taken.IsZero() {
		// A proxy that does not say when it took the checkpoint: the data
		// of a new checkpoint is no older than the request for it.
		r.newest = r.asked
	}
	return nil
}

// keepReferencePoint turns the checkpoint into the next reference point
// (its changes are what the next run sends); the replica records which
// one, so that CBT is only used against the point it describes. A failure
// is a warning: the next run compares digests instead.
func (r *vmRun) keepReferencePoint() {
	job := r.in.Job
	var ref string
	err := workflow.ExecuteActivity(workflow.WithActivityOptions(r.cleanup, longActivity(r.source)),
		contract.ActConvertToReferencePoint, contract.ReferencePointInput{
			Host: job.Source, VMID: r.in.VM.ID, CheckpointID: r.cp.ID, Previous: r.state.ReferencePoint,
		}).Get(r.cleanup, &ref)
	if err != nil {
		r.res.Warning = joinText(r.res.Warning, "turning the checkpoint into a reference point failed; the next run compares digests: "+errorText(err))
		r.release("reference point failed")
		return
	}
	if err := workflow.ExecuteActivity(workflow.WithActivityOptions(r.cleanup, longActivity(r.target)),
		contract.ActRecordReferencePoint, contract.RecordReferenceInput{
			Job: job.Name, VMID: r.in.VM.ID, Point: r.res.RestorePoint, ReferencePoint: ref,
		}).Get(r.cleanup, nil); err != nil {
		r.res.Warning = joinText(r.res.Warning, "recording the reference point failed; the next run compares digests: "+errorText(err))
	}
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

// signalProgress signals a disk's progress to the run and waits for its
// delivery; runs recorded before fewer-round-trips issue it so.
func signalProgress(ctx workflow.Context, in contract.VMInput, d contract.DiskResult) {
	if in.ParentWorkflowID == "" {
		return
	}
	// Best effort: the parent also gets the final result from the child.
	_ = workflow.SignalExternalWorkflow(ctx, in.ParentWorkflowID, "", contract.ProgressSignal,
		contract.ProgressUpdate{VMID: in.VM.ID, Disk: d}).Get(ctx, nil)
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

// partialAll is res stopped by the backup window (or the job's hours)
// before it finished: the VM and every disk partial, reason saying why.
func partialAll(res contract.VMResult, reason string) contract.VMResult {
	res.Status = contract.StatusPartial
	res.Error = reason
	for i := range res.Disks {
		res.Disks[i].Status = contract.StatusPartial
	}
	return res
}

// isCancel says whether err is, or wraps, a cancellation.
func isCancel(err error) bool {
	var c *temporal.CanceledError
	return errors.As(err, &c)
}

// isNonRetryable says whether err is, or wraps, an application error that
// no retry fixes.
func isNonRetryable(err error) bool {
	var app *temporal.ApplicationError
	return errors.As(err, &app) && app.NonRetryable()
}

// joinText joins two warnings (either may be empty).
func joinText(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// setVMDetails shows the VM, its disks and its state in the Web UI.
func setVMDetails(ctx workflow.Context, res contract.VMResult, state string) {
	var done, size int64
	for _, d := range res.Disks {
		done += d.Position
		size += d.Size
	}
	text := fmt.Sprintf("**%s** — %s; %s of %s acknowledged\n\n", res.Name, state, bytesize.Text(done), bytesize.Text(size))
	for _, d := range res.Disks {
		text += fmt.Sprintf("- disk %s: %s %s/%s\n", d.ID, d.Status, bytesize.Text(d.Position), bytesize.Text(d.Size))
	}
	workflow.SetCurrentDetails(ctx, text)
}
