package provider

import (
	"context"
	"errors"
)

// ErrVMRunning: the operation needs the VM powered off.
var ErrVMRunning = errors.New("vm is running")

// ReplicaHost is a target's own virtualization host, where each replica is
// registered as a VM ready to start: its hardware that of the source (with
// the job's network mapping), its disks differencing children of a restore
// point. The restore points themselves are never written: whatever the
// replica VM writes goes to its children.
type ReplicaHost interface {
	// Host describes the host; ErrHostUnreachable when it does not answer.
	Host(ctx context.Context) (Host, error)
	// RegisterReplicaVM creates the powered-off VM spec.Name, or updates it:
	// its configuration becomes spec.Config and each disk a new, empty
	// differencing child of the disk's Parent; what the VM wrote before is
	// discarded. A running VM is refused with ErrVMRunning.
	RegisterReplicaVM(ctx context.Context, spec ReplicaVMSpec) (VM, error)
	// ReplicaVM returns the VM of that name (ErrVMNotFound if none).
	ReplicaVM(ctx context.Context, name string) (VM, error)
	// StartVM powers the VM on; StopVM powers it off (a VM already in that
	// state is not an error).
	StartVM(ctx context.Context, name string) error
	StopVM(ctx context.Context, name string) error
	// MakeStandalone gives the VM disks of its own: each disk's whole
	// chain is copied into a new disk that has no parent, and the VM stops
	// being a replica. Its restore points may then be deleted. Calling it
	// again on a standalone VM does nothing.
	MakeStandalone(ctx context.Context, name string) (VM, error)
}

// ReplicaVMSpec is what a replica VM is made of.
type ReplicaVMSpec struct {
	Name string
	// SourceID is the id of the VM it replicates.
	SourceID string
	Config   VMConfig
	Disks    []ReplicaVMDisk
}

// ReplicaVMDisk is one disk of a replica VM: the restore point's file its
// differencing child is made on.
type ReplicaVMDisk struct {
	ID     string
	Parent string
}

// ReplicaVMName is the name of the replica VM of a source VM: "<vm>_replica",
// as Veeam names replica VMs by default.
func ReplicaVMName(vm string) string { return vm + "_replica" }
