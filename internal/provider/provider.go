// Package provider is the interface to a virtualization host: inventory,
// point-in-time checkpoints, changed block tracking and reference points.
// Implementations live in subpackages: lab (a file-backed stand-in for a
// Hyper-V host) and hyperv (WMI, Windows only).
package provider

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/replicator/replicator/internal/disk"
)

// Errors with meaning. Wrap them with %w; callers test with errors.Is.
var (
	// ErrVMNotFound: the VM does not exist (any more) on the host. Not retryable.
	ErrVMNotFound = errors.New("vm not found")
	// ErrCheckpointNotFound: the checkpoint is gone (released, or deleted by an administrator).
	ErrCheckpointNotFound = errors.New("checkpoint not found")
	// ErrNoChangeTracking: changed ranges are not available for this disk and
	// reference point (first run, tracking reset, reference point lost).
	ErrNoChangeTracking = errors.New("change tracking not available")
	// ErrHostUnreachable: the host did not answer. Retryable.
	ErrHostUnreachable = errors.New("host unreachable")
	// ErrUnsupported: the VM has a disk or configuration the host cannot
	// checkpoint and track (a pass-through, VHD or VHD Set disk, a
	// configuration version without RCT). Not retryable.
	ErrUnsupported = errors.New("vm not supported")
)

// Host describes a virtualization host.
type Host struct {
	Name    string `json:"name"`
	Kind    string `json:"kind"` // "lab" or "hyperv"
	Version string `json:"version"`
}

// VM describes one virtual machine.
type VM struct {
	ID                   string `json:"id"`
	Name                 string `json:"name"`
	State                string `json:"state"` // "running", "off", "saved", "paused", "other"
	Generation           int    `json:"generation"`
	ConfigurationVersion string `json:"configurationVersion"`
	Disks                []Disk `json:"disks"`
	// Unsupported, when set, says why the VM cannot be replicated from this
	// host (a disk kind or configuration version without change tracking or
	// checkpoints of its disks); CreateCheckpoint refuses such a VM with
	// ErrUnsupported before it makes any checkpoint.
	Unsupported string `json:"unsupported,omitempty"`
}

// Disk describes one virtual disk of a VM as the VM sees it now.
type Disk struct {
	// ID is stable across checkpoints (the controller location on Hyper-V,
	// the disk index on the lab host), and safe as a file name.
	ID          string `json:"id"`
	Path        string `json:"path"`
	VirtualSize int64  `json:"virtualSize"`
	Format      string `json:"format"` // "vhdx", "vhd", "raw"
}

// Consistency of a checkpoint.
type Consistency int

const (
	CrashConsistent Consistency = iota
	ApplicationConsistent
)

// CheckpointOptions says how to take a checkpoint.
type CheckpointOptions struct {
	// Name is the checkpoint's name on the host (Hyper-V's ElementName):
	// CheckpointName(job, vm) for the checkpoints replicator makes, so that
	// they can be told apart from an administrator's and swept when no run
	// will reuse them.
	Name        string
	Consistency Consistency
	// FullBackup asks the guest's applications for a full backup (they may
	// truncate their logs) instead of a copy backup, which leaves them
	// alone: a replica is usually not the backup of record.
	FullBackup bool
}

// checkpointNamePrefix starts the name of every checkpoint replicator makes.
const checkpointNamePrefix = "replicator "

// CheckpointName is the name replicator gives the checkpoints (and reference
// points) it makes of a VM for a job: "replicator <job> <vm>".
func CheckpointName(job, vm string) string {
	return checkpointNamePrefix + job + " " + vm
}

// MadeByReplicator says whether a checkpoint name is one CheckpointName
// gives, for any job and VM.
func MadeByReplicator(name string) bool {
	return strings.HasPrefix(name, checkpointNamePrefix)
}

// MadeByJob says whether a checkpoint name is one CheckpointName gives for
// the job (of any VM). Job names hold no spaces (config's name policy), so
// the job is the name's second word.
func MadeByJob(name, job string) bool {
	rest, ok := strings.CutPrefix(name, checkpointNamePrefix)
	if !ok {
		return false
	}
	j, _, ok := strings.Cut(rest, " ")
	return ok && j == job
}

// Checkpoint is a point-in-time copy of a VM, frozen until released.
type Checkpoint struct {
	ID string `json:"id"`
	// Name is the checkpoint's name on the host (see CheckpointOptions.Name).
	Name    string           `json:"name,omitempty"`
	VMID    string           `json:"vmId"`
	Created time.Time        `json:"created"`
	Disks   []CheckpointDisk `json:"disks"`
	// Consistency is what the host made (CreateCheckpoint only): an
	// application-consistent request may fall back to crash-consistent.
	Consistency Consistency `json:"consistency"`
	// Warning is what the host reported while making the checkpoint without
	// failing (Hyper-V: a job completed with warnings, or an
	// application-consistent checkpoint that fell back to crash-consistent).
	Warning string `json:"warning,omitempty"`
}

// CheckpointDisk is one frozen disk of a checkpoint.
type CheckpointDisk struct {
	DiskID string `json:"diskId"`
	// Path of the frozen disk file (the parent of the child the VM now writes to).
	Path        string `json:"path"`
	VirtualSize int64  `json:"virtualSize"`
}

// Provider is one virtualization host.
type Provider interface {
	// Host describes the host; it fails with ErrHostUnreachable when the host does not answer.
	Host(ctx context.Context) (Host, error)
	// VMs lists the VMs of the host.
	VMs(ctx context.Context) ([]VM, error)
	// CreateCheckpoint freezes the VM's disks; new writes go to differencing children.
	CreateCheckpoint(ctx context.Context, vmID string, opts CheckpointOptions) (Checkpoint, error)
	// Checkpoint returns an existing checkpoint, or ErrCheckpointNotFound.
	Checkpoint(ctx context.Context, vmID, checkpointID string) (Checkpoint, error)
	// Checkpoints lists the VM's checkpoints, whoever made them, oldest first.
	Checkpoints(ctx context.Context, vmID string) ([]Checkpoint, error)
	// OpenDisk opens a frozen disk of a checkpoint for reading.
	OpenDisk(ctx context.Context, vmID, checkpointID, diskID string) (disk.Image, error)
	// ChangedRanges returns the byte ranges of the disk that changed between the
	// reference point and the checkpoint (a superset of what was written), or
	// ErrNoChangeTracking. An empty referencePoint always gives ErrNoChangeTracking.
	ChangedRanges(ctx context.Context, vmID, checkpointID, diskID, referencePoint string) ([]disk.Extent, error)
	// ConvertToReferencePoint turns a successfully copied checkpoint into the next
	// reference point (it releases the checkpoint) and destroys the previous
	// reference point. It returns the new reference point's id.
	ConvertToReferencePoint(ctx context.Context, vmID, checkpointID, previousReferencePoint string) (string, error)
	// ReleaseCheckpoint discards a checkpoint without keeping a reference point
	// (on failure or cancellation). Releasing a missing checkpoint is not an error.
	ReleaseCheckpoint(ctx context.Context, vmID, checkpointID string) error
	// VMConfig returns the VM's virtual hardware (vmconfig.go), or ErrVMNotFound.
	VMConfig(ctx context.Context, vmID string) (VMConfig, error)
}

// JoinWarnings joins two warnings of one operation with "; ", leaving out
// an empty one.
func JoinWarnings(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	default:
		return a + "; " + b
	}
}
