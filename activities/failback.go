package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"go.temporal.io/sdk/activity"

	"github.com/replicator/replicator/internal/blockplan"
	"github.com/replicator/replicator/internal/codec"
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
	r, info, err := t.findReplica(in.Job, in.VM)
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

// SendFailback sends exactly what differs between the replica VM and the
// newest restore point (what the source holds): the blocks its failover
// children hold, and those of the points newer than the one it failed over
// to. No disk is scanned: the VHDX files say what they hold.
func (t *Target) SendFailback(ctx context.Context, in contract.SendFailbackInput) (contract.FailbackResult, error) {
	r, info, err := t.findReplica(in.Job, in.VM)
	if err != nil {
		return contract.FailbackResult{}, err
	}
	l, err := r.Lifecycle()
	if err != nil {
		return contract.FailbackResult{}, classify(err)
	}
	if l.State != replica.StateFailover {
		return contract.FailbackResult{}, stateRefused(in.ReplicaOpActivityInput, info.Name, "failback", l, replica.StateFailover)
	}
	if err := t.needHost(); err != nil {
		return contract.FailbackResult{}, err
	}
	if t.ClientTLS == nil {
		return contract.FailbackResult{}, nonRetryable(contract.ErrTypeBadConfig, errors.New("the agent has no client certificate for the failback channel (config tls)"))
	}
	level, err := codec.ParseLevel(in.Compression)
	if err != nil {
		return contract.FailbackResult{}, nonRetryable(contract.ErrTypeBadConfig, err)
	}
	vm, err := t.Host.ReplicaVM(ctx, l.ReplicaVM)
	if err != nil {
		return contract.FailbackResult{}, classify(err)
	}
	pts, err := r.Points()
	if err != nil {
		return contract.FailbackResult{}, classify(err)
	}
	var newer []replica.Point
	for i, p := range pts {
		if p.ID == l.Point {
			newer = pts[i+1:]
		}
	}
	res := contract.FailbackResult{Replica: contract.ReplicaOpResult{Job: in.Job, VM: info.Name, VMID: info.ID}}
	sender := &transfer.Sender{Address: in.Address, TLS: t.ClientTLS}
	for _, d := range vm.Disks {
		img, err := vhdx.Open(d.Path)
		if err != nil {
			return res, fmt.Errorf("failback: replica VM disk %s: %w", d.Path, err)
		}
		changed := img.OwnAllocated()
		if in.Whole {
			changed = img.Allocated()
			newer = nil
		}
		for _, p := range newer {
			for _, pd := range p.Disks {
				if pd.ID != d.ID {
					continue
				}
				own, err := ownAllocated(pd.File)
				if err != nil {
					img.Close()
					return res, err
				}
				changed = append(changed, own...)
			}
		}
		changed = disk.Merge(changed, img.Size())
		dr := contract.DiskResult{ID: d.ID, Size: img.Size(), ChangeTracking: "failback"}
		for _, e := range changed {
			res.BytesChanged += e.Length
		}
		plan := blockplan.Changed(img.Size(), failbackBlockSize, changed)
		tr, err := sender.SendDiskWithRetry(ctx, img, plan, nil, transfer.SendOptions{
			Job: in.Job, VMID: in.VMID, DiskID: d.ID, CheckpointID: failbackCheckpoint,
			BlockSize: failbackBlockSize, Compression: level, WholeBlocks: true, ZeroBlocksAsData: true,
		}, func(p transfer.Progress) {
			// A dead channel or agent is noticed within the heartbeat timeout.
			activity.RecordHeartbeat(ctx, p.Acknowledged)
		}, transfer.RetryPolicy{Attempts: 3})
		img.Close()
		dr = diskResult(dr, tr)
		res.BytesSent += tr.BytesSent
		res.BytesWritten += tr.BytesWritten
		if err != nil {
			dr.Status, dr.Error = contract.StatusFailed, err.Error()
			res.Disks = append(res.Disks, dr)
			return res, classify(fmt.Errorf("failback of disk %s: %w", d.ID, err))
		}
		dr.Status = contract.StatusSuccess
		res.Disks = append(res.Disks, dr)
	}
	return res, nil
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
	r, info, err := t.findReplica(op.Job, op.VM)
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
	r, info, err := t.findReplica(in.Job, in.VM)
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
	r, info, err := t.findReplica(in.Job, in.VM)
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
