// Package contract holds the names and shapes that Temporal, operators and the
// acceptance checks see: workflow and query names, task queues, and the JSON of
// workflow inputs and results. docs/contract.md describes them for users, and
// its tests keep it true to the workflows registered. Workflows and
// activities both import it; it has no behavior and no I/O.
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
//
// A job larger than one inventory page carries, instead of every VM, the VMs
// of the page in hand in Pending, the inventory position where the next page
// starts in Cursor, and a result whose finished VMs past the result budget
// are only counted (ReplicationResult.Omitted): its size does not grow with
// the job.
type RunContinuation struct {
	Spec     JobSpec           `json:"spec"`
	Deadline time.Time         `json:"deadline"`
	Pending  []VM              `json:"pending"`
	Result   ReplicationResult `json:"result"`
	// Cursor is the id of the last VM of the pages already read (the
	// inventory is paged in VM id order); empty when every VM is in Pending.
	Cursor string `json:"cursor,omitempty"`
	// Paged says the run reads its inventory in pages: the VMs after Cursor
	// are still to read from the host.
	Paged bool `json:"paged,omitempty"`
	// Patterns are the inventory patterns the pages are read with.
	Patterns []string `json:"patterns,omitempty"`
}

// ReplicationResult is the result (and the progress) of a run.
type ReplicationResult struct {
	Job    string     `json:"job"`
	Status string     `json:"status"`
	RunID  string     `json:"runId"`
	VMs    []VMResult `json:"vms"`
	// Checks are what the run checked of the infrastructure before any checkpoint.
	Checks []Check `json:"checks,omitempty"`
	// RPOExceeded counts the VMs whose newest restore point was older than
	// the job's rpo when their run ended.
	RPOExceeded int `json:"rpoExceeded,omitempty"`
	// VMsOmitted counts the run's VMs that vms does not list: a job of more
	// VMs than the result's budget lists the VMs in progress, the failed and
	// partial ones first, and counts the rest in Omitted; not yet read ones
	// (a paged inventory) are counted in Omitted.Pending. Each omitted VM's
	// detail is the result of its workflow (VMWorkflowID), which `starter run
	// --wait` and `starter status` put back into vms.
	VMsOmitted int `json:"vmsOmitted,omitempty"`
	// Omitted sums the VMs left out of vms.
	Omitted *VMTally `json:"omitted,omitempty"`
}

// VMTally counts VMs by status and sums their disks' figures.
type VMTally struct {
	Success     int `json:"success"`
	Partial     int `json:"partial"`
	Failed      int `json:"failed"`
	Pending     int `json:"pending"`
	RPOExceeded int `json:"rpoExceeded,omitempty"`
	// Unread counts the VMs of a paged inventory the run never read: those
	// still to come (in Pending) or, once the window closed or the run was
	// cancelled, left for the next run (in Partial). They have no workflow.
	Unread       int   `json:"unread,omitempty"`
	BytesRead    int64 `json:"bytesRead"`
	BytesSent    int64 `json:"bytesSent"`
	BytesWritten int64 `json:"bytesWritten"`
	// Size is the virtual size of the VMs' disks.
	Size int64 `json:"size"`
}

// Check is one infrastructure check of a run.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
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
	// Attempts is how many times the run tried the VM (retries included).
	Attempts int `json:"attempts,omitempty"`
	// Retryable says a failure may pass: the run tries the VM again.
	Retryable bool `json:"retryable,omitempty"`
	// PointTime is when the source froze the data of the VM's newest
	// committed restore point (zero: it has none); LagSeconds is that
	// point's age when the VM's run ended, and RPOExceeded says the age
	// passed the job's rpo.
	PointTime   time.Time `json:"pointTime,omitzero"`
	LagSeconds  float64   `json:"lagSeconds,omitempty"`
	RPOExceeded bool      `json:"rpoExceeded,omitempty"`
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
	// Warning says what the transfer could not do as configured (an
	// exclusion that cannot apply to a file system).
	Warning string `json:"warning,omitempty"`
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
	// Overlap is what the run does with a VM another run is replicating:
	// OverlapSkip (also when empty) or OverlapWait.
	Overlap string `json:"overlap,omitempty"`
	// WindowHours and Timezone are the job's permitted hours. LoadJob reads
	// them at the run's start: WindowEnd is when the permitted period that
	// holds the start ends (zero: no end); WindowOpens, set only when the run
	// starts outside its hours, is when they next open.
	WindowHours string    `json:"windowHours,omitempty"`
	Timezone    string    `json:"timezone,omitempty"`
	WindowEnd   time.Time `json:"windowEnd,omitzero"`
	WindowOpens time.Time `json:"windowOpens,omitzero"`
	// Retries and RetryWait: a VM that failed for a reason that may pass is
	// tried again inside the run.
	Retries   int           `json:"retries,omitempty"`
	RetryWait time.Duration `json:"retryWait,omitempty"`
	// RPO is the job's recovery point objective (0: none).
	RPO time.Duration `json:"rpo,omitempty"`
	// SearchAttributes says the namespace has ReplicatorJob and ReplicatorVM:
	// only then does a run set them (an unknown one fails the workflow task).
	SearchAttributes bool `json:"searchAttributes,omitempty"`
	// Notify lists the notification channels configured (webhook, smtp).
	Notify []string `json:"notify,omitempty"`
}

// Notification is what a finished run sends to notify.webhook and notify.smtp.
type Notification struct {
	WorkflowID string            `json:"workflowId"`
	Result     ReplicationResult `json:"result"`
	// Error is why the run failed as a whole ("" when it ended with a result).
	Error string `json:"error,omitempty"`
}

// Events of an RPONotification.
const (
	// RPOExceeded: the VMs' newest restore points became older than their
	// job's rpo (or they have none).
	RPOExceeded = "rpoExceeded"
	// RPORecovered: the VMs, past their rpo before, have a restore point
	// younger than it again.
	RPORecovered = "rpoRecovered"
)

// RPONotification is what a target agent sends to notify.webhook and
// notify.smtp when VMs it holds pass their job's rpo, once per breach, and
// when they are back within it. Unlike a run's Notification it has Event.
type RPONotification struct {
	Event string `json:"event"`
	// Agent is the target agent (agent.name) holding the replicas.
	Agent string     `json:"agent"`
	Time  time.Time  `json:"time"`
	VMs   []RPOState `json:"vms"`
}

// RPOState is one VM of an RPONotification.
type RPOState struct {
	Job string `json:"job"`
	VM  string `json:"vm"`
	// RPO is the job's rpo, as configured (e.g. "30s").
	RPO string `json:"rpo"`
	// PointTime is when the source froze the newest restore point's data
	// (absent: the VM has no restore point).
	PointTime *time.Time `json:"pointTime,omitempty"`
	// LagSeconds is the newest point's age at Time (absent with PointTime).
	LagSeconds float64 `json:"lagSeconds,omitempty"`
}

// Values of JobSpec.Overlap.
const (
	OverlapSkip = "skip"
	OverlapWait = "wait"
)

// VMWorkflowID is the workflow id of every VMReplicationWorkflow of one VM of
// a source host, whichever job and run start it: Temporal lets one workflow
// with a given id run at a time, so two runs never replicate a VM at once.
func VMWorkflowID(host, vmID string) string { return "vm/" + host + "/" + vmID }

// ScheduleID names the Temporal Schedule of a job (starter schedule, and
// the one the jobs role keeps for a job's rpo).
func ScheduleID(job string) string { return "replication-" + job }

// Custom search attributes of runs: the job (Keyword) and the VM names a
// run or a VM's workflow replicates (KeywordList), so that
// `ReplicatorVM = 'web01'` finds a VM's runs in the Web UI and the CLI.
const (
	SearchAttributeJob = "ReplicatorJob"
	SearchAttributeVM  = "ReplicatorVM"
)

// MemoJob is the memo key that holds the job name of a VM's workflow.
const MemoJob = "job"

// Activity names. Activities are registered under their method names.
const (
	ActLoadJob                 = "LoadJob"
	ActCheckSource             = "CheckSource"
	ActInventory               = "Inventory"
	ActInventoryPage           = "InventoryPage"
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
	ActSweepCheckpoints        = "SweepCheckpoints"
	ActDescribeVMRun           = "DescribeVMRun"
	ActProbeDataChannel        = "ProbeDataChannel"
	ActCheckSpace              = "CheckSpace"
	ActNotify                  = "Notify"
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
	// ErrTypeNoSpace: the target datastore has no room for the run.
	ErrTypeNoSpace = "NoSpace"
	// ErrTypeDataChannel: the proxy cannot open the target's data channel.
	ErrTypeDataChannel = "DataChannel"
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
	// Unsupported, when set, says why the host cannot replicate the VM (a
	// pass-through, VHD or VHD Set disk, a configuration version without
	// resilient change tracking), naming the disk: the run fails the VM at
	// its infrastructure check, before any checkpoint.
	Unsupported string `json:"unsupported,omitempty"`
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
	// Job, when set, bounds the answer to the VMs that job's configured
	// selection (jobs[].vms in the source worker's file) picks: Patterns
	// can narrow a job, never widen it. Empty in histories recorded
	// before it existed.
	Job string `json:"job,omitempty"`
	// After and Limit page the inventory (InventoryPage only): the VMs whose
	// id sorts after After, at most Limit of them (and fewer when their JSON
	// passes InventoryPageBytes).
	After string `json:"after,omitempty"`
	Limit int    `json:"limit,omitempty"`
}

// InventoryPageBytes bounds the JSON of one inventory page (each disk of a
// VM past two weighing 240 bytes more, for the result the run lists of it),
// so that a page and its VMs' pending results stay under Temporal's 512 KiB
// payload warning whatever a VM's disks and configuration.
const InventoryPageBytes = 192 << 10

// InventoryPage is one page of a host's inventory, in VM id order.
type InventoryPage struct {
	VMs []VM `json:"vms"`
	// More says VMs follow the page's last one.
	More bool `json:"more"`
	// Total is the number of VMs the patterns select on the whole host, and
	// Missing the patterns naming one VM (no wildcard) that select none;
	// both only on the first page (After empty).
	Total   int      `json:"total"`
	Missing []string `json:"missing,omitempty"`
}

// CheckpointInput asks for a checkpoint of a VM; when ReuseID names a checkpoint
// that still exists, it is reused (an interrupted run resumes from it).
type CheckpointInput struct {
	Host    string `json:"host"`
	Job     string `json:"job"`
	VMID    string `json:"vmId"`
	VMName  string `json:"vmName"`
	ReuseID string `json:"reuseId"`
	// Sweep asks the same activity to remove, once the checkpoint exists,
	// the job's other checkpoints of the VM (as SweepCheckpoints with Keep
	// set to the checkpoint): one round trip instead of two.
	Sweep bool `json:"sweep,omitempty"`
}

// CheckpointResult is the checkpoint a VM run reads.
type CheckpointResult struct {
	ID      string `json:"id"`
	Reused  bool   `json:"reused"`
	Warning string `json:"warning"`
	// Consistency is "application" or "crash".
	Consistency string `json:"consistency"`
	// Taken is when the host made the checkpoint: the time of the data.
	Taken time.Time `json:"taken,omitzero"`
	// Removed is what the sweep asked by CheckpointInput.Sweep removed;
	// SweepError says why it could not finish (the checkpoint itself exists).
	Removed    []string `json:"removed,omitempty"`
	SweepError string   `json:"sweepError,omitempty"`
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
	// Exclusions is the set NewestPoint was made with (nil: not recorded,
	// by a version that did not record it).
	Exclusions *Exclusions `json:"exclusions,omitempty"`
	// NewestPointTime is when the source froze NewestPoint's data.
	NewestPointTime time.Time `json:"newestPointTime,omitzero"`
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
	// Exclusions is the set the point is made with (nil: not recorded).
	Exclusions *Exclusions `json:"exclusions,omitempty"`
	// CheckpointTime is when the host made the checkpoint: the point's time
	// (zero: the time the point was opened).
	CheckpointTime time.Time `json:"checkpointTime,omitzero"`
}

// Exclusions is what a restore point was made without: swap (and page,
// hibernation files) and guest paths. A point records its set so that a run
// with another set sends what the earlier one left out.
type Exclusions struct {
	Swap  bool     `json:"swap"`
	Paths []string `json:"paths"`
}

// Equal says whether two sets exclude the same.
func (e Exclusions) Equal(o Exclusions) bool {
	if e.Swap != o.Swap || len(e.Paths) != len(o.Paths) {
		return false
	}
	seen := map[string]int{}
	for _, p := range e.Paths {
		seen[p]++
	}
	for _, p := range o.Paths {
		if seen[p] == 0 {
			return false
		}
		seen[p]--
	}
	return true
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
	// PreviousExclusions is the set the previous point was made with: what
	// it excluded and this run does not is sent whatever the mode.
	PreviousExclusions *Exclusions `json:"previousExclusions,omitempty"`
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

// SweepInput asks a source host to remove the checkpoints a job made of a VM
// (recognised by their name) except Keep, the one a restore point will
// continue from ("" keeps none).
type SweepInput struct {
	Host string `json:"host"`
	Job  string `json:"job"`
	VMID string `json:"vmId"`
	Keep string `json:"keep"`
}

// VMRun is the run that replicates a VM now (DescribeVMRun's answer).
type VMRun struct {
	WorkflowID string `json:"workflowId"`
	RunID      string `json:"runId"`
	// ParentWorkflowID is the job run the VM's workflow belongs to.
	ParentWorkflowID string    `json:"parentWorkflowId"`
	Job              string    `json:"job"`
	Started          time.Time `json:"started"`
	Running          bool      `json:"running"`
}

// TargetStatus is what CheckTarget reports.
type TargetStatus struct {
	FreeBytes int64 `json:"freeBytes"`
	// Listen is the agent's data channel address (agent.listen), Datastore its agent.datastore.
	Listen    string `json:"listen,omitempty"`
	Datastore string `json:"datastore,omitempty"`
}

// ProbeInput asks the proxy to open a target's data channel and ping its agent.
type ProbeInput struct {
	Target  string `json:"target"`
	Address string `json:"address"`
	// AgentListen is where the agent says it listens, to tell a wrong address.
	AgentListen string `json:"agentListen"`
}

// SpaceInput asks the target whether its datastore has room for a run of these VMs.
type SpaceInput struct {
	Job string `json:"job"`
	VMs []VM   `json:"vms"`
	// Before is the estimate of the run's VMs of the pages checked before
	// these (a paged inventory): the room asked for is theirs and these VMs'.
	Before SpaceTally `json:"before,omitzero"`
}

// SpaceTally is what the VMs of a run may write: First VMs with no restore
// point yet (at their virtual size), Incremental ones like their latest
// points, Bytes in all (without the margin).
type SpaceTally struct {
	First       int   `json:"first"`
	Incremental int   `json:"incremental"`
	Bytes       int64 `json:"bytes"`
}

// SpaceStatus is the room a run needs and the room there is.
type SpaceStatus struct {
	FreeBytes   int64  `json:"freeBytes"`
	NeededBytes int64  `json:"neededBytes"`
	Detail      string `json:"detail"`
	// Tally is the estimate of these VMs and those before them.
	Tally SpaceTally `json:"tally,omitzero"`
}

// PositionsInput asks the target for the durable positions of an open restore point.
type PositionsInput struct {
	Job  string `json:"job"`
	VMID string `json:"vmId"`
}
