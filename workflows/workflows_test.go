package workflows

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/replicator/replicator/internal/contract"
)

// fakeHost records the calls the workflows make and answers like a source
// host, a target agent and a job store would.
type fakeHost struct {
	mu          sync.Mutex
	spec        contract.JobSpec
	vms         []contract.VM
	open        []string
	calls       []string
	released    []string
	committed   []string
	sweeps      []string
	prepare     func(vm contract.VM) error
	notified    []contract.Notification
	notifyErr   error
	transfer    func(ctx context.Context, in contract.TransferInput) (contract.DiskResult, error)
	checkpoint  func(in contract.CheckpointInput) (contract.CheckpointResult, error)
	replicaOpen map[string]string // vm id → open checkpoint
	newestPoint map[string]time.Time
	pages       int // inventory pages read
	// pagesAnswered, when set, is how many pages the host answers before it
	// fails every read.
	pagesAnswered int
}

func (f *fakeHost) record(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
}

func newFake() *fakeHost {
	return &fakeHost{
		spec: contract.JobSpec{Name: "demo", Source: "hv01", Target: "dr01", VMs: []string{"*"},
			Compression: "optimal", BlockSize: 1 << 20, ChangeTracking: "auto", Retention: 3, Parallelism: 2},
		vms: []contract.VM{
			{ID: "id-web", Name: "web01", Disks: []contract.Disk{{ID: "0", VirtualSize: 64 << 20}}},
			{ID: "id-db", Name: "db01", Disks: []contract.Disk{{ID: "0", VirtualSize: 64 << 20}, {ID: "1", VirtualSize: 32 << 20}}},
		},
		replicaOpen: map[string]string{},
	}
}

func (f *fakeHost) register(env *testsuite.TestWorkflowEnvironment) {
	Register(env)
	reg := func(fn interface{}, name string) {
		env.RegisterActivityWithOptions(fn, activity.RegisterOptions{Name: name})
	}
	reg(func(ctx context.Context, job string) (contract.JobSpec, error) {
		f.record("LoadJob")
		if job != f.spec.Name {
			return contract.JobSpec{}, temporal.NewNonRetryableApplicationError("job "+job+" is not configured", contract.ErrTypeBadConfig, nil)
		}
		return f.spec, nil
	}, contract.ActLoadJob)
	reg(func(ctx context.Context, host string) error { f.record("CheckSource"); return nil }, contract.ActCheckSource)
	reg(func(ctx context.Context, job string) (contract.TargetStatus, error) {
		f.record("CheckTarget")
		return contract.TargetStatus{FreeBytes: 1 << 40}, nil
	}, contract.ActCheckTarget)
	reg(func(ctx context.Context, in contract.InventoryInput) ([]contract.VM, error) {
		f.record("Inventory")
		var out []contract.VM
		for _, vm := range f.vms {
			for _, p := range in.Patterns {
				if p == "*" || p == vm.Name || p == vm.ID {
					out = append(out, vm)
					break
				}
			}
		}
		return out, nil
	}, contract.ActInventory)
	// Like the proxy's InventoryPage: a selection that fits one page in
	// the host's order, else pages in VM id order.
	reg(func(ctx context.Context, in contract.InventoryInput) (contract.InventoryPage, error) {
		f.record("Inventory")
		f.mu.Lock()
		defer f.mu.Unlock()
		f.pages++
		if f.pagesAnswered > 0 && f.pages > f.pagesAnswered {
			return contract.InventoryPage{}, temporal.NewNonRetryableApplicationError("host hv01 is gone", contract.ErrTypeBadConfig, nil)
		}
		var sel []contract.VM
		for _, vm := range f.vms {
			if slices.ContainsFunc(in.Patterns, func(p string) bool { return p == "*" || p == vm.Name || p == vm.ID }) {
				sel = append(sel, vm)
			}
		}
		page := contract.InventoryPage{VMs: []contract.VM{}}
		if in.After == "" {
			page.Total = len(sel)
			for _, p := range in.Patterns {
				if p != "*" && !slices.ContainsFunc(sel, func(vm contract.VM) bool { return p == vm.Name || p == vm.ID }) {
					page.Missing = append(page.Missing, p)
				}
			}
		}
		if in.After != "" || len(sel) > in.Limit {
			slices.SortFunc(sel, func(a, b contract.VM) int { return strings.Compare(a.ID, b.ID) })
		}
		for _, vm := range sel {
			if in.After != "" && vm.ID <= in.After {
				continue
			}
			if len(page.VMs) == in.Limit {
				page.More = true
				break
			}
			page.VMs = append(page.VMs, vm)
		}
		return page, nil
	}, contract.ActInventoryPage)
	reg(func(ctx context.Context, job string) ([]string, error) { return f.open, nil }, contract.ActOpenSessions)
	reg(func(ctx context.Context, job string, vm contract.VM) (contract.ReplicaState, error) {
		f.record("Prepare " + vm.Name)
		if f.prepare != nil {
			if err := f.prepare(vm); err != nil {
				return contract.ReplicaState{}, err
			}
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		return contract.ReplicaState{OpenCheckpointID: f.replicaOpen[vm.ID], NewestPointTime: f.newestPoint[vm.ID]}, nil
	}, contract.ActPrepareReplica)
	reg(func(ctx context.Context, in contract.CheckpointInput) (contract.CheckpointResult, error) {
		f.record("Checkpoint " + in.VMName + " reuse=" + in.ReuseID)
		if in.Sweep {
			f.mu.Lock()
			f.sweeps = append(f.sweeps, in.VMID+" with the checkpoint")
			f.mu.Unlock()
		}
		if f.checkpoint != nil {
			return f.checkpoint(in)
		}
		if in.ReuseID != "" {
			return contract.CheckpointResult{ID: in.ReuseID, Reused: true}, nil
		}
		return contract.CheckpointResult{ID: "cp-" + in.VMID}, nil
	}, contract.ActCreateCheckpoint)
	reg(func(ctx context.Context, in contract.BeginInput) (contract.BeginResult, error) {
		f.record("Begin " + in.VMID + " " + in.CheckpointID)
		return contract.BeginResult{Positions: map[string]int64{}}, nil
	}, contract.ActBeginRestorePoint)
	reg(func(ctx context.Context, in contract.TransferInput) (contract.DiskResult, error) {
		f.record("Transfer " + in.VMID + "/" + in.DiskID)
		if f.transfer != nil {
			return f.transfer(ctx, in)
		}
		return contract.DiskResult{ID: in.DiskID, BytesRead: 10, BytesSent: 5, BytesWritten: 10, ChangeTracking: contract.TrackingFull}, nil
	}, contract.ActTransferDisk)
	reg(func(ctx context.Context, in contract.CommitInput) (string, error) {
		f.mu.Lock()
		f.committed = append(f.committed, in.VMID)
		f.mu.Unlock()
		return "rp-" + in.VMID, nil
	}, contract.ActCommitRestorePoint)
	reg(func(ctx context.Context, in contract.ReferencePointInput) (string, error) {
		f.record("Reference " + in.VMID)
		return "ref-" + in.CheckpointID, nil
	}, contract.ActConvertToReferencePoint)
	reg(func(ctx context.Context, in contract.RecordReferenceInput) error { return nil }, contract.ActRecordReferencePoint)
	reg(func(ctx context.Context, in contract.PositionsInput) (map[string]int64, error) {
		return map[string]int64{"0": 7 << 20, "1": 3 << 20}, nil
	}, contract.ActSessionPositions)
	reg(func(ctx context.Context, in contract.ReleaseInput) error {
		f.mu.Lock()
		f.released = append(f.released, in.CheckpointID)
		f.mu.Unlock()
		return nil
	}, contract.ActReleaseCheckpoint)
	reg(func(ctx context.Context, in contract.SweepInput) ([]string, error) {
		f.mu.Lock()
		f.sweeps = append(f.sweeps, in.VMID+" keep="+in.Keep)
		f.mu.Unlock()
		return []string{}, nil
	}, contract.ActSweepCheckpoints)
	reg(func(ctx context.Context, in contract.ProbeInput) (int, error) {
		f.record("Probe " + in.Address)
		return 2, nil
	}, contract.ActProbeDataChannel)
	reg(func(ctx context.Context, in contract.SpaceInput) (contract.SpaceStatus, error) {
		f.record("CheckSpace")
		return contract.SpaceStatus{FreeBytes: 1 << 40, NeededBytes: 1 << 30}, nil
	}, contract.ActCheckSpace)
	reg(func(ctx context.Context, channel string, n contract.Notification) error {
		f.mu.Lock()
		f.notified = append(f.notified, n)
		f.mu.Unlock()
		if f.notifyErr != nil {
			return f.notifyErr
		}
		return nil
	}, contract.ActNotify)
	reg(func(ctx context.Context, workflowID string) (contract.VMRun, error) {
		return contract.VMRun{WorkflowID: workflowID, ParentWorkflowID: "other-run", Job: f.spec.Name, Running: true}, nil
	}, contract.ActDescribeVMRun)
}

func run(t *testing.T, f *fakeHost, in contract.ReplicationInput, setup func(env *testsuite.TestWorkflowEnvironment)) (contract.ReplicationResult, error) {
	t.Helper()
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestWorkflowEnvironment()
	env.SetTestTimeout(30 * time.Second)
	f.register(env)
	if setup != nil {
		setup(env)
	}
	env.ExecuteWorkflow(contract.ReplicationWorkflow, in)
	if !env.IsWorkflowCompleted() {
		t.Fatal("workflow did not complete")
	}
	var res contract.ReplicationResult
	err := env.GetWorkflowError()
	if err == nil {
		if gerr := env.GetWorkflowResult(&res); gerr != nil {
			t.Fatal(gerr)
		}
	}
	return res, err
}

func TestReplicationSucceedsForEveryVM(t *testing.T) {
	f := newFake()
	res, err := run(t, f, contract.ReplicationInput{Job: "demo"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != contract.StatusSuccess || res.Job != "demo" || res.RunID == "" {
		t.Fatalf("result %+v", res)
	}
	if len(res.VMs) != 2 {
		t.Fatalf("want 2 VMs, got %+v", res.VMs)
	}
	for _, vm := range res.VMs {
		if vm.Status != contract.StatusSuccess || vm.RestorePoint != "rp-"+vm.ID {
			t.Errorf("VM %+v", vm)
		}
		for _, d := range vm.Disks {
			if d.Status != contract.StatusSuccess || d.BytesWritten != 10 {
				t.Errorf("VM %s disk %+v", vm.Name, d)
			}
		}
	}
	if len(f.committed) != 2 || len(f.released) != 0 {
		t.Fatalf("committed %v released %v", f.committed, f.released)
	}
}

func TestNarrowingToUnknownVMReportsIt(t *testing.T) {
	f := newFake()
	res, err := run(t, f, contract.ReplicationInput{Job: "demo", VMs: []string{"web01", "nosuch"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != contract.StatusPartial || len(res.VMs) != 2 {
		t.Fatalf("result %+v", res)
	}
	var found bool
	for _, vm := range res.VMs {
		if vm.Name == "nosuch" {
			found = true
			if vm.Status != contract.StatusFailed || vm.Error == "" {
				t.Errorf("unknown VM %+v", vm)
			}
		}
		if vm.Name == "db01" {
			t.Errorf("db01 was not asked for")
		}
	}
	if !found {
		t.Fatal("unknown VM missing from result")
	}
}

func TestUnknownJobFailsTheRun(t *testing.T) {
	f := newFake()
	_, err := run(t, f, contract.ReplicationInput{Job: "nojob"}, nil)
	if err == nil {
		t.Fatal("want an error")
	}
	if !hasErrorType(err, contract.ErrTypeBadConfig) {
		t.Fatalf("want BadConfig, got %v", err)
	}
}

func TestEmptyInputIsRejected(t *testing.T) {
	_, err := run(t, newFake(), contract.ReplicationInput{}, nil)
	if err == nil {
		t.Fatal("want an error for an empty job name")
	}
}

func TestWindowExpiryKeepsCheckpointAndReportsPartial(t *testing.T) {
	f := newFake()
	// With activities running the test clock follows the wall clock.
	f.spec.Window = time.Second
	f.transfer = func(ctx context.Context, in contract.TransferInput) (contract.DiskResult, error) {
		// A transfer longer than the window: it stops when cancelled, with its figures.
		for {
			select {
			case <-ctx.Done():
				return contract.DiskResult{}, temporal.NewCanceledError(contract.DiskResult{ID: in.DiskID, Position: 7 << 20})
			case <-time.After(10 * time.Millisecond):
				activity.RecordHeartbeat(ctx, 1)
			}
		}
	}
	res, err := run(t, f, contract.ReplicationInput{Job: "demo"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != contract.StatusPartial {
		t.Fatalf("want partial, got %+v", res)
	}
	for _, vm := range res.VMs {
		if vm.Status != contract.StatusPartial {
			t.Errorf("VM %+v", vm)
		}
		for _, d := range vm.Disks {
			want := int64(7 << 20)
			if d.ID == "1" {
				want = 3 << 20
			}
			if d.Status != contract.StatusPartial || d.Position != want {
				t.Errorf("disk %+v", d)
			}
		}
	}
	if len(f.released) != 0 || len(f.committed) != 0 {
		t.Fatalf("window expiry must keep checkpoints and commit nothing: released %v committed %v", f.released, f.committed)
	}
}

func TestInterruptedVMsResumeFirstFromTheirCheckpoint(t *testing.T) {
	f := newFake()
	f.spec.Parallelism = 1
	f.open = []string{"id-db"}
	f.replicaOpen["id-db"] = "cp-old"
	_, err := run(t, f, contract.ReplicationInput{Job: "demo"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var firstCheckpoint string
	for _, c := range f.calls {
		if len(c) > 10 && c[:10] == "Checkpoint" {
			firstCheckpoint = c
			break
		}
	}
	if firstCheckpoint != "Checkpoint db01 reuse=cp-old" {
		t.Fatalf("first checkpoint call %q, calls %v", firstCheckpoint, f.calls)
	}
}

func TestVMNotFoundFailsOnlyThatVM(t *testing.T) {
	f := newFake()
	f.checkpoint = func(in contract.CheckpointInput) (contract.CheckpointResult, error) {
		if in.VMName == "web01" {
			return contract.CheckpointResult{}, temporal.NewNonRetryableApplicationError("vm web01 not found", contract.ErrTypeVMNotFound, nil)
		}
		return contract.CheckpointResult{ID: "cp-" + in.VMID}, nil
	}
	res, err := run(t, f, contract.ReplicationInput{Job: "demo"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != contract.StatusPartial {
		t.Fatalf("want partial, got %s", res.Status)
	}
	for _, vm := range res.VMs {
		want := contract.StatusSuccess
		if vm.Name == "web01" {
			want = contract.StatusFailed
		}
		if vm.Status != want {
			t.Errorf("VM %s status %s want %s (%s)", vm.Name, vm.Status, want, vm.Error)
		}
	}
}

func TestTransientTransferFailureIsRetriedWithinTheRun(t *testing.T) {
	f := newFake()
	var mu sync.Mutex
	attempts := map[string]int{}
	f.transfer = func(ctx context.Context, in contract.TransferInput) (contract.DiskResult, error) {
		mu.Lock()
		attempts[in.VMID+in.DiskID]++
		n := attempts[in.VMID+in.DiskID]
		mu.Unlock()
		if n < 3 {
			return contract.DiskResult{}, errors.New("connection reset by peer")
		}
		return contract.DiskResult{ID: in.DiskID, ResumedFromByte: 4096}, nil
	}
	res, err := run(t, f, contract.ReplicationInput{Job: "demo"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != contract.StatusSuccess {
		t.Fatalf("want success after retries, got %+v", res)
	}
	for k, n := range attempts {
		if n != 3 {
			t.Errorf("%s: %d attempts", k, n)
		}
	}
}

func TestCancellationReleasesCheckpoints(t *testing.T) {
	f := newFake()
	f.transfer = func(ctx context.Context, in contract.TransferInput) (contract.DiskResult, error) {
		for {
			select {
			case <-ctx.Done():
				return contract.DiskResult{}, temporal.NewCanceledError()
			case <-time.After(10 * time.Millisecond):
				activity.RecordHeartbeat(ctx, 1)
			}
		}
	}
	_, err := run(t, f, contract.ReplicationInput{Job: "demo"}, func(env *testsuite.TestWorkflowEnvironment) {
		env.RegisterDelayedCallback(env.CancelWorkflow, time.Second)
	})
	if err == nil {
		t.Fatal("want a cancelled run")
	}
	if len(f.released) != 2 {
		t.Fatalf("want both checkpoints released, got %v", f.released)
	}
	if len(f.committed) != 0 {
		t.Fatalf("nothing may be committed, got %v", f.committed)
	}
}

// hasErrorType reports whether any application error in err's chain has that type.
func hasErrorType(err error, typ string) bool {
	for err != nil {
		var app *temporal.ApplicationError
		if !errors.As(err, &app) {
			return false
		}
		if app.Type() == typ {
			return true
		}
		err = app.Unwrap()
	}
	return false
}

func TestTransferStoppedByItsDeadlineIsPartial(t *testing.T) {
	f := newFake()
	f.spec.Window = time.Second
	f.transfer = func(ctx context.Context, in contract.TransferInput) (contract.DiskResult, error) {
		if in.Deadline.IsZero() {
			return contract.DiskResult{}, errors.New("the transfer must know the window's deadline")
		}
		// The activity stops at the deadline by itself, before any cancellation reaches it.
		d := contract.DiskResult{ID: in.DiskID, Position: 5 << 20, BytesRead: 5 << 20}
		return d, temporal.NewNonRetryableApplicationError("backup window closed", contract.ErrTypeWindowClosed, nil, d)
	}
	res, err := run(t, f, contract.ReplicationInput{Job: "demo"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != contract.StatusPartial {
		t.Fatalf("want partial, got %+v", res)
	}
	for _, vm := range res.VMs {
		for _, d := range vm.Disks {
			if d.Status != contract.StatusPartial || d.BytesRead != 5<<20 {
				t.Errorf("VM %s disk %+v", vm.Name, d)
			}
		}
	}
	if len(f.released) != 0 || len(f.committed) != 0 {
		t.Fatalf("a closed window keeps checkpoints and commits nothing: released %v committed %v", f.released, f.committed)
	}
}

func TestRunOutsideItsWindowHoursDoesNothing(t *testing.T) {
	f := newFake()
	opens := time.Date(2026, 12, 3, 20, 0, 0, 0, time.FixedZone("", 3600))
	f.spec.WindowHours, f.spec.Timezone, f.spec.WindowOpens = "Mon-Fri 20:00-06:00", "Europe/Paris", opens
	res, err := run(t, f, contract.ReplicationInput{Job: "demo"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != contract.StatusPartial || len(res.VMs) != 2 {
		t.Fatalf("want every VM partial, got %+v", res)
	}
	for _, vm := range res.VMs {
		if vm.Status != contract.StatusPartial || !strings.Contains(vm.Error, "opens at 2026-12-03T20:00:00+01:00") {
			t.Errorf("VM %s: %s %q", vm.Name, vm.Status, vm.Error)
		}
	}
	for _, c := range f.calls {
		if strings.HasPrefix(c, "Checkpoint") || strings.HasPrefix(c, "Prepare") {
			t.Fatalf("a run outside its window called %s", c)
		}
	}
}

func TestWindowHoursEndBeforeWindowWins(t *testing.T) {
	for _, c := range []struct {
		name   string
		window time.Duration
		hours  time.Duration
		want   time.Duration
	}{
		{"hours end first", 10 * time.Hour, 2 * time.Hour, 2 * time.Hour},
		{"window ends first", time.Hour, 5 * time.Hour, time.Hour},
		{"hours only", 0, 3 * time.Hour, 3 * time.Hour},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFake()
			var mu sync.Mutex
			var deadlines []time.Time
			f.spec.Window = c.window
			var start time.Time
			f.transfer = func(ctx context.Context, in contract.TransferInput) (contract.DiskResult, error) {
				mu.Lock()
				deadlines = append(deadlines, in.Deadline)
				mu.Unlock()
				return contract.DiskResult{ID: in.DiskID}, nil
			}
			res, err := run(t, f, contract.ReplicationInput{Job: "demo"}, func(env *testsuite.TestWorkflowEnvironment) {
				start = env.Now()
				f.spec.WindowHours, f.spec.WindowEnd = "Mon-Sun 20:00-06:00", start.Add(c.hours)
			})
			if err != nil {
				t.Fatal(err)
			}
			requireAllSuccess(t, res)
			if len(deadlines) != 3 {
				t.Fatalf("transfers %d", len(deadlines))
			}
			for _, d := range deadlines {
				if got := d.Sub(start); got < c.want-time.Minute || got > c.want+time.Minute {
					t.Fatalf("transfer deadline %v after the start, want %v", got, c.want)
				}
			}
		})
	}
}

func requireAllSuccess(t *testing.T, res contract.ReplicationResult) {
	t.Helper()
	if res.Status != contract.StatusSuccess {
		t.Fatalf("want success: %+v", res)
	}
}

func TestFailedVMIsTriedAgainWithinTheRun(t *testing.T) {
	for _, c := range []struct {
		name         string
		err          error
		retries      int
		wantStatus   string
		wantAttempts int
	}{
		{"a replica locked by another process passes", temporal.NewNonRetryableApplicationError("replica locked", contract.ErrTypeReplicaLocked, nil), 3, contract.StatusSuccess, 2},
		{"a bad setting is not retried", temporal.NewNonRetryableApplicationError("bad name", contract.ErrTypeBadConfig, nil), 3, contract.StatusFailed, 1},
		{"retries: 0", temporal.NewNonRetryableApplicationError("replica locked", contract.ErrTypeReplicaLocked, nil), 0, contract.StatusFailed, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFake()
			f.spec.Retries, f.spec.RetryWait = c.retries, 10*time.Minute
			failed := false
			f.prepare = func(vm contract.VM) error {
				f.mu.Lock()
				defer f.mu.Unlock()
				if vm.Name == "web01" && !failed {
					failed = true
					return c.err
				}
				return nil
			}
			res, err := run(t, f, contract.ReplicationInput{Job: "demo", VMs: []string{"web01"}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			vm := res.VMs[0]
			if vm.Status != c.wantStatus || vm.Attempts != c.wantAttempts {
				t.Fatalf("web01 %s after %d attempts (%q); want %s after %d", vm.Status, vm.Attempts, vm.Error, c.wantStatus, c.wantAttempts)
			}
		})
	}
}

func TestRunEndIsNotifiedAndAFailedNotificationChangesNothing(t *testing.T) {
	f := newFake()
	f.spec.Notify = []string{"webhook"}
	f.notifyErr = errors.New("webhook answered 503")
	res, err := run(t, f, contract.ReplicationInput{Job: "demo"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	requireAllSuccess(t, res)
	if len(f.notified) < 1 || f.notified[0].Result.Status != contract.StatusSuccess || len(f.notified[0].Result.VMs) != 2 {
		t.Fatalf("notifications %+v", f.notified)
	}

	// A run that fails its checks is notified with its error.
	f = newFake()
	f.spec.Notify = []string{"webhook"}
	f.spec.TargetAddress = "127.0.0.1:1"
	_, err = run(t, f, contract.ReplicationInput{Job: "demo"}, func(env *testsuite.TestWorkflowEnvironment) {
		env.OnActivity(contract.ActProbeDataChannel, mock.Anything, mock.Anything).Return(0,
			temporal.NewNonRetryableApplicationError("targets[dr01].address 127.0.0.1:1: connection refused", contract.ErrTypeDataChannel, nil))
	})
	if err == nil {
		t.Fatal("the run did not fail")
	}
	if len(f.notified) != 1 || !strings.Contains(f.notified[0].Error, "targets[dr01].address") || f.notified[0].Result.Status != contract.StatusFailed {
		t.Fatalf("notifications %+v", f.notified)
	}
}

func TestUnsupportedVMFailsAtTheChecksBeforeAnyCheckpoint(t *testing.T) {
	f := newFake()
	const why = `disk scsi-0-1 (\\.\PHYSICALDRIVE4) is a pass-through disk: Hyper-V cannot checkpoint it (attach a VHDX instead)`
	f.vms[0].Unsupported = why
	var spaceFor []string
	res, err := run(t, f, contract.ReplicationInput{Job: "demo"}, func(env *testsuite.TestWorkflowEnvironment) {
		env.OnActivity(contract.ActCheckSpace, mock.Anything, mock.Anything).Return(
			func(ctx context.Context, in contract.SpaceInput) (contract.SpaceStatus, error) {
				for _, vm := range in.VMs {
					spaceFor = append(spaceFor, vm.Name)
				}
				return contract.SpaceStatus{FreeBytes: 1 << 40, NeededBytes: 1 << 30}, nil
			})
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != contract.StatusPartial {
		t.Fatalf("run %s, want partial: %+v", res.Status, res)
	}
	var check *contract.Check
	for i := range res.Checks {
		if strings.HasPrefix(res.Checks[i].Name, "the job's VMs can be replicated") {
			check = &res.Checks[i]
		}
	}
	if check == nil || check.OK || !strings.Contains(check.Detail, "VM web01: "+why) {
		t.Fatalf("checks %+v: want a failed check naming web01's pass-through disk", res.Checks)
	}
	for _, vm := range res.VMs {
		switch vm.Name {
		case "web01":
			if vm.Status != contract.StatusFailed || !strings.Contains(vm.Error, why) || vm.Retryable {
				t.Errorf("web01: %+v; want failed, not retryable, naming the disk", vm)
			}
			if len(vm.Disks) != 1 || vm.Disks[0].Status != contract.StatusFailed {
				t.Errorf("web01 disks %+v", vm.Disks)
			}
		case "db01":
			if vm.Status != contract.StatusSuccess {
				t.Errorf("db01: %+v", vm)
			}
		}
	}
	for _, c := range f.calls {
		if strings.Contains(c, "web01") || strings.Contains(c, "id-web") {
			t.Errorf("the refused VM reached %q", c)
		}
	}
	if slices.Contains(spaceFor, "web01") || !slices.Contains(spaceFor, "db01") {
		t.Errorf("space estimated for %v, want db01 only", spaceFor)
	}
	if len(f.committed) != 1 || f.committed[0] != "id-db" || len(f.sweeps) != 1 {
		t.Errorf("committed %v sweeps %v", f.committed, f.sweeps)
	}
}

// TestCheckpointSweepsInOneRoundTrip checks that a new run asks the
// checkpoint activity to sweep the job's leftovers, instead of a separate
// activity after it, and that what the sweep could not remove is the VM's
// warning; a checkpoint that fails is still followed by a sweep of its own
// that keeps the interrupted point's checkpoint.
func TestCheckpointSweepsInOneRoundTrip(t *testing.T) {
	f := newFake()
	f.checkpoint = func(in contract.CheckpointInput) (contract.CheckpointResult, error) {
		if in.VMID == "id-db" {
			return contract.CheckpointResult{}, temporal.NewNonRetryableApplicationError("host refused", contract.ErrTypeBadInput, nil)
		}
		return contract.CheckpointResult{ID: "cp-" + in.VMID, SweepError: "removing checkpoint x: access denied"}, nil
	}
	f.replicaOpen["id-db"] = "cp-open"
	res, err := run(t, f, contract.ReplicationInput{Job: "demo"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"id-web with the checkpoint": true, "id-db with the checkpoint": true, "id-db keep=cp-open": true}
	if len(f.sweeps) != len(want) {
		t.Fatalf("sweeps %v, want %v", f.sweeps, want)
	}
	for _, s := range f.sweeps {
		if !want[s] {
			t.Fatalf("sweeps %v, want %v", f.sweeps, want)
		}
	}
	for _, vm := range res.VMs {
		if vm.Name == "web01" && (vm.Status != contract.StatusSuccess || !strings.Contains(vm.Warning, "could not be removed: removing checkpoint x: access denied")) {
			t.Errorf("web01: %+v; want success with the sweep's failure as its warning", vm)
		}
	}
}

// TestRPOLagIsMeasuredAndFlagged checks the recovery point objective as
// a run reports it: a VM whose new point's data is seconds old is within
// its rpo, with the checkpoint's time as its point's time; a VM whose run
// failed keeps its older point, whose age past the rpo flags it, says so
// in its warning and is counted in the run's result.
func TestRPOLagIsMeasuredAndFlagged(t *testing.T) {
	start := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	taken := start.Add(-2 * time.Second)
	old := start.Add(-time.Hour)
	f := newFake()
	f.spec.RPO = 30 * time.Second
	f.newestPoint = map[string]time.Time{"id-web": old, "id-db": old}
	f.checkpoint = func(in contract.CheckpointInput) (contract.CheckpointResult, error) {
		return contract.CheckpointResult{ID: "cp-" + in.VMID, Taken: taken}, nil
	}
	f.transfer = func(ctx context.Context, in contract.TransferInput) (contract.DiskResult, error) {
		if in.VMID == "id-db" {
			return contract.DiskResult{}, temporal.NewNonRetryableApplicationError("disk unreadable", contract.ErrTypeBadInput, nil)
		}
		return contract.DiskResult{ID: in.DiskID, ChangeTracking: contract.TrackingFull}, nil
	}
	res, err := run(t, f, contract.ReplicationInput{Job: "demo"}, func(env *testsuite.TestWorkflowEnvironment) { env.SetStartTime(start) })
	if err != nil {
		t.Fatal(err)
	}
	if res.RPOExceeded != 1 {
		t.Errorf("rpoExceeded %d, want 1 (db01)", res.RPOExceeded)
	}
	for _, vm := range res.VMs {
		switch vm.Name {
		case "web01":
			if vm.Status != contract.StatusSuccess || vm.RPOExceeded || !vm.PointTime.Equal(taken) || vm.LagSeconds < 2 || vm.LagSeconds > 30 {
				t.Errorf("web01: %+v; want its new point, of %s, within the rpo", vm, taken)
			}
		case "db01":
			if vm.Status != contract.StatusFailed || !vm.RPOExceeded || !vm.PointTime.Equal(old) || vm.LagSeconds < 3600 ||
				!strings.Contains(vm.Warning, "rpo 30s missed: the newest restore point is 1h0m") {
				t.Errorf("db01: %+v; want its hour-old point flagged past the rpo", vm)
			}
		}
	}
}
