// Package hvsim is a Hyper-V host simulated at the WMI level: it answers the
// queries and method calls of namespace root\virtualization\v2 that the
// Hyper-V provider makes, so that the provider runs unchanged above it, on
// any system. Its VMs are lab VMs (package lab: a folder of VMs with real
// VHDX disks), so `starter lab create|write|ls` manage them.
//
// Its behaviour follows Microsoft's documentation of the classes, each rule
// with its source beside the code; where the documentation is silent, the
// rule says so. In short:
//
//   - Msvm_ComputerSystem.EnabledState takes the v2 values (2 running,
//     3 off, 6 saved, 9 paused).
//   - CreateSnapshot, DestroySnapshot, ConvertToReferencePoint and
//     DestroyReferencePoint always start a job (return value 4096); the job
//     runs for the configured delay and ends in 7 (completed), 32768
//     (completed with warnings, when configured) or 10 (exception) with
//     ErrorCode and ErrorDescription. Its work is done when it ends:
//     CreateSnapshot makes real differencing children of every VHDX, which
//     the VM writes to from then on.
//   - Return values follow each service's own table: 0–6 for
//     Msvm_VirtualSystemSnapshotService, 32768+ for the image management,
//     system management and reference point services.
//   - A reference point keeps one RCT id per disk, and its
//     VirtualDiskIdentifiers hold the InstanceIDs of the VM's
//     Msvm_StorageAllocationSettingData, index-aligned.
//   - GetVirtualDiskChanges answers from the lab's own record of every write
//     (64 KiB granularity) since the reference point of the RCT id; it
//     refuses a ByteLength not less than the disk's size and processes at
//     most 1 GiB per call.
//   - In parameters are checked by name and CIM type as the methods declare
//     them; a name the method does not declare is dropped, as the scripting
//     API of github.com/microsoft/wmi drops it, so a misspelled name shows
//     up as the missing parameter it becomes on a real host.
//   - VHD, VHD Set and pass-through disks and old configuration versions can
//     be put on a VM (SetVM), to see what the provider does with them.
//
// State lives in the host folder: the lab's VM folders, and .hvsim/ (jobs,
// per-VM attributes, a lock), so that several processes (workers, starter)
// share one simulated host.
package hvsim
