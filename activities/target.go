package activities

import (
	"context"
	"crypto/tls"
	"fmt"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/agent"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/provider"
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
	// Host is the target's own virtualization host (agent.host) where
	// replica VMs are registered, HostName its name; nil when none is
	// configured. Config re-reads the configuration (the jobs' network
	// mapping and re-IP rules apply as edited).
	Host     provider.ReplicaHost
	HostName string
	Config   func() (*config.Config, error)
	// ClientTLS is the agent's side of a failback channel, where it sends.
	ClientTLS *tls.Config
}

// CheckTarget checks that the datastore is there and has room.
func (t *Target) CheckTarget(ctx context.Context, job string) (contract.TargetStatus, error) {
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
	return contract.TargetStatus{FreeBytes: free}, nil
}

// OpenSessions lists the VMs of the job with an interrupted restore point.
func (t *Target) OpenSessions(ctx context.Context, job string) ([]string, error) {
	ids, err := t.Agent.OpenSessions(ctx, job)
	return ids, classify(err)
}

// PrepareReplica records the VM on its replica and returns what the run must know.
func (t *Target) PrepareReplica(ctx context.Context, job string, vm contract.VM) (contract.ReplicaState, error) {
	st, err := t.Agent.Prepare(ctx, job, vm)
	return st, classify(err)
}

// BeginRestorePoint opens or continues the restore point of a checkpoint.
// Data connections of the VM left over from an earlier attempt are ended
// first: no transfer of the VM runs while its point is being opened.
func (t *Target) BeginRestorePoint(ctx context.Context, in contract.BeginInput) (contract.BeginResult, error) {
	if t.Channel != nil {
		t.Channel.EndTransfers(in.Job, in.VMID)
	}
	r, err := t.Agent.Begin(ctx, in)
	return r, classify(err)
}

// SessionPositions returns the durable positions of the open restore point.
func (t *Target) SessionPositions(ctx context.Context, in contract.PositionsInput) (map[string]int64, error) {
	p, err := t.Agent.Positions(ctx, in.Job, in.VMID)
	return p, classify(err)
}

// CommitRestorePoint commits the restore point and applies retention.
// After the commit, the replica VM is registered (or updated) on the
// target's host on the new point; a host that fails does not fail the
// commit: the replica VM then stays on its earlier point, which `replica ls`
// shows, and the next commit or a failover registers it again.
func (t *Target) CommitRestorePoint(ctx context.Context, in contract.CommitInput) (string, error) {
	id, err := t.Agent.Commit(ctx, in.Job, in.VMID, in.CheckpointID, in.Retention)
	if err != nil {
		return id, classify(err)
	}
	t.refreshReplicaVM(ctx, in.Job, in.VMID)
	return id, nil
}

// RecordReferencePoint records which source reference point matches a restore point.
func (t *Target) RecordReferencePoint(ctx context.Context, in contract.RecordReferenceInput) error {
	return classify(t.Agent.RecordReferencePoint(ctx, in.Job, in.VMID, in.Point, in.ReferencePoint))
}
