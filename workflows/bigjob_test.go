package workflows

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/replicator/replicator/internal/contract"
)

// payloadWarning is Temporal's payload size warning (TMPRL1103): no payload
// of a job run may pass it, whatever the number of VMs.
const payloadWarning = 512 << 10

// manyVMs makes n fake VMs of two disks, their ids in the reverse order of
// their names so that paging (by id) and the host's order differ.
func manyVMs(n int) []contract.VM {
	vms := make([]contract.VM, n)
	for i := range vms {
		vms[i] = contract.VM{ID: fmt.Sprintf("id-%05d", n-i), Name: fmt.Sprintf("vm%05d", i+1),
			Disks: []contract.Disk{{ID: "0", VirtualSize: 4 << 20}, {ID: "1", VirtualSize: 2 << 20}}}
	}
	return vms
}

// runOnce runs one workflow run; a run that continues as new returns its
// continuation's input.
func runOnce(t *testing.T, f *fakeHost, in contract.ReplicationInput, suggestContinue bool) (contract.ReplicationResult, *contract.ReplicationInput, int) {
	t.Helper()
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestWorkflowEnvironment()
	env.SetTestTimeout(5 * time.Minute)
	env.SetContinueAsNewSuggested(suggestContinue)
	f.register(env)
	env.ExecuteWorkflow(contract.ReplicationWorkflow, in)
	if !env.IsWorkflowCompleted() {
		t.Fatal("workflow did not complete")
	}
	err := env.GetWorkflowError()
	var can *workflow.ContinueAsNewError
	if errors.As(err, &can) {
		var next contract.ReplicationInput
		if err := converter.GetDefaultDataConverter().FromPayloads(can.Input, &next); err != nil {
			t.Fatal(err)
		}
		return contract.ReplicationResult{}, &next, can.Input.Size()
	}
	if err != nil {
		t.Fatal(err)
	}
	var res contract.ReplicationResult
	if err := env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	return res, nil, 0
}

// A job of thousands of VMs reads its inventory in pages and continues as
// new with a cursor and the page in hand, not with every VM: the
// continuation's input, each inventory page and the result stay under
// Temporal's payload warning, and the result still accounts for every VM
// (listed, or counted as omitted with their figures).
func TestThousandsOfVMsKeepPayloadsBounded(t *testing.T) {
	// The test environment cannot hold a thousand child workflows in one
	// run: the job is 900 VMs read in pages of 100.
	const n = 900
	defer func(v int) { inventoryPageVMs = v }(inventoryPageVMs)
	inventoryPageVMs = 100
	f := newFake()
	f.vms = manyVMs(n)
	f.spec.Parallelism = 16

	// The first run continues as new at once (the server suggests it): it
	// hands on the first page, pending, and the cursor after it.
	_, next, size := runOnce(t, f, contract.ReplicationInput{Job: "demo"}, true)
	if next == nil {
		t.Fatal("the first run did not continue as new")
	}
	c := next.Continued
	if !c.Paged || c.Cursor == "" || len(c.Pending) != inventoryPageVMs {
		t.Fatalf("continuation paged %v cursor %q with %d pending VMs, want a cursor and one page of %d", c.Paged, c.Cursor, len(c.Pending), inventoryPageVMs)
	}
	if size > payloadWarning {
		t.Fatalf("continuation input is %d bytes, over the %d warning", size, payloadWarning)
	}
	if c.Result.VMsOmitted != n-inventoryPageVMs || c.Result.Omitted.Unread != n-inventoryPageVMs {
		t.Fatalf("continuation result omits %d (unread %+v), want the %d VMs not read yet", c.Result.VMsOmitted, c.Result.Omitted, n-inventoryPageVMs)
	}
	if f.pages != n/inventoryPageVMs {
		t.Fatalf("the checks read %d inventory pages, want every page once (%d)", f.pages, n/inventoryPageVMs)
	}

	// The continuation replicates every VM from the page in hand and the
	// pages after the cursor, each once.
	f.pages = 0
	res, more, _ := runOnce(t, f, *next, false)
	if more != nil {
		t.Fatal("the continuation continued as new again")
	}
	if f.pages != n/inventoryPageVMs-1 {
		t.Fatalf("the continuation read %d pages, want the %d after the cursor", f.pages, n/inventoryPageVMs-1)
	}
	if len(f.committed) != n {
		t.Fatalf("%d restore points committed, want %d", len(f.committed), n)
	}
	seen := map[string]bool{}
	for _, id := range f.committed {
		if seen[id] {
			t.Fatalf("VM %s replicated twice", id)
		}
		seen[id] = true
	}
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > resultBudget+64<<10 {
		t.Fatalf("result is %d bytes, over its budget %d", len(b), resultBudget)
	}
	if res.Status != contract.StatusSuccess || res.Omitted == nil || res.Omitted.Success+len(res.VMs) != n ||
		res.VMsOmitted != res.Omitted.Success || res.Omitted.Pending != 0 || res.Omitted.Unread != 0 {
		t.Fatalf("result %s lists %d VMs and omits %d (%+v), want all %d successful", res.Status, len(res.VMs), res.VMsOmitted, res.Omitted, n)
	}
	if want := int64(n-len(res.VMs)) * 10 * 2; res.Omitted.BytesRead != want {
		t.Fatalf("omitted VMs read %d bytes, want %d", res.Omitted.BytesRead, want)
	}
	t.Logf("continuation input %d bytes; result %d bytes listing %d of %d VMs", size, len(b), len(res.VMs), n)
}

// A job of a few hundred VMs (one inventory page) keeps every VM in its
// result, in the host's order, with nothing omitted: the result's shape is
// the same as before pages.
func TestFewHundredVMsListedWhole(t *testing.T) {
	const n = 300
	f := newFake()
	f.vms = manyVMs(n)
	f.spec.Parallelism = 32
	res, err := run(t, f, contract.ReplicationInput{Job: "demo"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.VMs) != n || res.VMsOmitted != 0 || res.Omitted != nil || res.Status != contract.StatusSuccess {
		t.Fatalf("result lists %d VMs, omits %d (%+v), status %s", len(res.VMs), res.VMsOmitted, res.Omitted, res.Status)
	}
	for i, vm := range res.VMs {
		if vm.Name != f.vms[i].Name || vm.Status != contract.StatusSuccess || len(vm.Disks) != 2 {
			t.Fatalf("VM %d of the result: %+v, want %s succeeded", i, vm, f.vms[i].Name)
		}
	}
}

// The estimate that keeps the result within its budget is never below the
// JSON it estimates, so the budget holds for the bytes Temporal carries.
func TestVMResultEstimateNotBelowItsJSON(t *testing.T) {
	r := contract.VMResult{Name: "web01", ID: "5f0c6f0e-8f0b-4d5e-9a43-2b1b7c9c1a10", Status: contract.StatusSuccess,
		RestorePoint: "20261203T170000Z-0001", Attempts: 3, PointTime: time.Date(2026, 12, 3, 17, 0, 0, 123456789, time.UTC),
		LagSeconds: 12345.678901, RPOExceeded: true, Warning: "rpo 30s missed"}
	for i := range 4 {
		r.Disks = append(r.Disks, contract.DiskResult{ID: fmt.Sprint(i), Status: contract.StatusSuccess,
			BytesRead: 1 << 40, BytesSent: 1 << 40, BytesWritten: 1 << 40, BlocksChanged: 1 << 30, BlocksZero: 1 << 30,
			BlocksExcluded: 1 << 30, ResumedFromByte: 1 << 40, ChangeTracking: contract.TrackingDigest, Position: 1 << 40, Size: 1 << 40})
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if est := vmResultBytes(r); est < len(b) {
		t.Fatalf("estimate %d bytes, JSON %d", est, len(b))
	}
}

// When the host stops answering the inventory in the middle of a paged run,
// the VMs already started finish and those not read are counted partial,
// left for the next run: the run ends partial instead of failing with its
// VMs running.
func TestPagesNotReadLeftForTheNextRun(t *testing.T) {
	defer func(v int) { inventoryPageVMs = v }(inventoryPageVMs)
	inventoryPageVMs = 100
	f := newFake()
	f.vms = manyVMs(250)
	f.spec.Parallelism = 8
	f.pagesAnswered = 3 // the checks read the three pages; the run's reads fail
	res, err := run(t, f, contract.ReplicationInput{Job: "demo"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != contract.StatusPartial || len(f.committed) != 100 || res.Omitted == nil ||
		res.Omitted.Partial != 150 || res.Omitted.Unread != 150 || res.Omitted.Pending != 0 || res.VMsOmitted != 150 {
		t.Fatalf("status %s, %d committed, omitted %d %+v", res.Status, len(f.committed), res.VMsOmitted, res.Omitted)
	}
}

// A VM the input names that the host does not have fails with an error that
// quotes the job's list of VMs: of a job that names thousands one by one,
// the first ten and a count, not all of them in every such error.
func TestMissingVMErrorQuotesTheJobsListShort(t *testing.T) {
	f := newFake()
	f.vms = manyVMs(3)
	names := make([]string, 2000)
	for i := range names {
		names[i] = fmt.Sprintf("vm%05d", i+1)
	}
	f.spec.VMs = names
	res, _, _ := runOnce(t, f, contract.ReplicationInput{Job: "demo", VMs: []string{"ghost1", "ghost2"}}, false)
	failed := 0
	for _, v := range res.VMs {
		if v.Name != "ghost1" && v.Name != "ghost2" {
			continue
		}
		failed++
		if v.Status != contract.StatusFailed || !strings.Contains(v.Error, "not found") || !strings.Contains(v.Error, "vm00010] and 1990 more") || len(v.Error) > 300 {
			t.Errorf("%s: %s, %d-byte error %q, want failed, naming the first ten of the job's VMs and the count of the rest", v.Name, v.Status, len(v.Error), v.Error)
		}
	}
	if failed != 2 {
		t.Fatalf("%d of the two missing VMs in the result (%d VMs listed), want both", failed, len(res.VMs))
	}
}
