package workflows

import (
	"fmt"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/replicator/replicator/internal/contract"
)

// jobRun is a run replicating its VMs, one child workflow per VM: at most
// the job's parallelism at once, none started after the backup window closed
// or the run was cancelled, and the rest handed to a new run once the history
// grows long. Each step is a method; every event (a VM's workflow ending, a
// retry or overlap wait ending, the window closing, a cancellation) reaches
// the loop through one selector, in the order Temporal recorded it, so that
// a run replays the commands it issued.
type jobRun struct {
	ctx        workflow.Context
	in         contract.ReplicationInput
	spec       contract.JobSpec
	deadline   time.Time
	st         *runState
	workflowID string

	// queue is the VMs to start, in order; pages, when set, reads the rest
	// of a paged inventory once the queue is empty.
	queue []contract.VM
	pages *inventoryPages

	// running counts what the run waits for: VMs' workflows, retry waits,
	// overlap waits.
	running  int
	held     map[string]*heldVM
	attempts map[string]int

	windowClosed, cancelled, draining bool
	events                            workflow.Selector

	// Versions of the commands the run issues (GetVersion).
	operatorNames, oneRunPerVM, vmRetries bool
}

func newJobRun(ctx workflow.Context, in contract.ReplicationInput, st *runState, spec contract.JobSpec,
	deadline time.Time, vms []contract.VM, pages *inventoryPages) *jobRun {
	j := &jobRun{ctx: ctx, in: in, spec: spec, deadline: deadline, st: st, queue: vms, pages: pages,
		workflowID: workflow.GetInfo(ctx).WorkflowExecution.ID, held: map[string]*heldVM{}, attempts: map[string]int{},
		events: workflow.NewSelector(ctx)}
	// The operator's names in the Web UI and the CLI: search attributes (when
	// the namespace has them) and a summary of each VM's workflow.
	j.operatorNames = workflow.GetVersion(ctx, "operator-names", workflow.DefaultVersion, 1) == 1
	if j.operatorNames && spec.SearchAttributes {
		names := make([]string, 0, len(st.result.VMs))
		for _, vm := range st.result.VMs {
			names = append(names, vm.Name)
		}
		if err := workflow.UpsertTypedSearchAttributes(ctx, jobAttribute.ValueSet(spec.Name), vmAttribute.ValueSet(names)); err != nil {
			workflow.GetLogger(ctx).Warn("setting the run's search attributes failed", "error", err)
		}
	}
	// One run at a time replicates a VM: its workflow id is the VM's, not the
	// run's, so Temporal refuses a second one while the first runs.
	j.oneRunPerVM = workflow.GetVersion(ctx, "one-run-per-vm", workflow.DefaultVersion, 1) == 1
	// A VM that failed for a reason that may pass is tried again, the job's
	// retryWait later, up to its retries, while the window allows.
	j.vmRetries = workflow.GetVersion(ctx, "vm-retries", workflow.DefaultVersion, 1) == 1
	for _, vm := range st.result.VMs {
		// A continued run goes on counting the attempts of the run it continues.
		j.attempts[vm.ID] = vm.Attempts
	}
	return j
}

// run starts VMs as room allows and handles what happens until every VM has
// an outcome, or the run continues as new.
func (j *jobRun) run() (contract.ReplicationResult, error) {
	j.watchWindowAndCancel()
	for {
		j.drainWhenLong()
		j.startVMs()
		if j.windowClosed || j.cancelled {
			j.leaveForNextRun()
		}
		if j.draining && j.running == 0 && j.hasWork() {
			return j.st.result, j.continueAsNew()
		}
		if j.running == 0 && !j.hasWork() {
			break
		}
		j.events.Select(j.ctx)
		setDetails(j.ctx, j.st)
	}
	j.st.result.Status = j.st.overall()
	j.st.result.RPOExceeded = j.st.rpoExceeded()
	setDetails(j.ctx, j.st)
	if j.ctx.Err() != nil {
		return j.st.result, j.ctx.Err()
	}
	return j.st.result, nil
}

// hasWork says VMs are left to start: in the queue or in pages not read yet.
func (j *jobRun) hasWork() bool {
	return len(j.queue) > 0 || (j.pages != nil && j.pages.more)
}

// watchWindowAndCancel makes the window's end and a cancellation events of the loop.
func (j *jobRun) watchWindowAndCancel() {
	if !j.deadline.IsZero() {
		timer := workflow.NewTimer(j.ctx, j.deadline.Sub(workflow.Now(j.ctx)))
		j.events.AddFuture(timer, func(workflow.Future) { j.windowClosed = true })
	}
	j.events.AddReceive(cancelSignal(j.ctx), func(c workflow.ReceiveChannel, _ bool) {
		c.Receive(j.ctx, nil)
		j.cancelled = true
	})
}

// drainWhenLong stops starting VMs once the history is long: when the
// running ones finish, the rest continues in a new run with a new history.
func (j *jobRun) drainWhenLong() {
	if !j.draining && j.hasWork() && historyIsLong(j.ctx) {
		j.draining = workflow.GetVersion(j.ctx, "continue-as-new-when-long", workflow.DefaultVersion, 1) == 1
	}
}

// startVMs starts VMs from the queue (reading the next inventory page when
// it is empty) while the parallelism, the window and the history allow. A
// page the host does not give (after the activity's retries) leaves the VMs
// not read partial, for the next run, while the running ones finish.
func (j *jobRun) startVMs() {
	parallelism := max(j.spec.Parallelism, 1)
	for j.running < parallelism && !j.windowClosed && !j.cancelled && !j.draining {
		if len(j.queue) == 0 && j.pages != nil && j.pages.more {
			vms, err := j.pages.next(j.ctx, j.spec, j.st)
			if err != nil {
				workflow.GetLogger(j.ctx).Error("reading the inventory failed: the VMs not read yet are left for the next run", "error", err)
				j.pages.more = false
				j.st.leaveUnread()
				return
			}
			j.queue = vms
			continue
		}
		if len(j.queue) == 0 {
			return
		}
		vm := j.queue[0]
		j.queue = j.queue[1:]
		j.startVM(vm)
	}
}

// vmChildOptions are the options of a VM's workflow.
func (j *jobRun) vmChildOptions(vm contract.VM) workflow.ChildWorkflowOptions {
	copts := workflow.ChildWorkflowOptions{
		WorkflowID: fmt.Sprintf("%s/%s", j.workflowID, vm.ID),
		// Cancelling the run cancels its VMs, which release what they hold.
		ParentClosePolicy:   enums.PARENT_CLOSE_POLICY_REQUEST_CANCEL,
		WaitForCancellation: true,
	}
	if j.oneRunPerVM {
		copts.WorkflowID = contract.VMWorkflowID(j.spec.Source, vm.ID)
		copts.WorkflowIDReusePolicy = enums.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE
		copts.Memo = map[string]interface{}{contract.MemoJob: j.spec.Name}
	}
	if j.operatorNames {
		copts.StaticSummary, copts.StaticDetails = vmSummary(j.spec, vm, j.workflowID)
		if j.spec.SearchAttributes {
			copts.TypedSearchAttributes = temporal.NewSearchAttributes(jobAttribute.ValueSet(j.spec.Name), vmAttribute.ValueSet([]string{vm.Name}))
		}
	}
	return copts
}

// startVM starts the workflow of one VM.
func (j *jobRun) startVM(vm contract.VM) {
	j.running++
	j.st.vm(vm.ID).Status = contract.StatusRunning
	j.attempts[vm.ID]++
	copts := j.vmChildOptions(vm)
	child := workflow.ExecuteChildWorkflow(workflow.WithChildOptions(j.ctx, copts), contract.VMReplicationWorkflow, contract.VMInput{
		Job: j.spec, VM: vm, ParentWorkflowID: j.workflowID, Deadline: j.deadline,
	})
	j.events.AddFuture(child, func(f workflow.Future) { j.vmEnded(vm, copts.WorkflowID, f) })
}

// vmEnded records the outcome of a VM's workflow, or waits when another run
// holds the VM, or tries the VM again later when its failure may pass.
func (j *jobRun) vmEnded(vm contract.VM, workflowID string, f workflow.Future) {
	j.running--
	var r contract.VMResult
	err := f.Get(j.ctx, &r)
	if j.oneRunPerVM && temporal.IsWorkflowExecutionAlreadyStartedError(err) {
		j.waitForHolder(vm, workflowID)
		return
	}
	if err != nil {
		r = j.failedVM(vm, err)
	}
	if j.vmRetries {
		r.Attempts = j.attempts[vm.ID]
		if j.retryLater(vm, r) {
			return
		}
	}
	j.st.setVM(vm.ID, r)
}

// failedVM is the outcome of a VM whose workflow failed: its disks not
// finished yet failed with it.
func (j *jobRun) failedVM(vm contract.VM, err error) contract.VMResult {
	r := contract.VMResult{Name: vm.Name, ID: vm.ID, Status: contract.StatusFailed, Error: errorText(err)}
	if prev := j.st.vm(vm.ID); prev != nil {
		r.Disks = prev.Disks
		for i := range r.Disks {
			if !isFinal(r.Disks[i].Status) {
				r.Disks[i].Status = contract.StatusFailed
			}
		}
	}
	return r
}

// waitForHolder names the run that holds the VM and, with overlap: wait,
// tries the VM again later; with overlap: skip (or once the window closed or
// the run was cancelled) the VM is partial.
func (j *jobRun) waitForHolder(vm contract.VM, workflowID string) {
	j.running++
	h := j.held[vm.ID]
	if h == nil {
		h = &heldVM{}
		j.held[vm.ID] = h
	}
	j.events.AddFuture(h.find(j.ctx, j.spec, vm, workflowID, j.deadline, j.st), func(workflow.Future) {
		j.running--
		if j.spec.Overlap == contract.OverlapWait && !j.windowClosed && !j.cancelled {
			j.queue = append(j.queue, vm) // tried again
			return
		}
		reason := "skipped (overlap: skip): " + h.holder
		if j.windowClosed {
			reason = "backup window closed while waiting for " + h.holder
		} else if j.cancelled {
			reason = "run cancelled while waiting for " + h.holder
		}
		j.st.setVM(vm.ID, partialAll(*j.st.vm(vm.ID), reason))
	})
}

// retryLater schedules another attempt of a VM whose failure may pass, when
// its retries, the window and the run allow; it says whether it did.
func (j *jobRun) retryLater(vm contract.VM, r contract.VMResult) bool {
	wait := max(j.spec.RetryWait, time.Second)
	now := workflow.Now(j.ctx)
	if r.Status != contract.StatusFailed || !r.Retryable || j.cancelled || j.windowClosed ||
		j.attempts[vm.ID] > j.spec.Retries || (!j.deadline.IsZero() && !now.Add(wait).Before(j.deadline)) {
		return false
	}
	last := r
	shown := r
	shown.Status = contract.StatusPending
	shown.Error = fmt.Sprintf("attempt %d failed: %s; tried again at %s", r.Attempts, r.Error, now.Add(wait).UTC().Format(time.RFC3339))
	*j.st.vm(vm.ID) = shown
	j.running++
	j.events.AddFuture(workflow.NewTimer(j.ctx, wait), func(workflow.Future) {
		j.running--
		switch {
		case j.cancelled:
			last.Error += "; not tried again: run cancelled"
		case j.windowClosed:
			last.Error += "; not tried again: backup window closed"
		default:
			j.queue = append(j.queue, vm)
			return
		}
		j.st.setVM(vm.ID, last)
	})
	return true
}

// leaveForNextRun marks the VMs not started when the window closed (or the
// run was cancelled) partial: they wait for the next run.
func (j *jobRun) leaveForNextRun() {
	reason := "backup window closed before this VM started"
	if j.cancelled {
		reason = "run cancelled before this VM started"
	}
	for _, next := range j.queue {
		vm := j.st.vm(next.ID)
		vm.Status = contract.StatusPartial
		vm.Error = reason
		if h := j.held[next.ID]; h != nil {
			vm.Error = reason + "; it was waiting for " + h.holder
		}
		for i := range vm.Disks {
			vm.Disks[i].Status = contract.StatusPartial
		}
	}
	j.queue = nil
	if j.pages != nil && j.pages.more {
		j.pages.more = false
		j.st.leaveUnread()
	}
	j.st.trim()
}

// continueAsNew hands the VMs not started yet, and the result so far, to a
// new run of the job with a new history.
func (j *jobRun) continueAsNew() error {
	c := &contract.RunContinuation{Spec: j.spec, Deadline: j.deadline, Pending: j.queue, Result: j.st.result}
	if j.pages != nil {
		c.Paged, c.Cursor, c.Patterns = true, j.pages.cursor, j.pages.patterns
	}
	return workflow.NewContinueAsNewError(j.ctx, contract.ReplicationWorkflow, contract.ReplicationInput{
		Job: j.in.Job, VMs: j.in.VMs, Continued: c,
	})
}
