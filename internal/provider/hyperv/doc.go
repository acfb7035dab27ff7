// Package hyperv is the provider for Microsoft Hyper-V hosts, local or remote,
// through WMI (namespace root\virtualization\v2): inventory from
// Msvm_ComputerSystem and its settings, recovery checkpoints through
// Msvm_VirtualSystemSnapshotService, Resilient Change Tracking through
// Msvm_ImageManagementService.GetVirtualDiskChanges, and reference points
// through Msvm_VirtualSystemReferencePointService.
//
// Only the thin layer that talks COM/WMI (client_windows.go) is Windows-only.
// Everything else (query building, mapping of WMI property values, the change
// range loop, job polling, and the classification of WMI return codes into
// retryable or permanent errors) is platform-independent and unit-tested with
// recorded WMI values. On other systems New fails with ErrRequiresWindows.
package hyperv
