package runresult

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.temporal.io/api/common/v1"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflow/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/replicator/replicator/internal/contract"
)

// fakeTemporal answers like Temporal's visibility and history for the VM
// workflows of one job run.
type fakeTemporal struct {
	started  time.Time
	execs    []*workflow.WorkflowExecutionInfo
	results  map[string]contract.VMResult // by run id
	failures map[string]error
	queries  []string
}

func (f *fakeTemporal) DescribeWorkflowExecution(ctx context.Context, id, runID string) (*workflowservice.DescribeWorkflowExecutionResponse, error) {
	return &workflowservice.DescribeWorkflowExecutionResponse{WorkflowExecutionInfo: &workflow.WorkflowExecutionInfo{StartTime: timestamppb.New(f.started)}}, nil
}

func (f *fakeTemporal) ListWorkflow(ctx context.Context, req *workflowservice.ListWorkflowExecutionsRequest) (*workflowservice.ListWorkflowExecutionsResponse, error) {
	f.queries = append(f.queries, req.Query)
	// Two pages, to follow the page token.
	half := len(f.execs) / 2
	if len(req.NextPageToken) == 0 {
		return &workflowservice.ListWorkflowExecutionsResponse{Executions: f.execs[:half], NextPageToken: []byte("next")}, nil
	}
	return &workflowservice.ListWorkflowExecutionsResponse{Executions: f.execs[half:]}, nil
}

func (f *fakeTemporal) GetWorkflow(ctx context.Context, id, runID string) client.WorkflowRun {
	return fakeRun{f: f, id: id, runID: runID}
}

type fakeRun struct {
	f         *fakeTemporal
	id, runID string
}

func (r fakeRun) GetID() string                  { return r.id }
func (r fakeRun) GetRunID() string               { return r.runID }
func (r fakeRun) GetFirstExecutionRunID() string { return r.runID }
func (r fakeRun) Get(ctx context.Context, v interface{}) error {
	if err := r.f.failures[r.runID]; err != nil {
		return err
	}
	b, _ := json.Marshal(r.f.results[r.runID])
	return json.Unmarshal(b, v)
}
func (r fakeRun) GetWithOptions(ctx context.Context, v interface{}, _ client.WorkflowRunGetOptions) error {
	return r.Get(ctx, v)
}

func (f *fakeTemporal) add(vmID, runID string, at time.Time, status enums.WorkflowExecutionStatus, res contract.VMResult) {
	f.execs = append(f.execs, &workflow.WorkflowExecutionInfo{
		Execution: &common.WorkflowExecution{WorkflowId: contract.VMWorkflowID("hv01", vmID), RunId: runID},
		StartTime: timestamppb.New(at), Status: status,
	})
	f.results[runID] = res
}

// A result that lists one VM and counts three more gets them back from
// their workflows: the last execution of each (a retried VM's second
// attempt, counted as two), a failed workflow as a failed VM with its
// message; a VM still running is left to the run's own list.
func TestCompleteReadsOmittedVMsFromTheirWorkflows(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 17, 0, 0, 0, time.UTC)
	f := &fakeTemporal{started: t0, results: map[string]contract.VMResult{}, failures: map[string]error{}}
	disk := func(n int64) []contract.DiskResult {
		return []contract.DiskResult{{ID: "0", Status: contract.StatusSuccess, BytesRead: n, BytesSent: n, BytesWritten: n, Size: 4 * n}}
	}
	f.add("id-a", "a1", t0.Add(time.Second), enums.WORKFLOW_EXECUTION_STATUS_COMPLETED, contract.VMResult{Name: "a", ID: "id-a", Status: contract.StatusSuccess, Disks: disk(10)})
	f.add("id-b", "b1", t0.Add(2*time.Second), enums.WORKFLOW_EXECUTION_STATUS_FAILED, contract.VMResult{})
	f.failures["b1"] = errors.New("first attempt")
	f.add("id-b", "b2", t0.Add(5*time.Second), enums.WORKFLOW_EXECUTION_STATUS_COMPLETED, contract.VMResult{Name: "b", ID: "id-b", Status: contract.StatusSuccess, Disks: disk(20)})
	f.add("id-c", "c1", t0.Add(3*time.Second), enums.WORKFLOW_EXECUTION_STATUS_FAILED, contract.VMResult{})
	f.failures["c1"] = errors.New("replica locked")
	f.add("id-listed", "l1", t0.Add(4*time.Second), enums.WORKFLOW_EXECUTION_STATUS_COMPLETED, contract.VMResult{Name: "listed", ID: "id-listed", Status: contract.StatusSuccess})
	f.add("id-run", "r1", t0.Add(6*time.Second), enums.WORKFLOW_EXECUTION_STATUS_RUNNING, contract.VMResult{})

	res := contract.ReplicationResult{Job: "demo", Status: contract.StatusPartial, RunID: "first",
		VMs:        []contract.VMResult{{Name: "listed", ID: "id-listed", Status: contract.StatusSuccess}, {Name: "running", ID: "id-run", Status: contract.StatusRunning}},
		VMsOmitted: 3, Omitted: &contract.VMTally{Success: 2, Failed: 1, BytesRead: 30, BytesSent: 30, BytesWritten: 30, Size: 120}}
	if err := Complete(context.Background(), f, "demo-run's", &res); err != nil {
		t.Fatal(err)
	}
	if res.VMsOmitted != 0 || res.Omitted != nil {
		t.Fatalf("still omits %d: %+v", res.VMsOmitted, res.Omitted)
	}
	var got []string
	for _, vm := range res.VMs {
		got = append(got, fmt.Sprintf("%s:%s:%d", vm.ID, vm.Status, vm.Attempts))
	}
	want := "id-listed:success:0 id-run:running:0 id-a:success:1 id-c:failed:1 id-b:success:2"
	if strings.Join(got, " ") != want {
		t.Fatalf("VMs %v, want %s", got, want)
	}
	if vm := res.VMs[3]; vm.Error != "replica locked" || vm.Disks == nil {
		t.Fatalf("failed VM %+v", vm)
	}
	q := f.queries[0]
	if !strings.Contains(q, `ParentWorkflowId = 'demo-run\'s'`) || !strings.Contains(q, "WorkflowType = 'VMReplicationWorkflow'") ||
		!strings.Contains(q, "StartTime >= '2026-12-03T17:00:00Z'") {
		t.Fatalf("query %s", q)
	}
}

// A result that omits nothing is left as it is, without a query.
func TestCompleteLeavesAWholeResult(t *testing.T) {
	f := &fakeTemporal{results: map[string]contract.VMResult{}}
	res := contract.ReplicationResult{Job: "demo", VMs: []contract.VMResult{{Name: "a", ID: "id-a"}}}
	if err := Complete(context.Background(), f, "demo-1", &res); err != nil || len(f.queries) != 0 || len(res.VMs) != 1 {
		t.Fatalf("err %v, queries %v, VMs %v", err, f.queries, res.VMs)
	}
}
