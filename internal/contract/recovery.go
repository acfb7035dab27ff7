package contract

import (
	"encoding/json"
	"fmt"
	"time"
)

// Workflows of the disaster-recovery lifecycle of a replica. Each takes a
// ReplicaOpInput ({"job": "demo", "vm": "web01"}) and returns a ReplicaOpResult.
const (
	FailoverWorkflow          = "FailoverWorkflow"
	UndoFailoverWorkflow      = "UndoFailoverWorkflow"
	PlannedFailoverWorkflow   = "PlannedFailoverWorkflow"
	PermanentFailoverWorkflow = "PermanentFailoverWorkflow"
)

// ReplicaOpWorkflowID is the workflow id of every operation on one replica:
// Temporal runs at most one workflow per id, so two operations on a replica
// never run at once.
func ReplicaOpWorkflowID(job, vm string) string { return fmt.Sprintf("replica-op/%s/%s", job, vm) }

// Activities of the target that carry out the lifecycle.
const (
	ActFailoverReplica = "FailoverReplica"
	ActUndoFailover    = "UndoFailover"
	ActReplicaStatus   = "ReplicaStatus"
	ActMakePermanent   = "MakePermanent"
	// ActShutdownVM shuts a source VM down cleanly (on the proxy).
	ActShutdownVM = "ShutdownVM"
)

// ShutdownInput names a VM of a source host.
type ShutdownInput struct {
	Host string `json:"host"`
	VMID string `json:"vmId"`
}

// PlannedFailoverResult is the final incremental run and the failover after it.
type PlannedFailoverResult struct {
	FinalRun ReplicationResult `json:"finalRun"`
	Failover ReplicaOpResult   `json:"failover"`
}

// ReplicaOpInput names a replica (its VM by name or id in Job) and, for a
// failover, the restore point ("" = newest).
type ReplicaOpInput struct {
	Job   string `json:"job"`
	VM    string `json:"vm"`
	Point string `json:"point,omitempty"`
}

// ReplicaOpActivityInput is what the target's activity gets: the workflow's
// input and the operation (workflow id and run id), so that a retried
// activity recognises the change it made itself.
type ReplicaOpActivityInput struct {
	ReplicaOpInput
	Operation string `json:"operation"`
}

// ReplicaOpResult is the replica after the operation.
type ReplicaOpResult struct {
	Job       string `json:"job"`
	VM        string `json:"vm"`
	VMID      string `json:"vmId"`
	State     string `json:"state"`
	Point     string `json:"point,omitempty"`
	ReplicaVM string `json:"replicaVm,omitempty"`
	Host      string `json:"host,omitempty"`
	// VMState is the replica VM's power state on the host.
	VMState string `json:"vmState,omitempty"`
	// Disks are the files the replica VM runs on now.
	Disks []string `json:"disks,omitempty"`
}

// Failover plans: the VMs of a plan of the configuration fail over in order
// (FailoverPlanWorkflow, input {"plan": "NAME"}) and are undone as a group
// (UndoFailoverPlanWorkflow). Both run under FailoverPlanWorkflowID.
const (
	FailoverPlanWorkflow     = "FailoverPlanWorkflow"
	UndoFailoverPlanWorkflow = "UndoFailoverPlanWorkflow"
	ActLoadFailoverPlan      = "LoadFailoverPlan"
)

// FailoverPlanWorkflowID is the workflow id of a plan's runs and undos.
func FailoverPlanWorkflowID(plan string) string { return "failover-plan/" + plan }

// FailoverPlanInput names a plan: {"plan": "web-tier"}.
type FailoverPlanInput struct {
	Plan string `json:"plan"`
}

// PlanSpec is a plan as loaded from the configuration.
type PlanSpec struct {
	Name string       `json:"name"`
	VMs  []PlanVMSpec `json:"vms"`
}

// PlanVMSpec is one VM of a plan, and the wait after it.
type PlanVMSpec struct {
	Job   string        `json:"job"`
	VM    string        `json:"vm"`
	Delay time.Duration `json:"delay"`
}

// FailoverPlanResult says what happened to each VM of the plan.
type FailoverPlanResult struct {
	Plan   string         `json:"plan"`
	Status string         `json:"status"` // success | partial | failed
	VMs    []PlanVMResult `json:"vms"`
}

// PlanVMResult is one VM of a plan run or undo.
type PlanVMResult struct {
	Job     string          `json:"job"`
	VM      string          `json:"vm"`
	Status  string          `json:"status"` // success | failed | skipped | pending
	Started time.Time       `json:"started,omitempty"`
	Error   string          `json:"error,omitempty"`
	Replica ReplicaOpResult `json:"replica,omitempty"`
}

// Failback: what the replica VM wrote in failover goes back to the source
// VM (or to a new VM) through the data channel, the other way round; commit
// makes the replica ready again, undo returns it to failover.
const (
	FailbackWorkflow       = "FailbackWorkflow"
	CommitFailbackWorkflow = "CommitFailbackWorkflow"
	UndoFailbackWorkflow   = "UndoFailbackWorkflow"

	ActPrepareFailback = "PrepareFailback"
	ActFinishFailback  = "FinishFailback"
	ActCommitFailback  = "CommitFailback"
	ActUndoFailback    = "UndoFailback"
	// On the agent: the failback channel, which sends the change set on
	// the connections the proxy opens to it.
	ActOpenFailbackChannel  = "OpenFailbackChannel"
	ActCloseFailbackChannel = "CloseFailbackChannel"
	// On the proxy: connects to the channel and writes into a source VM.
	ActReceiveFailback  = "ReceiveFailback"
	ActStartVM          = "StartVM"
	ActCreateFailbackVM = "CreateFailbackVM"
)

// CreateVMInput makes a new VM on a source host for a failback to it.
type CreateVMInput struct {
	Host  string         `json:"host"`
	Name  string         `json:"name"`
	Disks []FailbackDisk `json:"disks"`
	// Config is the replica VM's configuration (provider.VMConfig as JSON).
	Config json.RawMessage `json:"config,omitempty"`
}

// FailbackInput is the input of FailbackWorkflow: to the original VM, or
// with ToHost and As to a new VM of that name on another source host.
type FailbackInput struct {
	Job    string `json:"job"`
	VM     string `json:"vm"`
	ToHost string `json:"toHost,omitempty"`
	As     string `json:"as,omitempty"`
}

// FailbackPlan is what PrepareFailback found: the source VM and the disks
// of the replica VM.
type FailbackPlan struct {
	VMID  string         `json:"vmId"`
	VM    string         `json:"vm"`
	Disks []FailbackDisk `json:"disks"`
	// Config is the replica VM's configuration, for a new VM.
	Config json.RawMessage `json:"config,omitempty"`
}

// FailbackDisk is one disk to send back.
type FailbackDisk struct {
	ID   string `json:"id"`
	Size int64  `json:"size"`
}

// ErrTypeFailbackInterrupted: a failback channel ended before its change
// set was sent (the proxy or the agent died, or the proxy gave up). Final
// for the activity, which cannot bring the channel back; the workflow opens
// a new channel and sends again.
const ErrTypeFailbackInterrupted = "FailbackInterrupted"

// FailbackChannelInput names a failback channel (the operation and the
// attempt) and the VM that receives the change set.
type FailbackChannelInput struct {
	Operation string `json:"operation"`
	Host      string `json:"host"`
	VMID      string `json:"vmId"`
}

// OpenFailbackInput opens the agent's failback channel for the replica of
// the operation. The compression is the job's configured one.
type OpenFailbackInput struct {
	ReplicaOpActivityInput
	// VMID is the receiving VM on the source host (the original, or the
	// new VM of a failback to another host).
	VMID string `json:"vmId"`
	// Whole sends every block the replica VM's disks hold (a new VM has
	// nothing of them), not only the changes.
	Whole bool `json:"whole,omitempty"`
}

// FailbackChannel is where the proxy connects: the port on the job's
// target host, and the token it presents.
type FailbackChannel struct {
	Address string `json:"address"`
	Token   string `json:"token"`
}

// ReceiveFailbackInput makes the proxy receive a failback channel into VM
// VMID of Host. The proxy dials the job's configured target host.
type ReceiveFailbackInput struct {
	Job     string `json:"job"`
	Host    string `json:"host"`
	VMID    string `json:"vmId"`
	Address string `json:"address"`
	Token   string `json:"token"`
}

// FailbackResult is what a failback did.
type FailbackResult struct {
	Replica ReplicaOpResult `json:"replica"`
	// To is the VM that received the data.
	ToHost string `json:"toHost"`
	ToVM   string `json:"toVm"`
	// BytesChanged is the change set's size; BytesSent the payload on the wire.
	BytesChanged int64        `json:"bytesChanged"`
	BytesSent    int64        `json:"bytesSent"`
	BytesWritten int64        `json:"bytesWritten"`
	Disks        []DiskResult `json:"disks"`
}
