package activities

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/disk"
	"github.com/replicator/replicator/internal/provider"
	"github.com/replicator/replicator/internal/replica"
	"github.com/replicator/replicator/internal/transfer"
	"github.com/replicator/replicator/internal/vhdx"
)

// failbackBlockSize is the grid of a failback's blocks: small, so that what
// travels stays close to what the replica VM wrote (the children know it to
// the sector, and whole blocks are sent).
const failbackBlockSize = 64 << 10

// failbackCheckpoint names the data of a failback on the channel.
const failbackCheckpoint = "failback"

// PrepareFailback powers the replica VM off, so that its disks hold their
// final content, and says which disks go back. The replica must be in failover.
func (t *Target) PrepareFailback(ctx context.Context, in contract.ReplicaOpActivityInput) (contract.FailbackPlan, error) {
	r, info, err := t.opReplica(in)
	if err != nil {
		return contract.FailbackPlan{}, err
	}
	l, err := r.Lifecycle()
	if err != nil {
		return contract.FailbackPlan{}, classify(err)
	}
	if l.State != replica.StateFailover && !(l.State == replica.StateFailback && l.Operation == in.Operation) {
		return contract.FailbackPlan{}, stateRefused(in, info.Name, "failback", l, replica.StateFailover)
	}
	if err := t.needHost(); err != nil {
		return contract.FailbackPlan{}, err
	}
	if err := t.Host.StopVM(ctx, l.ReplicaVM); err != nil {
		return contract.FailbackPlan{}, classify(err)
	}
	vm, err := t.Host.ReplicaVM(ctx, l.ReplicaVM)
	if err != nil {
		return contract.FailbackPlan{}, classify(err)
	}
	plan := contract.FailbackPlan{VMID: info.ID, VM: info.Name}
	if cfg, ok := t.Host.(interface {
		VMConfig(context.Context, string) (provider.VMConfig, error)
	}); ok {
		if c, err := cfg.VMConfig(ctx, vm.ID); err == nil {
			plan.Config, _ = json.Marshal(c)
		}
	}
	for _, d := range vm.Disks {
		plan.Disks = append(plan.Disks, contract.FailbackDisk{ID: d.ID, Size: d.VirtualSize})
	}
	return plan, nil
}

// ownAllocated is what one VHDX file of a chain holds itself.
func ownAllocated(path string) ([]disk.Extent, error) {
	f, err := vhdx.OpenWith(path, vhdx.OpenOptions{IgnoreParentLinkage: true})
	if err != nil {
		return nil, fmt.Errorf("failback: %w", err)
	}
	defer f.Close()
	return f.OwnAllocated(), nil
}

// FinishFailback records the replica in failback, and where it went.
func (t *Target) FinishFailback(ctx context.Context, in contract.FailbackChannelInput, op contract.ReplicaOpActivityInput) (contract.ReplicaOpResult, error) {
	if err := transfer.ValidName("vm", in.VMID); err != nil {
		return contract.ReplicaOpResult{}, nonRetryable(contract.ErrTypeBadInput, err)
	}
	if in.Host == "" || len(in.Host) > maxNameLen {
		return contract.ReplicaOpResult{}, nonRetryable(contract.ErrTypeBadInput, fmt.Errorf("failback host: %d bytes, want 1 to %d", len(in.Host), maxNameLen))
	}
	r, info, err := t.opReplica(op)
	if err != nil {
		return contract.ReplicaOpResult{}, err
	}
	if _, err := t.Agent.UpdateLifecycle(ctx, op.Job, info.ID, func(cur replica.Lifecycle) (replica.Lifecycle, error) {
		if cur.State == replica.StateFailback && cur.Operation == op.Operation {
			return cur, nil
		}
		if cur.State != replica.StateFailover {
			return cur, &replica.StateError{Job: op.Job, VM: info.Name, State: cur.State, Since: cur.Since, Operation: "failback", Want: []replica.State{replica.StateFailover}}
		}
		cur.State, cur.Operation = replica.StateFailback, op.Operation
		cur.Failback = &replica.FailbackRecord{Host: in.Host, VM: in.VMID}
		return cur, nil
	}); err != nil {
		return contract.ReplicaOpResult{}, classify(err)
	}
	return t.opResult(ctx, op.Job, r, info)
}

// CommitFailback makes a failed-back replica ready: the replica VM goes back
// on the newest point, its failover children discarded (the source has
// their content now, and the next run brings it back as a new point).
func (t *Target) CommitFailback(ctx context.Context, in contract.ReplicaOpActivityInput) (contract.ReplicaOpResult, error) {
	r, info, err := t.opReplica(in)
	if err != nil {
		return contract.ReplicaOpResult{}, err
	}
	l, err := r.Lifecycle()
	if err != nil {
		return contract.ReplicaOpResult{}, classify(err)
	}
	done := l.State == replica.StateReady && l.Operation == in.Operation
	if !done && l.State != replica.StateFailback {
		return contract.ReplicaOpResult{}, stateRefused(in, info.Name, "failback commit", l, replica.StateFailback)
	}
	if err := t.needHost(); err != nil {
		return contract.ReplicaOpResult{}, err
	}
	if !done {
		if _, err := t.Agent.UpdateLifecycle(ctx, in.Job, info.ID, func(cur replica.Lifecycle) (replica.Lifecycle, error) {
			if cur.State != replica.StateFailback {
				return cur, &replica.StateError{Job: in.Job, VM: info.Name, State: cur.State, Since: cur.Since, Operation: "failback commit", Want: []replica.State{replica.StateFailback}}
			}
			return replica.Lifecycle{State: replica.StateReady, Operation: in.Operation, ReplicaVM: cur.ReplicaVM, Host: cur.Host, VMPoint: cur.VMPoint}, nil
		}); err != nil {
			return contract.ReplicaOpResult{}, classify(err)
		}
	}
	if err := t.registerOnNewest(ctx, in.Job, info.ID, in.Operation, replica.StateReady); err != nil {
		return contract.ReplicaOpResult{}, classify(err)
	}
	return t.opResult(ctx, in.Job, r, info)
}

// UndoFailback returns a failed-back replica to failover: the replica VM,
// whose disks the failback left as they were, is started again (the
// workflow shuts the source VM down first).
func (t *Target) UndoFailback(ctx context.Context, in contract.ReplicaOpActivityInput) (contract.ReplicaOpResult, error) {
	r, info, err := t.opReplica(in)
	if err != nil {
		return contract.ReplicaOpResult{}, err
	}
	l, err := r.Lifecycle()
	if err != nil {
		return contract.ReplicaOpResult{}, classify(err)
	}
	done := l.State == replica.StateFailover && l.Operation == in.Operation
	if !done && l.State != replica.StateFailback {
		return contract.ReplicaOpResult{}, stateRefused(in, info.Name, "failback undo", l, replica.StateFailback)
	}
	if err := t.needHost(); err != nil {
		return contract.ReplicaOpResult{}, err
	}
	if !done {
		if _, err := t.Agent.UpdateLifecycle(ctx, in.Job, info.ID, func(cur replica.Lifecycle) (replica.Lifecycle, error) {
			if cur.State != replica.StateFailback {
				return cur, &replica.StateError{Job: in.Job, VM: info.Name, State: cur.State, Since: cur.Since, Operation: "failback undo", Want: []replica.State{replica.StateFailback}}
			}
			cur.State, cur.Operation, cur.Failback = replica.StateFailover, in.Operation, nil
			return cur, nil
		}); err != nil {
			return contract.ReplicaOpResult{}, classify(err)
		}
	}
	if err := t.Host.StartVM(ctx, l.ReplicaVM); err != nil {
		return contract.ReplicaOpResult{}, classify(err)
	}
	return t.opResult(ctx, in.Job, r, info)
}
