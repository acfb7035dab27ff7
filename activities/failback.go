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
	op, err := t.beginOp(in, opFailback)
	if err != nil {
		return contract.FailbackPlan{}, err
	}
	replicaVM := op.lifecycle.ReplicaVM
	if err := t.Host.StopVM(ctx, replicaVM); err != nil {
		return contract.FailbackPlan{}, classify(err)
	}
	vm, err := t.Host.ReplicaVM(ctx, replicaVM)
	if err != nil {
		return contract.FailbackPlan{}, classify(err)
	}
	plan := contract.FailbackPlan{VMID: op.info.ID, VM: op.info.Name}
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
func (t *Target) FinishFailback(ctx context.Context, in contract.FailbackChannelInput, opIn contract.ReplicaOpActivityInput) (contract.ReplicaOpResult, error) {
	if err := transfer.ValidName("vm", in.VMID); err != nil {
		return contract.ReplicaOpResult{}, nonRetryable(contract.ErrTypeBadInput, err)
	}
	if in.Host == "" || len(in.Host) > maxNameLen {
		return contract.ReplicaOpResult{}, nonRetryable(contract.ErrTypeBadInput, fmt.Errorf("failback host: %d bytes, want 1 to %d", len(in.Host), maxNameLen))
	}
	op, err := t.beginOp(opIn, opFailback)
	if err != nil {
		return contract.ReplicaOpResult{}, err
	}
	if err := t.record(ctx, op, func(cur replica.Lifecycle) replica.Lifecycle {
		cur.State, cur.Operation = replica.StateFailback, opIn.Operation
		cur.Failback = &replica.FailbackRecord{Host: in.Host, VM: in.VMID}
		return cur
	}); err != nil {
		return contract.ReplicaOpResult{}, err
	}
	return t.result(ctx, op)
}

// CommitFailback makes a failed-back replica ready: the replica VM goes back
// on the newest point, its failover children discarded (the source has
// their content now, and the next run brings it back as a new point).
func (t *Target) CommitFailback(ctx context.Context, in contract.ReplicaOpActivityInput) (contract.ReplicaOpResult, error) {
	op, err := t.beginOp(in, opFailbackCommit)
	if err != nil {
		return contract.ReplicaOpResult{}, err
	}
	return t.backToReady(ctx, op)
}

// UndoFailback returns a failed-back replica to failover: the replica VM,
// whose disks the failback left as they were, is started again (the
// workflow shuts the source VM down first).
func (t *Target) UndoFailback(ctx context.Context, in contract.ReplicaOpActivityInput) (contract.ReplicaOpResult, error) {
	op, err := t.beginOp(in, opFailbackUndo)
	if err != nil {
		return contract.ReplicaOpResult{}, err
	}
	if err := t.record(ctx, op, func(cur replica.Lifecycle) replica.Lifecycle {
		cur.State, cur.Operation, cur.Failback = replica.StateFailover, in.Operation, nil
		return cur
	}); err != nil {
		return contract.ReplicaOpResult{}, err
	}
	if err := t.Host.StartVM(ctx, op.lifecycle.ReplicaVM); err != nil {
		return contract.ReplicaOpResult{}, classify(err)
	}
	return t.result(ctx, op)
}
