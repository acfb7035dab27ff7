// Package contract holds the names and shapes that Temporal, operators and the
// acceptance checks see: workflow and query names, task queues, and the JSON of
// workflow inputs and results (CONTRACT.md). Workflows and activities both
// import it; it has no behavior and no I/O.
package contract

import (
	"encoding/json"
	"time"
)

// Names of workflows, queries and signals.
const (
	ReplicationWorkflow   = "ReplicationWorkflow"
	VMReplicationWorkflow = "VMReplicationWorkflow"
	ProgressQuery         = "progress"
	// ProgressSignal carries a DiskResult from a running transfer to its job run.
	ProgressSignal   = "disk-progress"
	DefaultTaskQueue = "replication"
)

// SourceQueue is the task queue of the proxy that reads a source host.
func SourceQueue(host string) string { return "source-" + host }

// TargetQueue is the task queue of the target agent that writes a datastore.
func TargetQueue(target string) string { return "target-" + target }

// Statuses of runs, VMs and disks.
const (
	StatusSuccess = "success"
	StatusPartial = "partial"
	StatusFailed  = "failed"
	StatusRunning = "running"
	StatusPending = "pending"
)

// Change tracking modes as reported per disk.
const (
	TrackingRCT    = "rct"
	TrackingDigest = "digest"
	TrackingFull   = "full"
)

// ReplicationInput is the input of ReplicationWorkflow: {"job": "demo"}.
type ReplicationInput struct {
	Job string   `json:"job"`
	VMs []string `json:"vms,omitempty"`
	// Continued is set only by a run that continues as new to keep its
	// history short: the rest of the same run. Users never set it.
	Continued *RunContinuation `json:"continued,omitempty"`
}

// RunContinuation is what a job run hands to its continuation: the job's
// settings as the run loaded them, the window's deadline, the VMs not started
// yet, and the result so far (every VM, the pending ones included).
type RunContinuation struct {
	Spec     JobSpec           `json:"spec"`
	Deadline time.Time         `json:"deadline"`
	Pending  []VM              `json:"pending"`
	Result   ReplicationResult `json:"result"`
}

// ReplicationResult is the result (and the progress) of a run.
type ReplicationResult struct {
	Job    string     `json:"job"`
	Status string     `json:"status"`
	RunID  string     `json:"runId"`
	VMs    []VMResult `json:"vms"`
}

// VMResult is the outcome of one VM.
type VMResult struct {
	Name         string       `json:"name"`
	ID           string       `json:"id"`
	Status       string       `json:"status"`
	RestorePoint string       `json:"restorePoint"`
	Error        string       `json:"error"`
	Warning      string       `json:"warning,omitempty"`
	Disks        []DiskResult `json:"disks"`
}

// DiskResult is the outcome of one disk.
type DiskResult struct {
	ID              string `json:"id"`
	Status          string `json:"status"`
	BytesRead       int64  `json:"bytesRead"`
	BytesSent       int64  `json:"bytesSent"`
	BytesWritten    int64  `json:"bytesWritten"`
	BlocksChanged   int64  `json:"blocksChanged"`
	BlocksZero      int64  `json:"blocksZero"`
	BlocksExcluded  int64  `json:"blocksExcluded"`
	ResumedFromByte int64  `json:"resumedFromByte"`
	ChangeTracking  string `json:"changeTracking"`
	// Position is the acknowledged position on the target; Size the disk's size.
	Position int64  `json:"position"`
	Size     int64  `json:"size"`
	Error    string `json:"error,omitempty"`
}

// ProgressUpdate is what the ProgressSignal carries.
type ProgressUpdate struct {
	VMID string     `json:"vmId"`
	Disk DiskResult `json:"disk"`
}

// JobSpec is a job's settings as loaded at the start of a run.
type JobSpec struct {
	Name          string `json:"name"`
	Source        string `json:"source"`
	Target        string `json:"target"`
	TargetAddress string `json:"targetAddress"`
	// TargetStallTimeout is the target's stallTimeout (0: the default).
	TargetStallTimeout time.Duration `json:"targetStallTimeout,omitempty"`
	VMs                []string      `json:"vms"`
	Window             time.Duration `json:"window"`
	Compression        string        `json:"compression"`
	BlockSize          int64         `json:"blockSize"`
	ChangeTracking     string        `json:"changeTracking"`
	ExcludeZero        bool          `json:"excludeZero"`
	ExcludeSwap        bool          `json:"excludeSwap"`
	ExcludePaths       []string      `json:"excludePaths"`
	Retention          int           `json:"retention"`
	Parallelism        int           `json:"parallelism"`
	GuestProcessing    bool          `json:"guestProcessing"`
}

// Activity names. Activities are registered under their method names.
const (
	ActLoadJob                 = "LoadJob"
	ActCheckSource             = "CheckSource"
	ActInventory               = "Inventory"
	ActCreateCheckpoint        = "CreateCheckpoint"
	ActTransferDisk            = "TransferDisk"
	ActConvertToReferencePoint = "ConvertToReferencePoint"
	ActReleaseCheckpoint       = "ReleaseCheckpoint"
	ActCheckTarget             = "CheckTarget"
	ActOpenSessions            = "OpenSessions"
	ActPrepareReplica          = "PrepareReplica"
	ActBeginRestorePoint       = "BeginRestorePoint"
	ActCommitRestorePoint      = "CommitRestorePoint"
	ActRecordReferencePoint    = "RecordReferencePoint"
	ActSessionPositions        = "SessionPositions"
)

// Error types of non-retryable application errors: retrying cannot fix them,
// and they fail only their VM (or, for BadConfig, the run).
const (
	ErrTypeBadConfig          = "BadConfig"
	ErrTypeVMNotFound         = "VMNotFound"
	ErrTypeCheckpointNotFound = "CheckpointNotFound"
	ErrTypeAuthentication     = "Authentication"
	ErrTypeBadInput           = "BadInput"
	ErrTypeReplicaLocked      = "ReplicaLocked"
	// ErrTypeVMUnsupported: the host cannot checkpoint or track the VM (a
	// pass-through, VHD or VHD Set disk, an old configuration version).
	ErrTypeVMUnsupported = "VMUnsupported"
	// ErrTypeHostRefused: the host refused an operation in a way a retry
	// cannot change (access denied, invalid parameter, not supported).
	ErrTypeHostRefused = "HostRefused"
	// ErrTypeReplicaState: the replica's state does not allow the operation
	// (replication of a replica in failover, undo of nothing, …).
	ErrTypeReplicaState = "ReplicaState"
	// ErrTypeNoPoint: the restore point asked for is not on the replica.
	ErrTypeNoPoint = "NoRestorePoint"
	// ErrTypeNoReplica: the job has no replica of that VM.
	ErrTypeNoReplica = "NoReplica"
	// ErrTypeWindowClosed: a transfer stopped because the backup window
	// closed; its details are the DiskResult so far. The next run continues.
	ErrTypeWindowClosed = "WindowClosed"
)

// VMInput is the input of VMReplicationWorkflow.
type VMInput struct {
	Job VMJob `json:"job"`
	VM  VM    `json:"vm"`
	// ParentWorkflowID receives progress signals.
	ParentWorkflowID string `json:"parentWorkflowId"`
	// Deadline is when the backup window closes; zero means none.
	Deadline time.Time `json:"deadline"`
}

// VMJob is the part of a JobSpec a VM run needs.
type VMJob = JobSpec

// VM is what the inventory reports of one VM.
type VM struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	State      string `json:"state"`
	Generation int    `json:"generation"`
	Disks      []Disk `json:"disks"`
	// Config is the VM's virtual hardware as the host reported it
	// (provider.VMConfig as JSON), kept with each restore point. Empty when
	// the host could not say.
	Config json.RawMessage `json:"config,omitempty"`
}

// Disk is one disk of a VM.
type Disk struct {
	ID          string `json:"id"`
	VirtualSize int64  `json:"virtualSize"`
	SectorSize  int    `json:"sectorSize"`
}

// InventoryInput asks a source host for the job's VMs.
type InventoryInput struct {
	Host string `json:"host"`
	// Patterns are names, ids or "*".
	Patterns []string `json:"patterns"`
}

// CheckpointInput asks for a checkpoint of a VM; when ReuseID names a checkpoint
// that still exists, it is reused (an interrupted run resumes from it).
type CheckpointInput struct {
	Host    string `json:"host"`
	Job     string `json:"job"`
	VMID    string `json:"vmId"`
	VMName  string `json:"vmName"`
	ReuseID string `json:"reuseId"`
}

// CheckpointResult is the checkpoint a VM run reads.
type CheckpointResult struct {
	ID      string `json:"id"`
	Reused  bool   `json:"reused"`
	Warning string `json:"warning"`
	// Consistency is "application" or "crash".
	Consistency string `json:"consistency"`
}

// ReplicaState is what the target knows of a VM's replica before a run.
type ReplicaState struct {
	// OpenCheckpointID is the checkpoint of an interrupted restore point, if any.
	OpenCheckpointID string `json:"openCheckpointId"`
	// NewestPoint is the newest complete restore point ("" if none).
	NewestPoint string `json:"newestPoint"`
	// ReferencePoint is the source's change-tracking reference point that
	// matches NewestPoint ("" if none is known).
	ReferencePoint string `json:"referencePoint"`
}

// BeginInput opens (or continues) a restore point.
type BeginInput struct {
	Job            string `json:"job"`
	VMID           string `json:"vmId"`
	RunID          string `json:"runId"`
	CheckpointID   string `json:"checkpointId"`
	ChangeTracking string `json:"changeTracking"`
	BlockSize      int64  `json:"blockSize"`
	// VM is recorded on the replica first (PrepareReplica does not create
	// the replica of a VM seen for the first time: only a run that got its
	// checkpoint, from a VM the job selects, does).
	VM *VM `json:"vm,omitempty"`
}

// BeginResult says whether an interrupted restore point is continued.
type BeginResult struct {
	Resumed   bool             `json:"resumed"`
	Positions map[string]int64 `json:"positions"`
	// Token is the secret the proxy presents on the data channel to write
	// this restore point; a new one is made by every Begin.
	Token string `json:"token,omitempty"`
}

// TransferInput sends one disk of a checkpoint.
type TransferInput struct {
	Job              JobSpec `json:"job"`
	VMID             string  `json:"vmId"`
	DiskID           string  `json:"diskId"`
	CheckpointID     string  `json:"checkpointId"`
	ReferencePoint   string  `json:"referencePoint"`
	HasPreviousPoint bool    `json:"hasPreviousPoint"`
	ParentWorkflowID string  `json:"parentWorkflowId"`
	// Deadline is when the backup window closes (zero: none); the transfer
	// stops there by itself, with its acknowledged position durable.
	Deadline time.Time `json:"deadline,omitempty"`
	// Token is BeginResult.Token: the data channel refuses a Hello without it.
	Token string `json:"token,omitempty"`
}

// CommitInput commits a restore point and applies retention.
type CommitInput struct {
	Job       string `json:"job"`
	VMID      string `json:"vmId"`
	Retention int    `json:"retention"`
	// CheckpointID is the source checkpoint of the point: a retried commit
	// whose first attempt committed before it could answer finds the point
	// by it and succeeds again.
	CheckpointID string `json:"checkpointId,omitempty"`
}

// ReferencePointInput turns a checkpoint into the next reference point.
type ReferencePointInput struct {
	Host         string `json:"host"`
	VMID         string `json:"vmId"`
	CheckpointID string `json:"checkpointId"`
	Previous     string `json:"previous"`
}

// RecordReferenceInput records on the replica which reference point matches a restore point.
type RecordReferenceInput struct {
	Job            string `json:"job"`
	VMID           string `json:"vmId"`
	Point          string `json:"point"`
	ReferencePoint string `json:"referencePoint"`
}

// ReleaseInput releases a checkpoint.
type ReleaseInput struct {
	Host         string `json:"host"`
	VMID         string `json:"vmId"`
	CheckpointID string `json:"checkpointId"`
}

// TargetStatus is what CheckTarget reports.
type TargetStatus struct {
	FreeBytes int64 `json:"freeBytes"`
}

// PositionsInput asks the target for the durable positions of an open restore point.
type PositionsInput struct {
	Job  string `json:"job"`
	VMID string `json:"vmId"`
}
