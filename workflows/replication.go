// Package workflows holds the Temporal workflows of replicator:
// ReplicationWorkflow runs one job once, VMReplicationWorkflow one VM of it.
// Workflows are deterministic and do no I/O: every effect is an activity on
// the task queue of the host that holds the data (source-<host> for the
// proxy, target-<target> for the agent).
package workflows

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/replicator/replicator/internal/contract"
)

// runState is the figures of a run so far; the progress query returns it.
type runState struct {
	result contract.ReplicationResult
	// notify lists the notification channels the run's end goes to.
	notify []string
}

func (s *runState) vm(id string) *contract.VMResult {
	for i := range s.result.VMs {
		if s.result.VMs[i].ID == id {
			return &s.result.VMs[i]
		}
	}
	return nil
}

func (s *runState) updateDisk(vmID string, d contract.DiskResult) {
	vm := s.vm(vmID)
	if vm == nil {
		return
	}
	for i := range vm.Disks {
		if vm.Disks[i].ID == d.ID {
			// A late progress signal never overwrites a final status.
			if isFinal(vm.Disks[i].Status) && !isFinal(d.Status) {
				return
			}
			vm.Disks[i] = d
			return
		}
	}
	vm.Disks = append(vm.Disks, d)
}

func isFinal(status string) bool {
	return status == contract.StatusSuccess || status == contract.StatusFailed || status == contract.StatusPartial
}

// ReplicationWorkflow runs a replication job once: it loads the job's settings,
// checks the source host and the target, queries the inventory, and replicates
// each VM in a child workflow, at most the job's parallelism at once, within
// the job's backup window.
func ReplicationWorkflow(ctx workflow.Context, in contract.ReplicationInput) (contract.ReplicationResult, error) {
	st := &runState{}
	res, err := replicate(ctx, in, st)
	notifyEnd(ctx, st, res, err)
	return res, err
}

// notifyEnd sends the run's summary to the configured channels (not when
// the run only continues as new). A notification that cannot be sent is
// logged: it never changes the run's outcome.
func notifyEnd(ctx workflow.Context, st *runState, res contract.ReplicationResult, runErr error) {
	var cont *workflow.ContinueAsNewError
	if len(st.notify) == 0 || errors.As(runErr, &cont) {
		return
	}
	if workflow.GetVersion(ctx, "notify", workflow.DefaultVersion, 1) != 1 {
		return
	}
	// A cancelled run notifies too.
	nctx, _ := workflow.NewDisconnectedContext(ctx)
	opts := shortActivity("")
	opts.ScheduleToCloseTimeout = 10 * time.Minute
	opts.RetryPolicy.MaximumAttempts = 5
	nctx = workflow.WithActivityOptions(nctx, opts)
	n := contract.Notification{WorkflowID: workflow.GetInfo(ctx).WorkflowExecution.ID, Result: res}
	if runErr != nil {
		n.Error = errorText(runErr)
	}
	var futures []workflow.Future
	for _, channel := range st.notify {
		futures = append(futures, workflow.ExecuteActivity(nctx, contract.ActNotify, channel, n))
	}
	for i, f := range futures {
		if err := f.Get(nctx, nil); err != nil {
			workflow.GetLogger(ctx).Error("the run's notification failed", "channel", st.notify[i], "error", err)
		}
	}
}

func replicate(ctx workflow.Context, in contract.ReplicationInput, st *runState) (contract.ReplicationResult, error) {
	info := workflow.GetInfo(ctx)
	*st = runState{result: contract.ReplicationResult{
		Job: in.Job, Status: contract.StatusRunning, RunID: info.WorkflowExecution.RunID, VMs: []contract.VMResult{},
	}}
	if err := workflow.SetQueryHandler(ctx, contract.ProgressQuery, func() (contract.ReplicationResult, error) {
		return st.result, nil
	}); err != nil {
		return st.result, err
	}
	progress := workflow.GetSignalChannel(ctx, contract.ProgressSignal)
	workflow.Go(ctx, func(ctx workflow.Context) {
		for {
			var u contract.ProgressUpdate
			if !progress.Receive(ctx, &u) {
				return
			}
			st.updateDisk(u.VMID, u.Disk)
		}
	})
	setDetails(ctx, st)

	if in.Job == "" {
		return st.fail(temporal.NewNonRetryableApplicationError(`input needs a job name: {"job": "NAME"}`, contract.ErrTypeBadInput, nil))
	}

	var spec contract.JobSpec
	var deadline time.Time
	var vms []contract.VM
	if c := in.Continued; c != nil {
		// The rest of a run that continued as new: the job's settings, the
		// inventory and the window are those of the run's start.
		spec, deadline, vms = c.Spec, c.Deadline, c.Pending
		st.result = c.Result
		st.notify = spec.Notify
		// Any client can send a continuation: one whose result does not list
		// a pending VM would leave that VM's outcome nowhere to go.
		for _, vm := range vms {
			if st.vm(vm.ID) == nil {
				return st.fail(temporal.NewNonRetryableApplicationError(
					fmt.Sprintf("input continued.pending: VM %q (id %q) is not in continued.result", vm.Name, vm.ID), contract.ErrTypeBadInput, nil))
			}
		}
		// Any client can also carry settings no configuration holds: the
		// carried spec must be the configured job's.
		if workflow.GetVersion(ctx, "continued-spec-is-configured", workflow.DefaultVersion, 1) == 1 {
			if err := checkContinuedSpec(ctx, in.Job, spec); err != nil {
				return st.fail(err)
			}
		}
	} else {
		var err error
		if spec, deadline, vms, err = startRun(ctx, in, st); err != nil {
			return st.fail(err)
		}
	}

	// The operator's names in the Web UI and the CLI: search attributes (when
	// the namespace has them) and a summary of each VM's workflow.
	operatorNames := workflow.GetVersion(ctx, "operator-names", workflow.DefaultVersion, 1) == 1
	if operatorNames && spec.SearchAttributes {
		names := make([]string, 0, len(st.result.VMs))
		for _, vm := range st.result.VMs {
			names = append(names, vm.Name)
		}
		if err := workflow.UpsertTypedSearchAttributes(ctx, jobAttribute.ValueSet(spec.Name), vmAttribute.ValueSet(names)); err != nil {
			workflow.GetLogger(ctx).Warn("setting the run's search attributes failed", "error", err)
		}
	}

	// 4. One child per VM, at most parallelism at once, none started after the window closed.
	parallelism := spec.Parallelism
	if parallelism < 1 {
		parallelism = 1
	}
	running := 0
	next := 0
	sel := workflow.NewSelector(ctx)
	// One run at a time replicates a VM: its workflow id is the VM's, not the
	// run's, so Temporal refuses a second one while the first runs.
	oneRunPerVM := workflow.GetVersion(ctx, "one-run-per-vm", workflow.DefaultVersion, 1) == 1
	held := map[string]*heldVM{}
	// A VM that failed for a reason that may pass is tried again, the job's
	// retryWait later, up to its retries, while the window allows.
	vmRetries := workflow.GetVersion(ctx, "vm-retries", workflow.DefaultVersion, 1) == 1
	attempts := map[string]int{}
	for _, vm := range st.result.VMs {
		// A continued run goes on counting the attempts of the run it continues.
		attempts[vm.ID] = vm.Attempts
	}
	windowClosed := false
	if !deadline.IsZero() {
		timer := workflow.NewTimer(ctx, deadline.Sub(workflow.Now(ctx)))
		sel.AddFuture(timer, func(workflow.Future) { windowClosed = true })
	}
	cancelled := false
	sel.AddReceive(cancelSignal(ctx), func(c workflow.ReceiveChannel, _ bool) {
		c.Receive(ctx, nil)
		cancelled = true
	})
	draining := false
	for {
		if !draining && next < len(vms) && historyIsLong(ctx) {
			// Start no more VMs; when the running ones finish, the rest
			// continues in a new run with a new history.
			draining = workflow.GetVersion(ctx, "continue-as-new-when-long", workflow.DefaultVersion, 1) == 1
		}
		for running < parallelism && next < len(vms) && !windowClosed && !cancelled && !draining {
			vm := vms[next]
			next++
			running++
			st.vm(vm.ID).Status = contract.StatusRunning
			attempts[vm.ID]++
			copts := workflow.ChildWorkflowOptions{
				WorkflowID: fmt.Sprintf("%s/%s", info.WorkflowExecution.ID, vm.ID),
				// Cancelling the run cancels its VMs, which release what they hold.
				ParentClosePolicy:   enums.PARENT_CLOSE_POLICY_REQUEST_CANCEL,
				WaitForCancellation: true,
			}
			if oneRunPerVM {
				copts.WorkflowID = contract.VMWorkflowID(spec.Source, vm.ID)
				copts.WorkflowIDReusePolicy = enums.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE
				copts.Memo = map[string]interface{}{contract.MemoJob: spec.Name}
			}
			if operatorNames {
				copts.StaticSummary, copts.StaticDetails = vmSummary(spec, vm, info.WorkflowExecution.ID)
				if spec.SearchAttributes {
					copts.TypedSearchAttributes = temporal.NewSearchAttributes(jobAttribute.ValueSet(spec.Name), vmAttribute.ValueSet([]string{vm.Name}))
				}
			}
			cctx := workflow.WithChildOptions(ctx, copts)
			child := workflow.ExecuteChildWorkflow(cctx, contract.VMReplicationWorkflow, contract.VMInput{
				Job: spec, VM: vm, ParentWorkflowID: info.WorkflowExecution.ID, Deadline: deadline,
			})
			sel.AddFuture(child, func(f workflow.Future) {
				running--
				var r contract.VMResult
				err := f.Get(ctx, &r)
				if oneRunPerVM && temporal.IsWorkflowExecutionAlreadyStartedError(err) {
					// Another run holds the VM: it is left undisturbed.
					running++
					h := held[vm.ID]
					if h == nil {
						h = &heldVM{}
						held[vm.ID] = h
					}
					sel.AddFuture(h.find(ctx, spec, vm, copts.WorkflowID, deadline, st), func(workflow.Future) {
						running--
						switch {
						case spec.Overlap == contract.OverlapWait && !windowClosed && !cancelled:
							vms = append(vms, vm) // tried again
						default:
							reason := "skipped (overlap: skip): " + h.holder
							if windowClosed {
								reason = "backup window closed while waiting for " + h.holder
							} else if cancelled {
								reason = "run cancelled while waiting for " + h.holder
							}
							*st.vm(vm.ID) = partialAll(*st.vm(vm.ID), reason)
						}
					})
					return
				}
				if err != nil {
					r = contract.VMResult{Name: vm.Name, ID: vm.ID, Status: contract.StatusFailed, Error: errorText(err)}
					if prev := st.vm(vm.ID); prev != nil {
						r.Disks = prev.Disks
						for i := range r.Disks {
							if !isFinal(r.Disks[i].Status) {
								r.Disks[i].Status = contract.StatusFailed
							}
						}
					}
				}
				if vmRetries {
					r.Attempts = attempts[vm.ID]
					wait := max(spec.RetryWait, time.Second)
					if r.Status == contract.StatusFailed && r.Retryable && !cancelled && !windowClosed &&
						attempts[vm.ID] <= spec.Retries && (deadline.IsZero() || workflow.Now(ctx).Add(wait).Before(deadline)) {
						last := r
						shown := r
						shown.Status = contract.StatusPending
						shown.Error = fmt.Sprintf("attempt %d failed: %s; tried again at %s", r.Attempts, r.Error,
							workflow.Now(ctx).Add(wait).UTC().Format(time.RFC3339))
						*st.vm(vm.ID) = shown
						running++
						sel.AddFuture(workflow.NewTimer(ctx, wait), func(workflow.Future) {
							running--
							switch {
							case cancelled:
								last.Error += "; not tried again: run cancelled"
							case windowClosed:
								last.Error += "; not tried again: backup window closed"
							default:
								vms = append(vms, vm)
								return
							}
							*st.vm(vm.ID) = last
						})
						return
					}
				}
				*st.vm(vm.ID) = r
			})
		}
		if (windowClosed || cancelled) && next < len(vms) {
			// The window closed (or the run was cancelled) before these VMs
			// started: they wait for the next run.
			reason := "backup window closed before this VM started"
			if cancelled {
				reason = "run cancelled before this VM started"
			}
			for ; next < len(vms); next++ {
				vm := st.vm(vms[next].ID)
				vm.Status = contract.StatusPartial
				vm.Error = reason
				if h := held[vms[next].ID]; h != nil {
					vm.Error = reason + "; it was waiting for " + h.holder
				}
				for i := range vm.Disks {
					vm.Disks[i].Status = contract.StatusPartial
				}
			}
		}
		if draining && running == 0 && next < len(vms) {
			return st.result, workflow.NewContinueAsNewError(ctx, contract.ReplicationWorkflow, contract.ReplicationInput{
				Job: in.Job, VMs: in.VMs,
				Continued: &contract.RunContinuation{Spec: spec, Deadline: deadline, Pending: vms[next:], Result: st.result},
			})
		}
		if running == 0 && next >= len(vms) {
			break
		}
		sel.Select(ctx)
		setDetails(ctx, st)
	}
	st.result.Status = overall(st.result.VMs)
	st.result.RPOExceeded = 0
	for _, vm := range st.result.VMs {
		if vm.RPOExceeded {
			st.result.RPOExceeded++
		}
	}
	setDetails(ctx, st)
	if ctx.Err() != nil {
		return st.result, ctx.Err()
	}
	return st.result, nil
}

// checkContinuedSpec loads the job's settings and refuses a continuation
// whose carried spec differs, naming the settings that differ.
func checkContinuedSpec(ctx workflow.Context, job string, carried contract.JobSpec) error {
	var configured contract.JobSpec
	if err := workflow.ExecuteActivity(workflow.WithActivityOptions(ctx, shortActivity("")),
		contract.ActLoadJob, job).Get(ctx, &configured); err != nil {
		return fmt.Errorf("loading job %q: %w", job, err)
	}
	var diffs []string
	add := func(name string, same bool) {
		if !same {
			diffs = append(diffs, name)
		}
	}
	add("name", carried.Name == configured.Name)
	add("source", carried.Source == configured.Source)
	add("target", carried.Target == configured.Target)
	add("targetAddress", carried.TargetAddress == configured.TargetAddress)
	add("targetStallTimeout", carried.TargetStallTimeout == configured.TargetStallTimeout)
	add("vms", slices.Equal(carried.VMs, configured.VMs))
	add("window", carried.Window == configured.Window)
	add("compression", carried.Compression == configured.Compression)
	add("blockSize", carried.BlockSize == configured.BlockSize)
	add("changeTracking", carried.ChangeTracking == configured.ChangeTracking)
	add("excludeZero", carried.ExcludeZero == configured.ExcludeZero)
	add("excludeSwap", carried.ExcludeSwap == configured.ExcludeSwap)
	add("excludePaths", slices.Equal(carried.ExcludePaths, configured.ExcludePaths))
	add("retention", carried.Retention == configured.Retention)
	add("parallelism", carried.Parallelism == configured.Parallelism)
	add("guestProcessing", carried.GuestProcessing == configured.GuestProcessing)
	add("overlap", carried.Overlap == configured.Overlap)
	add("windowHours", carried.WindowHours == configured.WindowHours)
	add("timezone", carried.Timezone == configured.Timezone)
	add("retries", carried.Retries == configured.Retries)
	add("retryWait", carried.RetryWait == configured.RetryWait)
	if len(diffs) == 0 {
		return nil
	}
	return temporal.NewNonRetryableApplicationError(fmt.Sprintf(
		"input continued.spec differs from the configuration of job %q in %v: a continued run takes no settings from its input; start a new run",
		job, diffs), contract.ErrTypeBadInput, nil)
}

var (
	jobAttribute = temporal.NewSearchAttributeKeyKeyword(contract.SearchAttributeJob)
	vmAttribute  = temporal.NewSearchAttributeKeyKeywordList(contract.SearchAttributeVM)
)

// vmSummary is the fixed summary and details of a VM's workflow in the Web UI.
func vmSummary(spec contract.JobSpec, vm contract.VM, run string) (summary, details string) {
	summary = fmt.Sprintf("%s · job %s · run %s", vm.Name, spec.Name, run)
	var size int64
	for _, d := range vm.Disks {
		size += d.VirtualSize
	}
	details = fmt.Sprintf("**VM** %s (id %s) on host %s\n\n**Job** %s, to target %s, run %s\n\n**Disks** %d, %s in all\n",
		vm.Name, vm.ID, spec.Source, spec.Name, spec.Target, run, len(vm.Disks), humanBytes(size))
	for _, d := range vm.Disks {
		details += fmt.Sprintf("- disk %s: %s\n", d.ID, humanBytes(d.VirtualSize))
	}
	return summary, details
}

// heldVM is a VM that another run was replicating when this run tried to start it.
type heldVM struct {
	holder string // which run holds it, for the VM's result
	tries  int
}

// find names the run that holds the VM and, with overlap: wait, waits before
// the VM is tried again (15 s, doubling up to 2 min, never past the window).
// The future is ready when the VM may be tried again or reported.
func (h *heldVM) find(ctx workflow.Context, spec contract.JobSpec, vm contract.VM, workflowID string, deadline time.Time, st *runState) workflow.Future {
	f, set := workflow.NewFuture(ctx)
	h.tries++
	workflow.Go(ctx, func(ctx workflow.Context) {
		var run contract.VMRun
		err := workflow.ExecuteActivity(workflow.WithActivityOptions(ctx, shortActivity("")),
			contract.ActDescribeVMRun, workflowID).Get(ctx, &run)
		h.holder = holderText(vm, workflowID, run, err)
		if spec.Overlap == contract.OverlapWait {
			if r := st.vm(vm.ID); r != nil {
				r.Status = contract.StatusPending
				r.Error = "waiting for " + h.holder
			}
			wait := 15 * time.Second << min(h.tries-1, 3)
			if !deadline.IsZero() {
				wait = min(wait, deadline.Sub(workflow.Now(ctx))+time.Second)
			}
			if wait > 0 {
				_ = workflow.Sleep(ctx, wait)
			}
		}
		set.Set(nil, nil)
	})
	return f
}

// holderText names the run that replicates a VM now.
func holderText(vm contract.VM, workflowID string, run contract.VMRun, err error) string {
	if err != nil || run.WorkflowID == "" {
		return fmt.Sprintf("VM %s is being replicated by another run (workflow %s)", vm.Name, workflowID)
	}
	by := "workflow " + run.WorkflowID
	if run.ParentWorkflowID != "" {
		by = "run " + run.ParentWorkflowID
		if run.Job != "" {
			by += " of job " + run.Job
		}
		by += " (workflow " + run.WorkflowID + ")"
	}
	if !run.Started.IsZero() {
		by += ", started " + run.Started.UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("VM %s is being replicated by %s", vm.Name, by)
}

// startRun loads the job's settings, checks the source host and the target,
// and lists the VMs to replicate (interrupted ones first), adding them to the
// run's result as pending.
func startRun(ctx workflow.Context, in contract.ReplicationInput, st *runState) (contract.JobSpec, time.Time, []contract.VM, error) {
	logger := workflow.GetLogger(ctx)
	// 1. Job settings, read at run time so that an edited job applies now.
	var spec contract.JobSpec
	if err := workflow.ExecuteActivity(workflow.WithActivityOptions(ctx, shortActivity("")),
		contract.ActLoadJob, in.Job).Get(ctx, &spec); err != nil {
		return spec, time.Time{}, nil, fmt.Errorf("loading job %q: %w", in.Job, err)
	}
	st.notify = spec.Notify
	var deadline time.Time
	if spec.Window > 0 {
		deadline = workflow.Now(ctx).Add(spec.Window)
	}
	// The job's permitted hours: the earlier end wins; outside them nothing starts.
	windowHours := workflow.GetVersion(ctx, "window-hours", workflow.DefaultVersion, 1) == 1
	if windowHours && !spec.WindowEnd.IsZero() && (deadline.IsZero() || spec.WindowEnd.Before(deadline)) {
		deadline = spec.WindowEnd
	}
	srcCtx := workflow.WithActivityOptions(ctx, shortActivity(contract.SourceQueue(spec.Source)))
	tgtCtx := workflow.WithActivityOptions(ctx, shortActivity(contract.TargetQueue(spec.Target)))

	// 2. The infrastructure the job needs answers: the source host, the
	// target agent, the data channel between them (with the proxy's
	// certificate), and after the inventory the room on the datastore. All of
	// it before any checkpoint, each failure naming the setting at fault.
	realChecks := workflow.GetVersion(ctx, "infrastructure-checks", workflow.DefaultVersion, 1) == 1
	checkSrcCtx, checkTgtCtx := srcCtx, tgtCtx
	if realChecks {
		checkSrcCtx = workflow.WithActivityOptions(ctx, checkActivity(contract.SourceQueue(spec.Source)))
		checkTgtCtx = workflow.WithActivityOptions(ctx, checkActivity(contract.TargetQueue(spec.Target)))
	}
	check := func(name string, err error, detail string) {
		if realChecks {
			st.result.Checks = append(st.result.Checks, contract.Check{Name: name, OK: err == nil, Detail: detail})
		}
	}
	checkSrc := workflow.ExecuteActivity(checkSrcCtx, contract.ActCheckSource, spec.Source)
	checkTgt := workflow.ExecuteActivity(checkTgtCtx, contract.ActCheckTarget, spec.Name)
	if err := checkSrc.Get(ctx, nil); err != nil {
		err = notAnswering(err, "source host "+spec.Source, "no proxy serves hosts["+spec.Source+"] (task queue "+contract.SourceQueue(spec.Source)+"): is a worker with the proxy role running?")
		check("source host "+spec.Source+" answers", err, errorText(err))
		return spec, time.Time{}, nil, fmt.Errorf("source host %s: %w", spec.Source, err)
	}
	check("source host "+spec.Source+" answers", nil, "")
	var target contract.TargetStatus
	if err := checkTgt.Get(ctx, &target); err != nil {
		err = notAnswering(err, "target "+spec.Target, "the agent of target "+spec.Target+" is down: nothing serves task queue "+contract.TargetQueue(spec.Target)+" (is a worker with the target role and agent.name "+spec.Target+" running?)")
		check("agent of target "+spec.Target+" answers", err, errorText(err))
		return spec, time.Time{}, nil, fmt.Errorf("target %s: %w", spec.Target, err)
	}
	if realChecks {
		check("agent of target "+spec.Target+" answers", nil, "datastore "+target.Datastore)
		var version int
		err := workflow.ExecuteActivity(checkSrcCtx, contract.ActProbeDataChannel, contract.ProbeInput{
			Target: spec.Target, Address: spec.TargetAddress, AgentListen: target.Listen,
		}).Get(ctx, &version)
		name := "proxy opens the data channel of " + spec.Target + " at " + spec.TargetAddress
		check(name, err, detailOf(err))
		if err != nil {
			return spec, time.Time{}, nil, fmt.Errorf("target %s: %w", spec.Target, err)
		}
	}

	// 3. The inventory, narrowed by the input.
	patterns := spec.VMs
	if len(in.VMs) > 0 {
		patterns = in.VMs
	}
	var vms []contract.VM
	if err := workflow.ExecuteActivity(srcCtx, contract.ActInventory,
		contract.InventoryInput{Host: spec.Source, Patterns: patterns}).Get(ctx, &vms); err != nil {
		return spec, time.Time{}, nil, fmt.Errorf("inventory of %s: %w", spec.Source, err)
	}
	for _, want := range in.VMs {
		if !anyMatches(vms, want) {
			st.result.VMs = append(st.result.VMs, contract.VMResult{
				Name: want, Status: contract.StatusFailed, Disks: []contract.DiskResult{},
				Error: fmt.Sprintf("VM %q not found on host %s", want, spec.Source),
			})
		}
	}
	if realChecks {
		// A VM the job names that the host does not have fails by itself.
		var missing []string
		if len(in.VMs) == 0 {
			for _, want := range spec.VMs {
				if !strings.ContainsAny(want, "*?[") && !anyMatches(vms, want) {
					missing = append(missing, want)
					st.result.VMs = append(st.result.VMs, contract.VMResult{
						Name: want, Status: contract.StatusFailed, Disks: []contract.DiskResult{},
						Error: fmt.Sprintf("VM %q of jobs[%s].vms not found on host %s", want, spec.Name, spec.Source),
					})
				}
			}
		}
		var err error
		if len(missing) > 0 {
			err = fmt.Errorf("not found: %s", strings.Join(missing, ", "))
		}
		check(fmt.Sprintf("the job's VMs exist on %s (%d found)", spec.Source, len(vms)), err, detailOf(err))
		if workflow.GetVersion(ctx, "unsupported-vms-checked", workflow.DefaultVersion, 1) == 1 {
			vms = refuseUnsupported(spec, vms, st, check)
		}
		if len(vms) > 0 {
			var space contract.SpaceStatus
			err := workflow.ExecuteActivity(checkTgtCtx, contract.ActCheckSpace, contract.SpaceInput{Job: spec.Name, VMs: vms}).Get(ctx, &space)
			detail := space.Detail
			if err != nil {
				detail = errorText(err)
			}
			check("datastore of "+spec.Target+" has room for this run", err, detail)
			if err != nil {
				return spec, time.Time{}, nil, fmt.Errorf("target %s: %w", spec.Target, err)
			}
		}
	}

	// Interrupted restore points continue before anything new starts.
	var open []string
	if err := workflow.ExecuteActivity(tgtCtx, contract.ActOpenSessions, spec.Name).Get(ctx, &open); err != nil {
		logger.Warn("listing interrupted restore points failed; continuing in inventory order", "error", err)
	}
	vms = resumeFirst(vms, open)
	for _, vm := range vms {
		r := contract.VMResult{Name: vm.Name, ID: vm.ID, Status: contract.StatusPending, Disks: []contract.DiskResult{}}
		for _, d := range vm.Disks {
			r.Disks = append(r.Disks, contract.DiskResult{ID: d.ID, Status: contract.StatusPending, Size: d.VirtualSize})
		}
		st.result.VMs = append(st.result.VMs, r)
	}
	if windowHours && !spec.WindowOpens.IsZero() {
		tz := spec.Timezone
		if tz == "" {
			tz = "UTC"
		}
		reason := fmt.Sprintf("outside the backup window (windowHours %q, %s): nothing was done; the window opens at %s",
			spec.WindowHours, tz, spec.WindowOpens.Format(time.RFC3339))
		logger.Info("the run started outside its backup window", "opens", spec.WindowOpens)
		for i := range st.result.VMs {
			if st.result.VMs[i].Status == contract.StatusPending {
				st.result.VMs[i] = partialAll(st.result.VMs[i], reason)
			}
		}
		return spec, deadline, nil, nil
	}

	return spec, deadline, vms, nil
}

// refuseUnsupported fails, each by itself, the VMs the host says it cannot
// replicate (a pass-through, VHD or VHD Set disk, a configuration version
// without resilient change tracking), records the check and returns the
// others. A refused VM gets no workflow: no checkpoint is made of it and
// nothing of it reaches the replica, while the job's other VMs run.
// CreateCheckpoint refusing such a VM stays as the second line of defence
// (a disk attached between the inventory and the checkpoint).
func refuseUnsupported(spec contract.JobSpec, vms []contract.VM, st *runState, check func(name string, err error, detail string)) []contract.VM {
	var keep []contract.VM
	var refused []string
	for _, vm := range vms {
		if vm.Unsupported == "" {
			keep = append(keep, vm)
			continue
		}
		refused = append(refused, "VM "+vm.Name+": "+vm.Unsupported)
		r := contract.VMResult{Name: vm.Name, ID: vm.ID, Status: contract.StatusFailed, Disks: []contract.DiskResult{},
			Error: fmt.Sprintf("VM %s cannot be replicated from host %s: %s", vm.Name, spec.Source, vm.Unsupported)}
		for _, d := range vm.Disks {
			r.Disks = append(r.Disks, contract.DiskResult{ID: d.ID, Status: contract.StatusFailed, Size: d.VirtualSize})
		}
		st.result.VMs = append(st.result.VMs, r)
	}
	var err error
	if len(refused) > 0 {
		err = errors.New(strings.Join(refused, "; "))
	}
	check("the job's VMs can be replicated from "+spec.Source, err, detailOf(err))
	return keep
}

// continueAsNewAfter is the history length at which a run starts no more VMs
// and, once the running ones finish, continues as new with the rest: each VM
// adds about 15 events to the run's history (its child, progress signals,
// workflow tasks), so without it the history would grow with the job.
const continueAsNewAfter = 1000

// historyIsLong says whether the run's history has reached continueAsNewAfter
// events or the server suggests continuing as new.
func historyIsLong(ctx workflow.Context) bool {
	info := workflow.GetInfo(ctx)
	return info.GetCurrentHistoryLength() >= continueAsNewAfter || info.GetContinueAsNewSuggested()
}

func (s *runState) fail(err error) (contract.ReplicationResult, error) {
	s.result.Status = contract.StatusFailed
	return s.result, err
}

// overall is success when every VM succeeded, failed when none did (or there
// were none to do), and partial otherwise.
func overall(vms []contract.VMResult) string {
	if len(vms) == 0 {
		return contract.StatusFailed
	}
	ok, failed := 0, 0
	for _, vm := range vms {
		switch vm.Status {
		case contract.StatusSuccess:
			ok++
		case contract.StatusFailed:
			failed++
		}
	}
	switch {
	case ok == len(vms):
		return contract.StatusSuccess
	case failed == len(vms):
		return contract.StatusFailed
	default:
		return contract.StatusPartial
	}
}

func anyMatches(vms []contract.VM, want string) bool {
	for _, vm := range vms {
		if vm.Name == want || vm.ID == want {
			return true
		}
	}
	return false
}

// resumeFirst orders VMs with an interrupted restore point first, keeping the
// inventory order otherwise.
func resumeFirst(vms []contract.VM, open []string) []contract.VM {
	isOpen := map[string]bool{}
	for _, id := range open {
		isOpen[id] = true
	}
	out := append([]contract.VM(nil), vms...)
	sort.SliceStable(out, func(i, j int) bool { return isOpen[out[i].ID] && !isOpen[out[j].ID] })
	return out
}

// setDetails shows a one-line summary per VM in the Web UI.
func setDetails(ctx workflow.Context, s *runState) {
	done, total := 0, len(s.result.VMs)
	var written, size int64
	for _, vm := range s.result.VMs {
		if isFinal(vm.Status) {
			done++
		}
		for _, d := range vm.Disks {
			written += d.Position
			size += d.Size
		}
	}
	text := fmt.Sprintf("**%s** — %d of %d VMs finished, %s of %s acknowledged\n\n", s.result.Job, done, total, humanBytes(written), humanBytes(size))
	for _, vm := range s.result.VMs {
		text += fmt.Sprintf("- %s: %s", vm.Name, vm.Status)
		for _, d := range vm.Disks {
			text += fmt.Sprintf(" · disk %s %s %s/%s", d.ID, d.Status, humanBytes(d.Position), humanBytes(d.Size))
		}
		text += "\n"
	}
	workflow.SetCurrentDetails(ctx, text)
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// errorText is the error as the activity or workflow that failed returned
// it: the outermost application error below the last activity or child
// workflow error. The application errors below it are only the causes it
// wraps, whose text it already holds; the deepest is often a bare sentinel
// ("not a safe name for a folder of the datastore") without the name.
func errorText(err error) string {
	var app *temporal.ApplicationError
	for e := err; e != nil; {
		switch a := e.(type) {
		case *temporal.ApplicationError:
			if app == nil {
				app = a
			}
		case *temporal.ActivityError, *temporal.ChildWorkflowExecutionError:
			app = nil
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			break
		}
		e = u.Unwrap()
	}
	if app != nil {
		return app.Message()
	}
	return err.Error()
}

// shortActivity is the options of quick control activities: a few minutes,
// retried with backoff. A host that is down fails the run after about five
// minutes rather than hanging it.
func shortActivity(queue string) workflow.ActivityOptions {
	return workflow.ActivityOptions{
		TaskQueue:              queue,
		ScheduleToCloseTimeout: 5 * time.Minute,
		StartToCloseTimeout:    time.Minute,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:    time.Second,
			BackoffCoefficient: 2,
			MaximumInterval:    30 * time.Second,
			NonRetryableErrorTypes: []string{
				contract.ErrTypeBadConfig, contract.ErrTypeVMNotFound, contract.ErrTypeBadInput,
				contract.ErrTypeAuthentication,
			},
		},
	}
}

// checkActivity is the options of the checks at a run's start: a host or
// agent that does not take the task within 20 s is down (a schedule-to-start
// timeout is not retried); two more attempts ride out a blip.
func checkActivity(queue string) workflow.ActivityOptions {
	o := shortActivity(queue)
	o.ScheduleToStartTimeout = 20 * time.Second
	o.ScheduleToCloseTimeout = time.Minute
	o.StartToCloseTimeout = 30 * time.Second
	o.RetryPolicy.MaximumAttempts = 3
	return o
}

// notAnswering replaces a schedule-to-start timeout (nothing polls the task
// queue) by what it means.
func notAnswering(err error, what, meaning string) error {
	var te *temporal.TimeoutError
	if errors.As(err, &te) && te.TimeoutType() == enums.TIMEOUT_TYPE_SCHEDULE_TO_START {
		return temporal.NewNonRetryableApplicationError(meaning, contract.ErrTypeBadConfig, err)
	}
	return err
}

// detailOf is the text of a check's error ("" when it passed).
func detailOf(err error) string {
	if err == nil {
		return ""
	}
	return errorText(err)
}

// cancelSignal returns a channel that receives one value when ctx is cancelled,
// so that a selector wakes once on cancellation (a closed Done channel would be
// ready on every Select).
func cancelSignal(ctx workflow.Context) workflow.ReceiveChannel {
	ch := workflow.NewBufferedChannel(ctx, 1)
	workflow.Go(ctx, func(ctx workflow.Context) {
		ctx.Done().Receive(ctx, nil)
		ch.Send(ctx, true)
	})
	return ch
}
