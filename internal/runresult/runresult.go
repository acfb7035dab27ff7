// Package runresult completes the result (or the progress) of a job run
// that counts some of its VMs without listing them: a job of thousands of
// VMs keeps its result under Temporal's payload warning by listing only what
// fits, and each VM it leaves out has its detail in its own workflow
// (contract.VMWorkflowID), started by the run. Complete reads those
// workflows back, so that what `starter run --wait`, `starter status` and
// `workers --dev --once` show lists every VM, as the contract describes.
package runresult

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/replicator/replicator/internal/contract"
)

// Client is the part of the Temporal client Complete uses.
type Client interface {
	DescribeWorkflowExecution(ctx context.Context, workflowID, runID string) (*workflowservice.DescribeWorkflowExecutionResponse, error)
	ListWorkflow(ctx context.Context, request *workflowservice.ListWorkflowExecutionsRequest) (*workflowservice.ListWorkflowExecutionsResponse, error)
	GetWorkflow(ctx context.Context, workflowID, runID string) client.WorkflowRun
}

// vmRun is the last execution of one VM's workflow in the run, and how many
// the run started (its attempts).
type vmRun struct {
	workflowID, runID string
	started           time.Time
	attempts          int
	running           bool
}

// Complete puts back into res.VMs the VMs the run counted in res.Omitted,
// from the results of their workflows started by the run (workflowID, the
// job run's workflow id). VMs that never had a workflow (the window closed
// before the run read them, or the host did not have them) stay counted.
func Complete(ctx context.Context, c Client, workflowID string, res *contract.ReplicationResult) error {
	if res.VMsOmitted == 0 || res.Omitted == nil {
		return nil
	}
	runs, err := vmRuns(ctx, c, workflowID, res.RunID)
	if err != nil {
		return err
	}
	listed := map[string]bool{}
	for _, vm := range res.VMs {
		listed[vm.ID] = true
	}
	var todo []vmRun
	for _, r := range runs {
		if !listed[vmIDOf(r.workflowID)] {
			todo = append(todo, r)
		}
	}
	found := results(ctx, c, todo)
	for _, vm := range found {
		res.VMs = append(res.VMs, vm)
		untally(res.Omitted, vm)
	}
	res.VMsOmitted -= len(found)
	if res.VMsOmitted <= 0 {
		res.VMsOmitted, res.Omitted = 0, nil
	}
	return nil
}

// vmRuns lists the VM workflows the job run started (every run of the chain
// continued as new: they share its workflow id), the last execution of each.
func vmRuns(ctx context.Context, c Client, workflowID, firstRunID string) ([]vmRun, error) {
	query := fmt.Sprintf("ParentWorkflowId = '%s' AND WorkflowType = '%s'", quote(workflowID), contract.VMReplicationWorkflow)
	if firstRunID != "" {
		// The job's workflow id may be used again by a later run: only
		// the VMs started since this run's start are its own.
		d, err := c.DescribeWorkflowExecution(ctx, workflowID, firstRunID)
		if err != nil {
			return nil, fmt.Errorf("run %s of %s: %w", firstRunID, workflowID, err)
		}
		query += fmt.Sprintf(" AND StartTime >= '%s'", d.GetWorkflowExecutionInfo().GetStartTime().AsTime().UTC().Format(time.RFC3339Nano))
	}
	byID := map[string]*vmRun{}
	var token []byte
	for {
		page, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Query: query, PageSize: 1000, NextPageToken: token})
		if err != nil {
			return nil, fmt.Errorf("listing the VM workflows of %s: %w", workflowID, err)
		}
		for _, e := range page.GetExecutions() {
			id, started := e.GetExecution().GetWorkflowId(), e.GetStartTime().AsTime()
			r := byID[id]
			if r == nil {
				r = &vmRun{workflowID: id}
				byID[id] = r
			}
			r.attempts++
			if !started.Before(r.started) {
				r.runID, r.started = e.GetExecution().GetRunId(), started
				r.running = e.GetStatus() == enums.WORKFLOW_EXECUTION_STATUS_RUNNING
			}
		}
		if token = page.GetNextPageToken(); len(token) == 0 {
			break
		}
	}
	out := make([]vmRun, 0, len(byID))
	for _, r := range byID {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].started.Equal(out[j].started) {
			return out[i].started.Before(out[j].started)
		}
		return out[i].workflowID < out[j].workflowID
	})
	return out, nil
}

// results reads the outcome of each VM workflow (eight at a time), in the
// order given; a workflow still running is left out (the run lists those).
func results(ctx context.Context, c Client, runs []vmRun) []contract.VMResult {
	out := make([]contract.VMResult, len(runs))
	ok := make([]bool, len(runs))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, r := range runs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			out[i], ok[i] = result(ctx, c, r)
		}()
	}
	wg.Wait()
	var kept []contract.VMResult
	for i := range out {
		if ok[i] {
			kept = append(kept, out[i])
		}
	}
	return kept
}

// result is one VM workflow's outcome, as the job run records it: a workflow
// that failed is a failed VM with the failure's message.
func result(ctx context.Context, c Client, r vmRun) (contract.VMResult, bool) {
	if r.running {
		return contract.VMResult{}, false
	}
	var vm contract.VMResult
	err := c.GetWorkflow(ctx, r.workflowID, r.runID).Get(ctx, &vm)
	if err != nil {
		vm = contract.VMResult{ID: vmIDOf(r.workflowID), Name: vmIDOf(r.workflowID), Status: contract.StatusFailed,
			Error: errorText(err), Disks: []contract.DiskResult{}}
	}
	if vm.Disks == nil {
		vm.Disks = []contract.DiskResult{}
	}
	vm.Attempts = r.attempts
	return vm, true
}

// errorText is the message of the application error a workflow failed with.
func errorText(err error) string {
	var app *temporal.ApplicationError
	if errors.As(err, &app) {
		return app.Message()
	}
	return err.Error()
}

// untally takes a VM put back into the list off the omitted tally.
func untally(t *contract.VMTally, vm contract.VMResult) {
	switch vm.Status {
	case contract.StatusSuccess:
		t.Success--
	case contract.StatusFailed:
		t.Failed--
	default:
		t.Partial--
	}
	if vm.RPOExceeded {
		t.RPOExceeded--
	}
	for _, d := range vm.Disks {
		t.BytesRead -= d.BytesRead
		t.BytesSent -= d.BytesSent
		t.BytesWritten -= d.BytesWritten
		t.Size -= d.Size
	}
}

// vmIDOf is the VM id in a VM workflow id (vm/<host>/<vm-id>).
func vmIDOf(workflowID string) string {
	return workflowID[strings.LastIndexByte(workflowID, '/')+1:]
}

// quote escapes a value for a visibility query string literal.
func quote(s string) string {
	return strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s)
}
