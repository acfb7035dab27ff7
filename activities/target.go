package activities

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"

	"go.temporal.io/sdk/temporal"
	"log/slog"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/agent"
	"github.com/replicator/replicator/internal/bytesize"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/provider"
	"github.com/replicator/replicator/internal/replica"
)

// Target holds what the target agent's activities need.
type Target struct {
	Agent *agent.Agent
	// Channel is the agent's data channel (transfer.Receiver); nil in tests
	// that have none.
	Channel   interface{ EndTransfers(job, vmID string) }
	Datastore string
	// MinFreeBytes below which CheckTarget fails (default 1 GiB).
	MinFreeBytes int64
	// Config re-reads the configuration, and Name is this agent's target
	// name: every activity checks its job against them (the job must
	// replicate to this target; block size and retention are the job's).
	// The jobs' network mapping and re-IP rules apply as edited.
	Config func() (*config.Config, error)
	Name   string
	// Host is the target's own virtualization host (agent.host) where
	// replica VMs are registered, HostName its name; nil when none is
	// configured.
	Host     provider.ReplicaHost
	HostName string
	// Encrypted says the datastore is encrypted at rest: its point files
	// are not VHDX a hypervisor can attach, so replica VMs and the
	// operations on them are refused (errEncryptedReplicaVMs).
	Encrypted bool
	// ServerTLS is the agent's data channel configuration (agent role, peer
	// must be a proxy), used for failback channels too; Listen is the data
	// channel's listen address, whose host failback channels listen on.
	ServerTLS *tls.Config
	Listen    string
	Logger    *slog.Logger
	failback  failbackChannels
}

// CheckTarget checks that the datastore is there and has room.
func (t *Target) CheckTarget(ctx context.Context, job string) (contract.TargetStatus, error) {
	if _, err := t.targetJob(job); err != nil {
		return contract.TargetStatus{}, err
	}
	free, err := freeBytes(t.Datastore)
	if err != nil {
		return contract.TargetStatus{}, fmt.Errorf("datastore %s: %w", t.Datastore, err)
	}
	min := t.MinFreeBytes
	if min == 0 {
		min = 1 << 30
	}
	if free < min {
		return contract.TargetStatus{FreeBytes: free}, fmt.Errorf("datastore %s has %d bytes free, less than the %d it needs to start", t.Datastore, free, min)
	}
	return contract.TargetStatus{FreeBytes: free, Listen: t.Listen, Datastore: t.Datastore}, nil
}

// CheckSpace says whether the datastore has room for what a run of these
// VMs (and those in.Before counts, of a paged inventory) may write: a VM's virtual size when it has no complete restore point
// yet, else the largest of its newest points (what a run of it wrote), plus
// a tenth and MinFreeBytes for metadata, digests and retention merges.
//
// It reads the points through the agent's own store, which holds the
// datastore's key: a datastore encrypted at rest cannot be opened without it.
func (t *Target) CheckSpace(ctx context.Context, in contract.SpaceInput) (contract.SpaceStatus, error) {
	if _, err := t.targetJob(in.Job); err != nil {
		return contract.SpaceStatus{}, err
	}
	free, err := freeBytes(t.Datastore)
	if err != nil {
		return contract.SpaceStatus{}, fmt.Errorf("agent.datastore %s: %w", t.Datastore, err)
	}
	store := t.Agent.Store()
	need := in.Before.Bytes
	var first, incr []string
	for _, vm := range in.VMs {
		var size int64
		for _, d := range vm.Disks {
			size += d.VirtualSize
		}
		est := size
		if r, err := store.Replica(in.Job, vm.ID); err == nil {
			if pts, err := r.Points(); err == nil && len(pts) > 0 {
				est = 0
				for i := len(pts) - 1; i >= 0 && i >= len(pts)-3; i-- {
					est = max(est, pts[i].Size)
				}
			}
		}
		need += est
		if est == size {
			first = append(first, vm.Name)
		} else {
			incr = append(incr, vm.Name)
		}
	}
	min := t.MinFreeBytes
	if min == 0 {
		min = 1 << 30
	}
	total := need + need/10 + min
	tally := contract.SpaceTally{First: in.Before.First + len(first), Incremental: in.Before.Incremental + len(incr), Bytes: need}
	detail := fmt.Sprintf("%d VMs: %d first points at their virtual size, %d like their latest points; %s with margin, %s free",
		tally.First+tally.Incremental, tally.First, tally.Incremental, bytesize.Text(total), bytesize.Text(free))
	st := contract.SpaceStatus{FreeBytes: free, NeededBytes: total, Detail: detail, Tally: tally}
	if free < total {
		firstNames := strings.Join(first, ", ")
		if n := in.Before.First; n > 0 {
			firstNames = fmt.Sprintf("%s and %d more", firstNames, n)
		}
		return st, temporal.NewNonRetryableApplicationError(fmt.Sprintf(
			"agent.datastore %s has %s free, but this run may write %s (first points, at their virtual size: %s; other VMs like their latest points: %d) and keeps %s spare: free space there or move the datastore",
			t.Datastore, bytesize.Text(free), bytesize.Text(need), firstNames, tally.Incremental, bytesize.Text(total-need)), contract.ErrTypeNoSpace, nil)
	}
	return st, nil
}

// OpenSessions lists the VMs of the job with an interrupted restore point.
func (t *Target) OpenSessions(ctx context.Context, job string) ([]string, error) {
	if _, err := t.targetJob(job); err != nil {
		return nil, err
	}
	ids, err := t.Agent.OpenSessions(ctx, job)
	return ids, classify(err)
}

// PrepareReplica records the VM on its replica and returns what the run must know.
func (t *Target) PrepareReplica(ctx context.Context, job string, vm contract.VM) (contract.ReplicaState, error) {
	if _, err := t.targetJob(job); err != nil {
		return contract.ReplicaState{}, err
	}
	if err := checkVM(vm); err != nil {
		return contract.ReplicaState{}, err
	}
	// A VM seen for the first time gets its replica when its restore point
	// begins, after the source checked that the job selects it: a forged VM
	// creates nothing here.
	if r, err := t.Agent.Store().Replica(job, vm.ID); err == nil {
		if _, err := r.Info(); errors.Is(err, replica.ErrNoReplica) {
			return contract.ReplicaState{}, nil
		}
	}
	st, err := t.Agent.Prepare(ctx, job, vm)
	return st, classify(err)
}

// BeginRestorePoint opens or continues the restore point of a checkpoint.
// Data connections of the VM left over from an earlier attempt are ended
// first: no transfer of the VM runs while its point is being opened.
func (t *Target) BeginRestorePoint(ctx context.Context, in contract.BeginInput) (contract.BeginResult, error) {
	job, err := t.targetJob(in.Job)
	if err != nil {
		return contract.BeginResult{}, err
	}
	if in.BlockSize != int64(job.BlockSize) {
		return contract.BeginResult{}, nonRetryable(contract.ErrTypeBadInput, fmt.Errorf("job %q: block size %d in the input, %d configured", in.Job, in.BlockSize, int64(job.BlockSize)))
	}
	if in.VM != nil {
		if in.VM.ID != in.VMID {
			return contract.BeginResult{}, nonRetryable(contract.ErrTypeBadInput, fmt.Errorf("begin: VM %q described as %q", in.VMID, in.VM.ID))
		}
		if err := checkVM(*in.VM); err != nil {
			return contract.BeginResult{}, err
		}
		if _, err := t.Agent.Prepare(ctx, in.Job, *in.VM); err != nil {
			return contract.BeginResult{}, classify(err)
		}
	}
	if t.Channel != nil {
		t.Channel.EndTransfers(in.Job, in.VMID)
	}
	r, err := t.Agent.Begin(ctx, in)
	return r, classify(err)
}

// SessionPositions returns the durable positions of the open restore point.
func (t *Target) SessionPositions(ctx context.Context, in contract.PositionsInput) (map[string]int64, error) {
	if _, err := t.targetJob(in.Job); err != nil {
		return nil, err
	}
	p, err := t.Agent.Positions(ctx, in.Job, in.VMID)
	return p, classify(err)
}

// CommitRestorePoint commits the restore point and applies retention.
// After the commit, the replica VM is registered (or updated) on the
// target's host on the new point; a host that fails does not fail the
// commit: the replica VM then stays on its earlier point, which `replica ls`
// shows, and the next commit or a failover registers it again.
func (t *Target) CommitRestorePoint(ctx context.Context, in contract.CommitInput) (string, error) {
	job, err := t.targetJob(in.Job)
	if err != nil {
		return "", err
	}
	if in.Retention != job.Retention {
		return "", nonRetryable(contract.ErrTypeBadInput, fmt.Errorf("job %q: retention %d in the input, %d configured; nothing was committed or merged", in.Job, in.Retention, job.Retention))
	}
	id, err := t.Agent.Commit(ctx, in.Job, in.VMID, in.CheckpointID, in.Retention)
	if err != nil {
		return id, classify(err)
	}
	t.refreshReplicaVM(ctx, in.Job, in.VMID)
	return id, nil
}

// RecordReferencePoint records which source reference point matches a restore point.
func (t *Target) RecordReferencePoint(ctx context.Context, in contract.RecordReferenceInput) error {
	if _, err := t.targetJob(in.Job); err != nil {
		return err
	}
	return classify(t.Agent.RecordReferencePoint(ctx, in.Job, in.VMID, in.Point, in.ReferencePoint))
}
