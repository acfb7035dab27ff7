package activities

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/provider"
	"github.com/replicator/replicator/internal/replica"
)

// Each lifecycle activity checks the replica's state before it changes
// anything, and refuses with a non-retryable error naming the state; then it
// records the new state durably before it acts on the host, so that an
// activity retried after its worker died (same operation) finds its own
// change and finishes it instead of refusing.

// findReplica finds the replica of VM vm (name or id) of a job that
// replicates to this agent, as configured here.
func (t *Target) findReplica(job, vm string) (*replica.Replica, replica.VMInfo, error) {
	if _, err := t.targetJob(job); err != nil {
		return nil, replica.VMInfo{}, err
	}
	if vm == "" || len(vm) > maxNameLen {
		return nil, replica.VMInfo{}, nonRetryable(contract.ErrTypeBadInput, fmt.Errorf("VM name or id: %d bytes, want 1 to %d", len(vm), maxNameLen))
	}
	r, err := t.Agent.Store().Find(job, vm)
	if err != nil {
		return nil, replica.VMInfo{}, classify(err)
	}
	info, err := r.Info()
	if err != nil {
		return nil, replica.VMInfo{}, classify(err)
	}
	return r, info, nil
}

// opReplica is findReplica for a lifecycle operation, whose operation id
// and restore point are bounded first.
func (t *Target) opReplica(in contract.ReplicaOpActivityInput) (*replica.Replica, replica.VMInfo, error) {
	if err := checkOperation(in.Operation); err != nil {
		return nil, replica.VMInfo{}, err
	}
	if len(in.Point) > maxNameLen {
		return nil, replica.VMInfo{}, nonRetryable(contract.ErrTypeBadInput, fmt.Errorf("restore point: %d bytes, at most %d", len(in.Point), maxNameLen))
	}
	return t.findReplica(in.Job, in.VM)
}

// errEncryptedReplicaVMs is why an encrypted datastore has no replica VMs.
var errEncryptedReplicaVMs = errors.New("this agent's datastore is encrypted at rest (agent.encryptionKeyFile): " +
	"its restore points are not VHDX files a hypervisor can attach, so no replica VM is registered, failed over to or failed back from; " +
	"`starter export JOB VM --out FILE` writes a plain copy of a restore point to attach by hand")

// maxNameLen bounds the names (VM, restore point) an operation's input carries.
const maxNameLen = 255

func (t *Target) needHost() error {
	if t.Encrypted {
		return nonRetryable(contract.ErrTypeBadConfig, errEncryptedReplicaVMs)
	}
	if t.Host == nil {
		return nonRetryable(contract.ErrTypeBadConfig, errors.New("this target has no host for replica VMs: set agent.host in its configuration"))
	}
	return nil
}

func pickReplicaPoint(r *replica.Replica, id string) (replica.Point, error) {
	pts, err := r.Points()
	if err != nil {
		return replica.Point{}, classify(err)
	}
	if len(pts) == 0 {
		return replica.Point{}, nonRetryable(contract.ErrTypeNoPoint, errors.New("the replica has no complete restore point"))
	}
	if id == "" {
		return pts[len(pts)-1], nil
	}
	ids := make([]string, 0, len(pts))
	for _, p := range pts {
		if p.ID == id {
			return p, nil
		}
		ids = append(ids, p.ID)
	}
	return replica.Point{}, nonRetryable(contract.ErrTypeNoPoint, fmt.Errorf("no restore point %q (points: %s): %w", id, strings.Join(ids, ", "), replica.ErrNoPoint))
}

// lifecycleOp is one operation of a replica's lifecycle: the state it
// starts from and the state it leaves the replica in.
type lifecycleOp struct {
	name     string // as operators and errors say it
	from, to replica.State
}

var (
	opFailover       = lifecycleOp{"failover", replica.StateReady, replica.StateFailover}
	opFailoverUndo   = lifecycleOp{"failover undo", replica.StateFailover, replica.StateReady}
	opPermanent      = lifecycleOp{"permanent failover", replica.StateFailover, replica.StatePermanent}
	opFailback       = lifecycleOp{"failback", replica.StateFailover, replica.StateFailback}
	opFailbackCommit = lifecycleOp{"failback commit", replica.StateFailback, replica.StateReady}
	opFailbackUndo   = lifecycleOp{"failback undo", replica.StateFailback, replica.StateFailover}
)

// opReplicaState is a replica found for a lifecycle operation, with the
// lifecycle it had when the operation began.
type opReplicaState struct {
	op        lifecycleOp
	in        contract.ReplicaOpActivityInput
	r         *replica.Replica
	info      replica.VMInfo
	lifecycle replica.Lifecycle
	// resumed: an earlier attempt of this same operation (a retry after its
	// worker died) already recorded the operation's state.
	resumed bool
}

// beginOp finds the replica of a lifecycle operation and refuses, with a
// non-retryable error naming the state, unless it is in the operation's
// starting state or an earlier attempt of the same operation moved it on;
// and, since every operation acts on the replica VM, unless this target can
// have one.
func (t *Target) beginOp(in contract.ReplicaOpActivityInput, op lifecycleOp) (*opReplicaState, error) {
	r, info, err := t.opReplica(in)
	if err != nil {
		return nil, err
	}
	l, err := r.Lifecycle()
	if err != nil {
		return nil, classify(err)
	}
	s := &opReplicaState{op: op, in: in, r: r, info: info, lifecycle: l}
	s.resumed = l.State == op.to && l.Operation == in.Operation
	if !s.resumed && l.State != op.from {
		return nil, s.refused(l)
	}
	if err := t.needHost(); err != nil {
		return nil, err
	}
	return s, nil
}

// refused is the non-retryable refusal of the operation in lifecycle l.
func (s *opReplicaState) refused(l replica.Lifecycle) error { return classify(s.stateError(l)) }

func (s *opReplicaState) stateError(l replica.Lifecycle) *replica.StateError {
	return &replica.StateError{Job: s.in.Job, VM: s.info.Name, State: l.State, Since: l.Since, Operation: s.op.name, Want: []replica.State{s.op.from}}
}

// record makes the operation's change of state durable: next turns the
// lifecycle (still in the starting state, checked under the replica's lock,
// since another operation may have moved it) into the one to record. A
// lifecycle this same operation already moved on is left as it is.
func (t *Target) record(ctx context.Context, s *opReplicaState, next func(replica.Lifecycle) replica.Lifecycle) error {
	if s.resumed {
		return nil
	}
	_, err := t.Agent.UpdateLifecycle(ctx, s.in.Job, s.info.ID, func(cur replica.Lifecycle) (replica.Lifecycle, error) {
		if cur.State == s.op.to && cur.Operation == s.in.Operation {
			return cur, nil
		}
		if cur.State != s.op.from {
			return cur, s.stateError(cur)
		}
		return next(cur), nil
	})
	return classify(err)
}

// result is the operation's answer: the replica's state as it is now.
func (t *Target) result(ctx context.Context, s *opReplicaState) (contract.ReplicaOpResult, error) {
	return t.opResult(ctx, s.in.Job, s.r, s.info)
}

// FailoverReplica starts the replica VM on a restore point: its disks become
// new differencing children of the point (the point's files are only read),
// with the job's network mapping and re-IP rules; the replica goes to
// failover and replication skips it.
func (t *Target) FailoverReplica(ctx context.Context, in contract.ReplicaOpActivityInput) (contract.ReplicaOpResult, error) {
	op, err := t.beginOp(in, opFailover)
	if err != nil {
		return contract.ReplicaOpResult{}, err
	}
	pointID := in.Point
	if op.resumed {
		pointID = op.lifecycle.Point
	}
	p, err := pickReplicaPoint(op.r, pointID)
	if err != nil {
		return contract.ReplicaOpResult{}, err
	}
	spec, err := t.replicaVMSpec(in.Job, op.r, p)
	if err != nil {
		return contract.ReplicaOpResult{}, classify(err)
	}
	if err := t.record(ctx, op, func(cur replica.Lifecycle) replica.Lifecycle {
		return replica.Lifecycle{State: replica.StateFailover, Point: p.ID, Operation: in.Operation,
			ReplicaVM: spec.Name, Host: t.HostName, VMPoint: cur.VMPoint}
	}); err != nil {
		return contract.ReplicaOpResult{}, err
	}
	vm, err := t.Host.ReplicaVM(ctx, spec.Name)
	running := err == nil && vm.State == "running" && op.resumed
	if !running {
		// Never started by this operation: whatever its disks hold is not
		// failover data yet, so fresh children are made.
		if err == nil && vm.State == "running" {
			if err := t.Host.StopVM(ctx, spec.Name); err != nil {
				return contract.ReplicaOpResult{}, classify(err)
			}
		}
		if _, err := t.Host.RegisterReplicaVM(ctx, spec); err != nil {
			return contract.ReplicaOpResult{}, classify(err)
		}
		if _, err := t.Agent.UpdateLifecycle(ctx, in.Job, op.info.ID, func(cur replica.Lifecycle) (replica.Lifecycle, error) {
			cur.VMPoint = p.ID
			return cur, nil
		}); err != nil {
			return contract.ReplicaOpResult{}, classify(err)
		}
		if err := t.Host.StartVM(ctx, spec.Name); err != nil {
			return contract.ReplicaOpResult{}, classify(err)
		}
	}
	return t.result(ctx, op)
}

// UndoFailover powers the replica VM off and discards what it wrote in
// failover: its disks become children of the newest point again, the
// replica is ready and replication resumes.
func (t *Target) UndoFailover(ctx context.Context, in contract.ReplicaOpActivityInput) (contract.ReplicaOpResult, error) {
	op, err := t.beginOp(in, opFailoverUndo)
	if err != nil {
		return contract.ReplicaOpResult{}, err
	}
	// A resumed attempt found the replica ready: the earlier one may have
	// died before the VM was back on the newest point, and registering
	// again is harmless.
	if !op.resumed {
		if vm := op.lifecycle.ReplicaVM; vm != "" {
			if err := t.Host.StopVM(ctx, vm); err != nil && !errors.Is(err, provider.ErrVMNotFound) {
				return contract.ReplicaOpResult{}, classify(err)
			}
		}
	}
	return t.backToReady(ctx, op)
}

// backToReady ends an operation that leaves the replica ready: ready first,
// then the replica VM back on the newest point, its failover children
// discarded by the registration.
func (t *Target) backToReady(ctx context.Context, op *opReplicaState) (contract.ReplicaOpResult, error) {
	if err := t.record(ctx, op, func(cur replica.Lifecycle) replica.Lifecycle {
		return replica.Lifecycle{State: replica.StateReady, Operation: op.in.Operation, ReplicaVM: cur.ReplicaVM, Host: cur.Host, VMPoint: cur.VMPoint}
	}); err != nil {
		return contract.ReplicaOpResult{}, err
	}
	if err := t.registerOnNewest(ctx, op.in.Job, op.info.ID, op.in.Operation, replica.StateReady); err != nil {
		return contract.ReplicaOpResult{}, classify(err)
	}
	return t.result(ctx, op)
}

func (t *Target) opResult(ctx context.Context, job string, r *replica.Replica, info replica.VMInfo) (contract.ReplicaOpResult, error) {
	l, err := r.Lifecycle()
	if err != nil {
		return contract.ReplicaOpResult{}, classify(err)
	}
	res := contract.ReplicaOpResult{Job: job, VM: info.Name, VMID: info.ID, State: string(l.State), Point: l.Point, ReplicaVM: l.ReplicaVM, Host: l.Host}
	if t.Host != nil && l.ReplicaVM != "" {
		if vm, err := t.Host.ReplicaVM(ctx, l.ReplicaVM); err == nil {
			res.VMState = vm.State
			for _, d := range vm.Disks {
				res.Disks = append(res.Disks, d.Path)
			}
		}
	}
	return res, nil
}

// ReplicaStatus returns the replica's state without changing anything. The
// workflows that ask it (planned failover, failback undo) go on to act on the
// replica VM, so a target that cannot have one refuses here, before the
// source is touched.
func (t *Target) ReplicaStatus(ctx context.Context, in contract.ReplicaOpActivityInput) (contract.ReplicaOpResult, error) {
	r, info, err := t.opReplica(in)
	if err != nil {
		return contract.ReplicaOpResult{}, err
	}
	if err := t.needHost(); err != nil {
		return contract.ReplicaOpResult{}, err
	}
	return t.opResult(ctx, in.Job, r, info)
}

// MakePermanent makes a failed-over replica VM a standalone VM: its disks
// get their own files (the restore points below them copied in), the
// replica goes to permanent, and its restore points are deleted; the job
// no longer replicates the source VM.
func (t *Target) MakePermanent(ctx context.Context, in contract.ReplicaOpActivityInput) (contract.ReplicaOpResult, error) {
	op, err := t.beginOp(in, opPermanent)
	if err != nil {
		return contract.ReplicaOpResult{}, err
	}
	if !op.resumed {
		// The VM's own disks first: until they exist, it runs on the points.
		if _, err := t.Host.MakeStandalone(ctx, op.lifecycle.ReplicaVM); err != nil {
			return contract.ReplicaOpResult{}, classify(err)
		}
		if err := t.record(ctx, op, func(cur replica.Lifecycle) replica.Lifecycle {
			cur.State, cur.Operation, cur.Point, cur.VMPoint = replica.StatePermanent, in.Operation, "", ""
			return cur
		}); err != nil {
			return contract.ReplicaOpResult{}, err
		}
	}
	if err := t.Agent.RemovePoints(ctx, in.Job, op.info.ID); err != nil {
		return contract.ReplicaOpResult{}, classify(err)
	}
	return t.result(ctx, op)
}
