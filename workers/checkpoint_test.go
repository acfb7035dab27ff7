package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/temporal"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/provider"
	"github.com/replicator/replicator/internal/provider/lab"
)

// fault is what the injector does to one activity of the VM workflow.
type fault struct {
	activity string
	// fail returns a non-retryable error; after runs the activity first.
	fail, after bool
	// failOnce fails only the first attempt (retryable), after the activity ran.
	failOnce bool
	// locked fails as a replica another process holds (a failure that passes).
	locked bool
	// cancel cancels the job run when the activity starts; block holds the
	// activity (heartbeating) until it is cancelled, as a slow host would.
	cancel, block bool
}

// injector is a worker interceptor that applies the current fault.
type injector struct {
	interceptor.WorkerInterceptorBase
	mu     sync.Mutex
	f      fault
	fired  bool
	cancel func()
}

func (in *injector) set(f fault, cancel func()) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.f, in.fired, in.cancel = f, false, cancel
}

func (in *injector) take(name string) (fault, func(), bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.f.activity != name || in.fired {
		return fault{}, nil, false
	}
	in.fired = true
	return in.f, in.cancel, true
}

func (in *injector) InterceptActivity(ctx context.Context, next interceptor.ActivityInboundInterceptor) interceptor.ActivityInboundInterceptor {
	return &injectedActivity{ActivityInboundInterceptorBase: interceptor.ActivityInboundInterceptorBase{Next: next}, in: in}
}

type injectedActivity struct {
	interceptor.ActivityInboundInterceptorBase
	in *injector
}

var errInjected = errors.New("injected fault")

func (a *injectedActivity) ExecuteActivity(ctx context.Context, in *interceptor.ExecuteActivityInput) (interface{}, error) {
	f, cancel, ok := a.in.take(activity.GetInfo(ctx).ActivityType.Name)
	if !ok {
		return a.Next.ExecuteActivity(ctx, in)
	}
	var res interface{}
	if f.after || f.failOnce {
		var err error
		if res, err = a.Next.ExecuteActivity(ctx, in); err != nil {
			return res, err
		}
	}
	switch {
	case f.locked:
		return nil, temporal.NewNonRetryableApplicationError("replica is locked by agent elsewhere", contract.ErrTypeReplicaLocked, nil)
	case f.failOnce:
		return nil, temporal.NewApplicationError(errInjected.Error()+" after the host did its part", "Injected")
	case f.fail:
		return nil, temporal.NewNonRetryableApplicationError(errInjected.Error(), "Injected", nil)
	}
	if f.cancel {
		go cancel()
	}
	if f.block {
		// Hold the activity until its cancellation arrives with a heartbeat's answer.
		deadline := time.Now().Add(30 * time.Second)
		for ctx.Err() == nil && time.Now().Before(deadline) {
			activity.RecordHeartbeat(ctx, nil)
			time.Sleep(200 * time.Millisecond)
		}
		return nil, ctx.Err()
	}
	return res, nil
}

// jobCheckpoints lists the checkpoints the demo job holds of a lab VM.
func jobCheckpoints(t *testing.T, h *harness, vmName string) []string {
	t.Helper()
	ctx := context.Background()
	host := lab.New("hv01", h.cfg.Hosts[0].Path)
	vms, err := host.VMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, vm := range vms {
		if vm.Name != vmName {
			continue
		}
		cps, err := host.Checkpoints(ctx, vm.ID)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, cp := range cps {
			if provider.MadeByJob(cp.Name, "demo") {
				out = append(out, cp.ID+" "+cp.Name)
			}
		}
		return out
	}
	t.Fatalf("no lab VM %s", vmName)
	return nil
}

// TestEveryCheckpointReleasedOrReused injects a failure, a cancellation or
// the end of the backup window at each activity of a VM's run, on the real
// lab host and agent. Afterwards the host holds no checkpoint of the job
// except the one the replica's interrupted point continues from (only when
// the window closed during the transfer), and the next run succeeds with a
// replica equal to the source and leaves no checkpoint.
func TestEveryCheckpointReleasedOrReused(t *testing.T) {
	h := newHarness(t, roleSet{}, false, nil)
	inj := &injector{}
	h.interceptors = []interceptor.WorkerInterceptor{inj}
	h.start(roleSet{jobs: true, proxy: true, target: true})
	in := contract.ReplicationInput{Job: "demo", VMs: []string{"web01"}}

	type scenario struct {
		name   string
		f      fault
		window time.Duration
		// kept: checkpoints the job may hold afterwards; succeeds: the run
		// itself ends success (the fault was retried away).
		kept      int
		succeeds  bool
		cancelled bool
	}
	var scenarios []scenario
	for _, act := range []string{contract.ActPrepareReplica, contract.ActBeginRestorePoint, contract.ActTransferDisk,
		contract.ActCommitRestorePoint, contract.ActConvertToReferencePoint, contract.ActRecordReferencePoint} {
		scenarios = append(scenarios, scenario{name: "fail " + act, f: fault{activity: act, fail: true}})
	}
	scenarios = append(scenarios,
		scenario{name: "fail CreateCheckpoint after the snapshot exists", f: fault{activity: contract.ActCreateCheckpoint, fail: true, after: true}},
		scenario{name: "CreateCheckpoint retried after the snapshot exists", f: fault{activity: contract.ActCreateCheckpoint, failOnce: true}, succeeds: true},
	)
	for _, act := range []string{contract.ActPrepareReplica, contract.ActCreateCheckpoint, contract.ActBeginRestorePoint, contract.ActTransferDisk} {
		after := act == contract.ActCreateCheckpoint // the host's checkpoint job has finished, its answer not yet
		scenarios = append(scenarios,
			scenario{name: "cancel during " + act, f: fault{activity: act, cancel: true, block: true, after: after}, cancelled: true},
		)
		kept := 0
		if act == contract.ActTransferDisk {
			kept = 1 // the next run continues the interrupted point from it
		}
		scenarios = append(scenarios,
			scenario{name: "window closes during " + act, f: fault{activity: act, block: true, after: after}, window: 3 * time.Second, kept: kept})
	}

	for i, sc := range scenarios {
		t.Run(strings.ReplaceAll(sc.name, " ", "_"), func(t *testing.T) {
			h.cfg.Jobs[0].Window = sc.window
			h.writeConfig()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			id := fmt.Sprintf("demo-faults-%d", i)
			inj.set(sc.f, func() { _ = h.c.CancelWorkflow(context.Background(), id, "") })
			run, err := h.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: "replication"}, contract.ReplicationWorkflow, in)
			if err != nil {
				t.Fatal(err)
			}
			var res contract.ReplicationResult
			err = run.Get(ctx, &res)
			switch {
			case sc.cancelled:
				var canceled *temporal.CanceledError
				if !errors.As(err, &canceled) {
					t.Fatalf("want the run cancelled, got %v %+v", err, res)
				}
			case err != nil:
				t.Fatalf("run: %v", err)
			case sc.succeeds:
				requireSuccess(t, res)
			case res.Status == contract.StatusSuccess && (sc.f.activity == contract.ActConvertToReferencePoint || sc.f.activity == contract.ActRecordReferencePoint):
				// The point is committed; the next run compares digests.
				if !strings.Contains(res.VMs[0].Warning, "injected fault") {
					t.Fatalf("the VM's result does not warn of the failure: %+v", res)
				}
			case res.Status == contract.StatusSuccess:
				t.Fatalf("the fault did not stop the run: %+v", res)
			}
			if cps := jobCheckpoints(t, h, "web01"); len(cps) > sc.kept {
				t.Fatalf("after %s the host holds %d checkpoints of the job (want at most %d): %v\nresult %+v", sc.name, len(cps), sc.kept, cps, res)
			}

			// The next run, with no fault and no window, succeeds and leaves none.
			inj.set(fault{}, nil)
			h.cfg.Jobs[0].Window = 0
			h.writeConfig()
			next := h.run(in)
			requireSuccess(t, next)
			h.checkReplicaMatchesSource(next)
			if cps := jobCheckpoints(t, h, "web01"); len(cps) != 0 {
				t.Fatalf("after a successful run the host holds checkpoints of the job: %v", cps)
			}
		})
	}
}

// TestSweepLeavesOtherCheckpointsAlone: checkpoints an administrator or
// another job made are never removed; the job's own leftovers are.
func TestSweepLeavesOtherCheckpointsAlone(t *testing.T) {
	h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, false, func(c *config.Config) {})
	ctx := context.Background()
	host := lab.New("hv01", h.cfg.Hosts[0].Path)
	vms, err := host.VMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var id string
	for _, vm := range vms {
		if vm.Name == "web01" {
			id = vm.ID
		}
	}
	admin, err := host.CreateCheckpoint(ctx, id, provider.CheckpointOptions{Name: "before patching"})
	if err != nil {
		t.Fatal(err)
	}
	other, err := host.CreateCheckpoint(ctx, id, provider.CheckpointOptions{Name: provider.CheckpointName("nightly", "web01")})
	if err != nil {
		t.Fatal(err)
	}
	leftover, err := host.CreateCheckpoint(ctx, id, provider.CheckpointOptions{Name: provider.CheckpointName("demo", "web01")})
	if err != nil {
		t.Fatal(err)
	}
	res := h.run(contract.ReplicationInput{Job: "demo", VMs: []string{"web01"}})
	requireSuccess(t, res)
	cps, err := host.Checkpoints(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, cp := range cps {
		have[cp.ID] = true
	}
	if !have[admin.ID] || !have[other.ID] || have[leftover.ID] || len(cps) != 2 {
		t.Fatalf("after the run the VM holds %+v; want the administrator's %s and job nightly's %s only", cps, admin.ID, other.ID)
	}
}

// TestVMRetriedWithinTheRun: a VM whose first attempt fails with a failure
// that passes (its replica held by another process) succeeds within the
// same run on its second attempt, retryWait later.
func TestVMRetriedWithinTheRun(t *testing.T) {
	h := newHarness(t, roleSet{}, false, func(c *config.Config) { c.Jobs[0].RetryWait = time.Second })
	inj := &injector{}
	h.interceptors = []interceptor.WorkerInterceptor{inj}
	h.start(roleSet{jobs: true, proxy: true, target: true})
	inj.set(fault{activity: contract.ActPrepareReplica, locked: true}, nil)
	res := h.run(contract.ReplicationInput{Job: "demo", VMs: []string{"web01"}})
	requireSuccess(t, res)
	if res.VMs[0].Attempts != 2 {
		t.Fatalf("web01 took %d attempts, want 2: %+v", res.VMs[0].Attempts, res.VMs[0])
	}
	h.checkReplicaMatchesSource(res)
}
