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

	"github.com/replicator/replicator/internal/bytesize"
	"github.com/replicator/replicator/internal/contract"
)

// runState is the figures of a run so far; the progress query returns it.
type runState struct {
	result contract.ReplicationResult
	// notify lists the notification channels the run's end goes to.
	notify []string
	// bounded: the run reads a large inventory in pages and keeps its
	// result within resultBudget (runs recorded before keep their commands).
	bounded bool
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
	j, err := prepareRun(ctx, in, st)
	if err != nil {
		return st.fail(err)
	}
	return j.run()
}

// prepareRun makes the job loop of a run: from its continuation when it
// continues one, else from the job's settings, checks and inventory.
func prepareRun(ctx workflow.Context, in contract.ReplicationInput, st *runState) (*jobRun, error) {
	// A job of thousands of VMs reads its inventory in pages and lists in its
	// result (and its continuation) no more VMs than fit a payload budget.
	bounded := workflow.GetVersion(ctx, "bounded-payloads", workflow.DefaultVersion, 1) == 1
	if in.Continued != nil {
		return continuedRun(ctx, in, st, bounded)
	}
	st.bounded = bounded
	spec, deadline, vms, pages, err := startRun(ctx, in, st)
	if err != nil {
		return nil, err
	}
	return newJobRun(ctx, in, st, spec, deadline, vms, pages), nil
}

// continuedRun takes up the rest of a run that continued as new: the job's
// settings, the VMs left (and where its paged inventory stands) and the
// window are those of the run's start.
func continuedRun(ctx workflow.Context, in contract.ReplicationInput, st *runState, bounded bool) (*jobRun, error) {
	c := in.Continued
	st.result = c.Result
	st.notify = c.Spec.Notify
	st.bounded = bounded
	// Any client can send a continuation: one whose result does not list
	// a pending VM would leave that VM's outcome nowhere to go.
	for _, vm := range c.Pending {
		if st.vm(vm.ID) == nil {
			return nil, temporal.NewNonRetryableApplicationError(
				fmt.Sprintf("input continued.pending: VM %q (id %q) is not in continued.result", vm.Name, vm.ID), contract.ErrTypeBadInput, nil)
		}
	}
	// Any client can also carry settings no configuration holds: the
	// carried spec must be the configured job's.
	if workflow.GetVersion(ctx, "continued-spec-is-configured", workflow.DefaultVersion, 1) == 1 {
		if err := checkContinuedSpec(ctx, in.Job, c.Spec); err != nil {
			return nil, err
		}
	}
	var pages *inventoryPages
	if bounded && c.Paged {
		pages = &inventoryPages{host: c.Spec.Source, target: c.Spec.Target, job: c.Spec.Name,
			patterns: c.Patterns, cursor: c.Cursor, more: true}
	}
	return newJobRun(ctx, in, st, c.Spec, c.Deadline, c.Pending, pages), nil
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
		vm.Name, vm.ID, spec.Source, spec.Name, spec.Target, run, len(vm.Disks), bytesize.Text(size))
	for _, d := range vm.Disks {
		details += fmt.Sprintf("- disk %s: %s\n", d.ID, bytesize.Text(d.VirtualSize))
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
// run's result as pending. A job of more VMs than one inventory page returns
// its first page and the reader of the others.
func startRun(ctx workflow.Context, in contract.ReplicationInput, st *runState) (contract.JobSpec, time.Time, []contract.VM, *inventoryPages, error) {
	spec, deadline, windowHours, err := loadSpec(ctx, in.Job, st)
	if err != nil {
		return spec, time.Time{}, nil, nil, err
	}
	c := newRunChecks(ctx, spec, st)
	if err := c.infrastructure(); err != nil {
		return spec, time.Time{}, nil, nil, err
	}
	vms, pages, err := c.inventory(in)
	if err != nil {
		return spec, time.Time{}, nil, nil, err
	}
	// Interrupted restore points continue before anything new starts.
	var open []string
	if err := workflow.ExecuteActivity(c.tgtCtx, contract.ActOpenSessions, spec.Name).Get(ctx, &open); err != nil {
		workflow.GetLogger(ctx).Warn("listing interrupted restore points failed; continuing in inventory order", "error", err)
	}
	vms = resumeFirst(vms, open)
	listPending(st, vms)
	if pages != nil {
		pages.open, pages.read = open, true
	}
	if windowHours && !spec.WindowOpens.IsZero() {
		outsideHours(ctx, spec, st)
		if pages != nil {
			st.leaveUnread()
		}
		return spec, deadline, nil, nil, nil
	}
	return spec, deadline, vms, pages, nil
}

// loadSpec loads the job's settings, read at run time so that an edited job
// applies now, and the window's deadline: the end of the window or of the
// permitted hours, the earlier wins.
func loadSpec(ctx workflow.Context, job string, st *runState) (spec contract.JobSpec, deadline time.Time, windowHours bool, err error) {
	if err := workflow.ExecuteActivity(workflow.WithActivityOptions(ctx, shortActivity("")),
		contract.ActLoadJob, job).Get(ctx, &spec); err != nil {
		return spec, time.Time{}, false, fmt.Errorf("loading job %q: %w", job, err)
	}
	st.notify = spec.Notify
	if spec.Window > 0 {
		deadline = workflow.Now(ctx).Add(spec.Window)
	}
	windowHours = workflow.GetVersion(ctx, "window-hours", workflow.DefaultVersion, 1) == 1
	if windowHours && !spec.WindowEnd.IsZero() && (deadline.IsZero() || spec.WindowEnd.Before(deadline)) {
		deadline = spec.WindowEnd
	}
	return spec, deadline, windowHours, nil
}

// outsideHours makes every pending VM partial: the run started outside the
// job's permitted hours and does nothing.
func outsideHours(ctx workflow.Context, spec contract.JobSpec, st *runState) {
	tz := spec.Timezone
	if tz == "" {
		tz = "UTC"
	}
	reason := fmt.Sprintf("outside the backup window (windowHours %q, %s): nothing was done; the window opens at %s",
		spec.WindowHours, tz, spec.WindowOpens.Format(time.RFC3339))
	workflow.GetLogger(ctx).Info("the run started outside its backup window", "opens", spec.WindowOpens)
	for i := range st.result.VMs {
		if st.result.VMs[i].Status == contract.StatusPending {
			st.result.VMs[i] = partialAll(st.result.VMs[i], reason)
		}
	}
}

// runChecks are the checks of a run's start: the infrastructure the job
// needs answers (the source host, the target agent, the data channel between
// them with the proxy's certificate) and, after the inventory, the job's VMs
// exist, can be replicated and fit the datastore. All of it before any
// checkpoint, each failure naming the setting at fault; each check is
// recorded in the result.
type runChecks struct {
	ctx                      workflow.Context
	spec                     contract.JobSpec
	st                       *runState
	srcCtx, tgtCtx           workflow.Context
	checkSrcCtx, checkTgtCtx workflow.Context
	// real: the checks are recorded and the data channel, the VMs and the
	// space are checked (runs recorded before they were keep their commands).
	real bool
}

func newRunChecks(ctx workflow.Context, spec contract.JobSpec, st *runState) *runChecks {
	c := &runChecks{ctx: ctx, spec: spec, st: st,
		srcCtx: workflow.WithActivityOptions(ctx, shortActivity(contract.SourceQueue(spec.Source))),
		tgtCtx: workflow.WithActivityOptions(ctx, shortActivity(contract.TargetQueue(spec.Target))),
	}
	c.real = workflow.GetVersion(ctx, "infrastructure-checks", workflow.DefaultVersion, 1) == 1
	c.checkSrcCtx, c.checkTgtCtx = c.srcCtx, c.tgtCtx
	if c.real {
		c.checkSrcCtx = workflow.WithActivityOptions(ctx, checkActivity(contract.SourceQueue(spec.Source)))
		c.checkTgtCtx = workflow.WithActivityOptions(ctx, checkActivity(contract.TargetQueue(spec.Target)))
	}
	return c
}

// record adds a check to the result.
func (c *runChecks) record(name string, err error, detail string) {
	if c.real {
		c.st.result.Checks = append(c.st.result.Checks, contract.Check{Name: name, OK: err == nil, Detail: detail})
	}
}

// step runs one check: its error, recorded under its name, fails the run
// with the context of what was checked.
func (c *runChecks) step(name, context string, check func() (detail string, err error)) error {
	detail, err := check()
	if err != nil {
		detail = errorText(err)
	}
	c.record(name, err, detail)
	if err != nil {
		return fmt.Errorf("%s: %w", context, err)
	}
	return nil
}

// infrastructure checks the source host, the target agent and (recorded
// runs aside) the data channel between them, in that order.
func (c *runChecks) infrastructure() error {
	spec := c.spec
	checkSrc := workflow.ExecuteActivity(c.checkSrcCtx, contract.ActCheckSource, spec.Source)
	checkTgt := workflow.ExecuteActivity(c.checkTgtCtx, contract.ActCheckTarget, spec.Name)
	var target contract.TargetStatus
	steps := []struct {
		name, context string
		check         func() (string, error)
	}{
		{"source host " + spec.Source + " answers", "source host " + spec.Source, func() (string, error) {
			return "", notAnswering(checkSrc.Get(c.ctx, nil), "source host "+spec.Source, "no proxy serves hosts["+spec.Source+"] (task queue "+contract.SourceQueue(spec.Source)+"): is a worker with the proxy role running?")
		}},
		{"agent of target " + spec.Target + " answers", "target " + spec.Target, func() (string, error) {
			err := checkTgt.Get(c.ctx, &target)
			return "datastore " + target.Datastore, notAnswering(err, "target "+spec.Target, "the agent of target "+spec.Target+" is down: nothing serves task queue "+contract.TargetQueue(spec.Target)+" (is a worker with the target role and agent.name "+spec.Target+" running?)")
		}},
		{"proxy opens the data channel of " + spec.Target + " at " + spec.TargetAddress, "target " + spec.Target, func() (string, error) {
			var version int
			return "", workflow.ExecuteActivity(c.checkSrcCtx, contract.ActProbeDataChannel, contract.ProbeInput{
				Target: spec.Target, Address: spec.TargetAddress, AgentListen: target.Listen,
			}).Get(c.ctx, &version)
		}},
	}
	for i, s := range steps {
		if i == len(steps)-1 && !c.real {
			break
		}
		if err := c.step(s.name, s.context, s.check); err != nil {
			return err
		}
	}
	return nil
}

// inventory lists the job's VMs, narrowed by the input, and checks that
// they exist, can be replicated, and fit the datastore. A job of more VMs
// than one page (only in runs that read pages) gets its first page here and
// the reader of the others.
func (c *runChecks) inventory(in contract.ReplicationInput) ([]contract.VM, *inventoryPages, error) {
	patterns := c.spec.VMs
	if len(in.VMs) > 0 {
		patterns = in.VMs
	}
	if !c.st.bounded {
		var vms []contract.VM
		if err := workflow.ExecuteActivity(c.srcCtx, contract.ActInventory,
			contract.InventoryInput{Host: c.spec.Source, Job: c.spec.Name, Patterns: patterns}).Get(c.ctx, &vms); err != nil {
			return nil, nil, fmt.Errorf("inventory of %s: %w", c.spec.Source, err)
		}
		vms, err := c.vmsExist(in, vms)
		return vms, nil, err
	}
	page, err := readPage(c.ctx, c.spec.Source, c.spec.Name, patterns, "")
	if err != nil {
		return nil, nil, err
	}
	if !page.More {
		vms, err := c.vmsExist(in, page.VMs)
		return vms, nil, err
	}
	return c.pagedInventory(in, patterns, page)
}

// vmsExist fails, each by itself, the VMs the input or the job names that
// the host does not have (found says whether the inventory has one), and
// (recorded runs aside) checks that the others can be replicated and fit the
// datastore.
func (c *runChecks) vmsExist(in contract.ReplicationInput, vms []contract.VM) ([]contract.VM, error) {
	spec := c.spec
	c.failMissing(in, func(want string) bool { return anyMatches(vms, want) }, len(vms))
	if !c.real {
		return vms, nil
	}
	if workflow.GetVersion(c.ctx, "unsupported-vms-checked", workflow.DefaultVersion, 1) == 1 {
		vms = refuseUnsupported(spec, vms, c.st, c.record)
	}
	if len(vms) == 0 {
		return vms, nil
	}
	return vms, c.step("datastore of "+spec.Target+" has room for this run", "target "+spec.Target, func() (string, error) {
		var space contract.SpaceStatus
		err := workflow.ExecuteActivity(c.checkTgtCtx, contract.ActCheckSpace, contract.SpaceInput{Job: spec.Name, VMs: vms}).Get(c.ctx, &space)
		return space.Detail, err
	})
}

// failMissing fails, each by itself, the VMs the input or the job names
// that the host does not have (found says whether it has one) and records
// the check of the count VMs found.
func (c *runChecks) failMissing(in contract.ReplicationInput, found func(want string) bool, count int) {
	spec := c.spec
	for _, want := range in.VMs {
		if !found(want) {
			c.st.result.VMs = append(c.st.result.VMs, contract.VMResult{
				Name: want, Status: contract.StatusFailed, Disks: []contract.DiskResult{},
				Error: fmt.Sprintf("VM %q not found on host %s among the VMs of job %s (jobs[%s].vms %s)", want, spec.Source, spec.Name, spec.Name, firstOf(spec.VMs, 10)),
			})
		}
	}
	if !c.real {
		return
	}
	// A VM the job names that the host does not have fails by itself.
	var missing []string
	if len(in.VMs) == 0 {
		for _, want := range spec.VMs {
			if !strings.ContainsAny(want, "*?[") && !found(want) {
				missing = append(missing, want)
				c.st.result.VMs = append(c.st.result.VMs, contract.VMResult{
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
	c.record(fmt.Sprintf("the job's VMs exist on %s (%d found)", spec.Source, count), err, detailOf(err))
}

// firstOf lists at most n of names, as %v would list them all: one error per
// missing VM quotes the job's list, and a job of thousands of VMs must not
// make each error (and the run's result) that long.
func firstOf(names []string, n int) string {
	if len(names) <= n {
		return fmt.Sprint(names)
	}
	return fmt.Sprintf("%v and %d more", names[:n], len(names)-n)
}

// pagedInventory checks the VMs of a job larger than one inventory page:
// the host names the job's VMs it does not have; every page is read once
// here for the VMs the host cannot replicate and the room they need on the
// datastore. It returns the first page's VMs (those that can be replicated)
// and the reader of the pages after it; each page's refused VMs fail when the
// run reaches it.
func (c *runChecks) pagedInventory(in contract.ReplicationInput, patterns []string, first contract.InventoryPage) ([]contract.VM, *inventoryPages, error) {
	spec := c.spec
	c.failMissing(in, func(want string) bool { return !slices.Contains(first.Missing, want) }, first.Total)
	var refused []string
	var space contract.SpaceStatus
	for page := first; ; {
		if err := c.pageChecks(page, &refused, &space); err != nil {
			return nil, nil, err
		}
		if !page.More {
			break
		}
		var err error
		if page, err = readPage(c.ctx, spec.Source, spec.Name, patterns, page.VMs[len(page.VMs)-1].ID); err != nil {
			return nil, nil, err
		}
	}
	var err error
	if len(refused) > 0 {
		err = errors.New(strings.Join(refused, "; "))
	}
	c.record("the job's VMs can be replicated from "+spec.Source, err, detailOf(err))
	c.record("datastore of "+spec.Target+" has room for this run", nil, space.Detail)
	vms := refuseUnsupported(spec, first.VMs, c.st, func(string, error, string) {})
	c.st.unread(first.Total - len(first.VMs))
	pages := &inventoryPages{host: spec.Source, target: spec.Target, job: spec.Name, patterns: patterns,
		cursor: first.VMs[len(first.VMs)-1].ID, more: true}
	return vms, pages, nil
}

// pageChecks notes the VMs of one page the host cannot replicate (the first
// ten by name, then how many more) and adds the others to the datastore's
// room check, failing the run when the datastore is short.
func (c *runChecks) pageChecks(page contract.InventoryPage, refused *[]string, space *contract.SpaceStatus) error {
	var ok []contract.VM
	for _, vm := range page.VMs {
		switch {
		case vm.Unsupported == "":
			ok = append(ok, vm)
		case len(*refused) < 10:
			*refused = append(*refused, "VM "+vm.Name+": "+vm.Unsupported)
		default:
			*refused = append((*refused)[:10], "and more")
		}
	}
	if len(ok) == 0 {
		return nil
	}
	before := space.Tally
	err := workflow.ExecuteActivity(c.checkTgtCtx, contract.ActCheckSpace, contract.SpaceInput{Job: c.spec.Name, VMs: ok, Before: before}).Get(c.ctx, space)
	if err != nil {
		c.record("datastore of "+c.spec.Target+" has room for this run", err, errorText(err))
		return fmt.Errorf("target %s: %w", c.spec.Target, err)
	}
	return nil
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
	if t := s.result.Omitted; t != nil {
		done += t.Success + t.Partial + t.Failed
		total += s.result.VMsOmitted
		written += t.BytesWritten
		size += t.Size
	}
	var text strings.Builder
	text.WriteString(fmt.Sprintf("**%s** — %d of %d VMs finished, %s of %s acknowledged\n\n", s.result.Job, done, total, bytesize.Text(written), bytesize.Text(size)))
	for _, vm := range s.result.VMs {
		text.WriteString(fmt.Sprintf("- %s: %s", vm.Name, vm.Status))
		for _, d := range vm.Disks {
			text.WriteString(fmt.Sprintf(" · disk %s %s %s/%s", d.ID, d.Status, bytesize.Text(d.Position), bytesize.Text(d.Size)))
		}
		text.WriteString("\n")
	}
	if n := s.result.VMsOmitted; n > 0 {
		text.WriteString(fmt.Sprintf("- and %d more VMs (each in its own workflow)\n", n))
	}
	workflow.SetCurrentDetails(ctx, text.String())
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
