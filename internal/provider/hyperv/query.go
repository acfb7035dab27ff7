package hyperv

import (
	"context"
	"fmt"
	"strings"
)

// WMI class names and values used in queries.
const (
	classComputerSystem      = "Msvm_ComputerSystem"
	classSettingData         = "Msvm_VirtualSystemSettingData"
	classStorageAllocation   = "Msvm_StorageAllocationSettingData"
	classResourceAllocation  = "Msvm_ResourceAllocationSettingData"
	classSnapshotService     = "Msvm_VirtualSystemSnapshotService"
	classSnapshotSettingData = "Msvm_VirtualSystemSnapshotSettingData"
	classReferencePoint      = "Msvm_VirtualSystemReferencePoint"
	classReferencePointSvc   = "Msvm_VirtualSystemReferencePointService"
	classImageManagement     = "Msvm_ImageManagementService"
	classManagementService   = "Msvm_VirtualSystemManagementService"
	systemTypeRealized       = "Microsoft:Hyper-V:System:Realized"
	systemTypeRecovery       = "Microsoft:Hyper-V:Snapshot:Recovery"
	systemTypeSnapshot       = "Microsoft:Hyper-V:Snapshot:Realized"
	resourceSubTypeVirtualHD = "Microsoft:Hyper-V:Virtual Hard Disk"
	// resourceSubTypePhysicalDisk is a pass-through disk (a host disk given
	// to the VM whole).
	resourceSubTypePhysicalDisk = "Microsoft:Hyper-V:Physical Disk Drive"
	instanceIDPrefix            = "Microsoft:"
)

// wqlString quotes s as a WQL string literal. WQL escapes backslash and the
// quote character with a backslash; control characters cannot be expressed
// and are rejected, so that a name can never end the literal early.
func wqlString(s string) (string, error) {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return "", fmt.Errorf("wql: value %q has a control character at byte %d", s, i)
		}
	}
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
	return "'" + r.Replace(s) + "'", nil
}

// selectWhere builds "SELECT * FROM class WHERE prop = 'value'".
func selectWhere(class, prop, value string) (string, error) {
	lit, err := wqlString(value)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("SELECT * FROM %s WHERE %s = %s", class, prop, lit), nil
}

// selectAll builds "SELECT * FROM class".
func selectAll(class string) string { return "SELECT * FROM " + class }

// associatorsOf builds "ASSOCIATORS OF {path} WHERE ResultClass = class".
// Object paths come from WMI itself; a path with a brace could end the
// braces early and is rejected.
func associatorsOf(path, resultClass string) (string, error) {
	if path == "" || strings.ContainsAny(path, "{}") {
		return "", fmt.Errorf("wql: object path %q cannot be used in ASSOCIATORS OF", path)
	}
	return fmt.Sprintf("ASSOCIATORS OF {%s} WHERE ResultClass = %s", path, resultClass), nil
}

// associators returns the objects of resultClass associated with the object
// at path.
func associators(ctx context.Context, c wmiClient, path, resultClass string) ([]object, error) {
	q, err := associatorsOf(path, resultClass)
	if err != nil {
		return nil, err
	}
	return c.Query(ctx, q)
}

// settingDataInstanceID turns a checkpoint id (the GUID, or the full
// InstanceID) into the InstanceID of its Msvm_VirtualSystemSettingData.
func settingDataInstanceID(checkpointID string) string {
	if strings.HasPrefix(checkpointID, instanceIDPrefix) {
		return checkpointID
	}
	return instanceIDPrefix + checkpointID
}

// checkpointIDOf is the public id of a checkpoint: its InstanceID without
// the "Microsoft:" prefix (the snapshot's GUID).
func checkpointIDOf(instanceID string) string {
	return strings.TrimPrefix(instanceID, instanceIDPrefix)
}
