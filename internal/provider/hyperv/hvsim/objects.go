package hvsim

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/replicator/replicator/internal/provider"
	"github.com/replicator/replicator/internal/provider/hyperv"
)

// Class names and values of root\virtualization\v2 (learn.microsoft.com,
// hyperv_v2 "Hyper-V WMI classes").
const (
	classComputerSystem     = "Msvm_ComputerSystem"
	classSettingData        = "Msvm_VirtualSystemSettingData"
	classStorageAllocation  = "Msvm_StorageAllocationSettingData"
	classResourceAllocation = "Msvm_ResourceAllocationSettingData"
	classReferencePoint     = "Msvm_VirtualSystemReferencePoint"
	classJob                = "Msvm_ConcreteJob"
	classManagementService  = "Msvm_VirtualSystemManagementService"
	classSnapshotService    = "Msvm_VirtualSystemSnapshotService"
	classReferencePointSvc  = "Msvm_VirtualSystemReferencePointService"
	classImageManagement    = "Msvm_ImageManagementService"

	systemTypeRealized = "Microsoft:Hyper-V:System:Realized"
	systemTypeRecovery = "Microsoft:Hyper-V:Snapshot:Recovery"
	subTypeVirtualHD   = "Microsoft:Hyper-V:Virtual Hard Disk"
	subTypePhysicalHD  = "Microsoft:Hyper-V:Physical Disk Drive"

	// scsiController is the InstanceID part of the VM's SCSI controller
	// that its disks hang from (Microsoft:<VM>\<controller>\<index>\<location>\L).
	scsiController = "83F8638B-8DCA-4152-9EDA-2CA8B33039B4"
	// defaultConfigurationVersion is Windows Server 2019's (learn.microsoft.com,
	// "Supported virtual machine configuration versions").
	defaultConfigurationVersion = "9.0"
)

// simObject is one object with what associates it to others.
type simObject struct {
	obj hyperv.Object
	// owners are the paths the object is associated with: a setting data
	// for its resource allocations (Msvm_VirtualSystemSettingDataComponent),
	// a job for the element it affected (Msvm_AffectedJobElement).
	owners []string
}

func (o simObject) associated(path string) bool {
	for _, p := range o.owners {
		if strings.EqualFold(p, path) {
			return true
		}
	}
	return false
}

// path builds a WMI object path on this host. Backslashes and quotes inside
// key values are escaped with a backslash, as WMI writes them.
func (s *Sim) path(class string, keys ...string) string {
	var b strings.Builder
	b.WriteString(`\\` + s.opts.HostName + `\root\virtualization\v2:` + class + ".")
	for i := 0; i+1 < len(keys); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		v := strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(keys[i+1])
		b.WriteString(keys[i] + `="` + v + `"`)
	}
	return b.String()
}

func (s *Sim) servicePath(class string) string {
	return s.path(class, "CreationClassName", class, "Name", "vmms", "SystemCreationClassName", classComputerSystem, "SystemName", s.opts.HostName)
}

// enabledState maps the lab's states to Msvm_ComputerSystem.EnabledState in
// v2: 2 Enabled, 3 Disabled, 6 Enabled but Offline (saved), 9 Quiesce
// (paused) (learn.microsoft.com, hyperv_v2/msvm-computersystem).
func enabledState(state string) int32 {
	switch state {
	case "running":
		return 2
	case "off":
		return 3
	case "saved":
		return 6
	case "paused":
		return 9
	default:
		return 0
	}
}

// cimDateTime writes the DMTF datetime WMI uses.
func cimDateTime(t time.Time) string {
	t = t.UTC()
	return fmt.Sprintf("%s.%06d+000", t.Format("20060102150405"), t.Nanosecond()/1000)
}

// diskInstanceID is the InstanceID of the storage allocation of disk index i
// of a setting data (the VM's or a checkpoint's): the slot after the GUID
// stays the same across checkpoints.
func diskInstanceID(settingsGUID string, i int) string {
	return fmt.Sprintf(`Microsoft:%s\%s\0\%d\L`, settingsGUID, scsiController, i)
}

// rctID names the change tracking baseline of one disk at one reference
// point. Hyper-V's look like rctX:<guid>:<sequence>; these carry the
// reference point and the disk.
func rctID(referencePointID string, disk int) string {
	return fmt.Sprintf("rctX:%s:%d", referencePointID, disk)
}

// objects lists every object of the host. The caller holds the lock.
func (s *Sim) objects(ctx context.Context) ([]simObject, error) {
	out := []simObject{}
	for _, class := range []string{classManagementService, classSnapshotService, classReferencePointSvc, classImageManagement} {
		out = append(out, simObject{obj: hyperv.Object{Path: s.servicePath(class), Class: class, Props: map[string]any{
			"CreationClassName": class, "Name": "vmms", "SystemName": s.opts.HostName, "ElementName": class,
		}}})
	}
	vms, err := s.lab.VMs(ctx)
	if err != nil {
		return nil, err
	}
	for _, vm := range vms {
		objs, err := s.vmObjects(ctx, vm)
		if err != nil {
			return nil, err
		}
		out = append(out, objs...)
	}
	jobs, err := s.jobObjects()
	if err != nil {
		return nil, err
	}
	return append(out, jobs...), nil
}

func (s *Sim) vmObjects(ctx context.Context, vm provider.VM) ([]simObject, error) {
	attrs := s.attributes(vm.ID)
	version := defaultConfigurationVersion
	if attrs.ConfigurationVersion != "" {
		version = attrs.ConfigurationVersion
	}
	csPath := s.path(classComputerSystem, "CreationClassName", classComputerSystem, "Name", vm.ID)
	out := []simObject{{obj: hyperv.Object{Path: csPath, Class: classComputerSystem, Props: map[string]any{
		"CreationClassName": classComputerSystem, "Name": vm.ID, "ElementName": vm.Name,
		"EnabledState": enabledState(vm.State), "Caption": "Virtual Machine",
	}}}}
	vssdPath := s.path(classSettingData, "InstanceID", "Microsoft:"+vm.ID)
	out = append(out, simObject{obj: hyperv.Object{Path: vssdPath, Class: classSettingData, Props: map[string]any{
		"InstanceID": "Microsoft:" + vm.ID, "ElementName": vm.Name, "VirtualSystemIdentifier": vm.ID,
		"VirtualSystemType": systemTypeRealized, "VirtualSystemSubType": fmt.Sprintf("Microsoft:Hyper-V:SubType:%d", vm.Generation),
		"Version": version, "ConfigurationDataRoot": s.dir,
	}}})
	cfg, err := s.lab.VMConfig(ctx, vm.ID)
	if err != nil {
		return nil, err
	}
	out[1].obj.Props["SecureBootEnabled"] = cfg.SecureBoot
	hw, drives := s.hardwareObjects(vm, vssdPath, cfg)
	out = append(out, hw...)
	var diskIDs []string
	for i, d := range vm.Disks {
		id := diskInstanceID(vm.ID, i)
		diskIDs = append(diskIDs, id)
		sasd := s.storageAllocation(id, vssdPath, d.Path)
		sasd.obj.Props["Parent"] = drives[i]
		out = append(out, sasd)
	}
	for j, d := range attrs.ExtraDisks {
		i := len(vm.Disks) + j
		id := diskInstanceID(vm.ID, i)
		if d.Kind == "passthrough" {
			out = append(out, simObject{owners: []string{vssdPath}, obj: hyperv.Object{
				Path: s.path(classResourceAllocation, "InstanceID", strings.TrimSuffix(id, `\L`)+`\D`), Class: classResourceAllocation,
				Props: map[string]any{"InstanceID": strings.TrimSuffix(id, `\L`) + `\D`, "ResourceType": int32(17), "ResourceSubType": subTypePhysicalHD, "HostResource": []any{d.Path}},
			}})
			continue
		}
		out = append(out, s.storageAllocation(id, vssdPath, d.Path))
	}
	cps, err := s.lab.Checkpoints(ctx, vm.ID)
	if err != nil {
		return nil, err
	}
	for _, cp := range cps {
		snapPath := s.path(classSettingData, "InstanceID", "Microsoft:"+cp.ID)
		out = append(out, simObject{obj: hyperv.Object{Path: snapPath, Class: classSettingData, Props: map[string]any{
			"InstanceID": "Microsoft:" + cp.ID, "ElementName": cp.Name, "VirtualSystemIdentifier": vm.ID,
			"VirtualSystemType": systemTypeRecovery, "VirtualSystemSubType": fmt.Sprintf("Microsoft:Hyper-V:SubType:%d", vm.Generation),
			"Version": version, "CreationTime": cimDateTime(cp.Created),
		}}})
		for i, d := range cp.Disks {
			out = append(out, s.storageAllocation(diskInstanceID(cp.ID, i), snapPath, d.Path))
		}
	}
	rps, err := s.lab.ReferencePoints(ctx, vm.ID)
	if err != nil {
		return nil, err
	}
	for _, rp := range rps {
		// One RCT id per disk, index-aligned with VirtualDiskIdentifiers,
		// which hold the VM's storage allocation InstanceIDs
		// (learn.microsoft.com, hyperv_v2/msvm-virtualsystemreferencepoint).
		// The reference point keeps its checkpoint's name; the
		// documentation does not say what ElementName it gets.
		var rcts, disks []any
		for i := range vm.Disks {
			rcts = append(rcts, rctID(rp.ID, i))
			disks = append(disks, diskIDs[i])
		}
		id := "Microsoft:" + vm.ID + ":" + rp.ID
		out = append(out, simObject{obj: hyperv.Object{Path: s.path(classReferencePoint, "InstanceID", id), Class: classReferencePoint, Props: map[string]any{
			"InstanceID": id, "ElementName": rp.Name, "VirtualSystemIdentifier": vm.ID, "ReferencePointType": int32(1),
			"CreationTime": cimDateTime(rp.Created), "ResilientChangeTrackingIdentifiers": rcts, "VirtualDiskIdentifiers": disks,
		}}})
	}
	return out, nil
}

func (s *Sim) storageAllocation(instanceID, owner, hostPath string) simObject {
	return simObject{owners: []string{owner}, obj: hyperv.Object{
		Path: s.path(classStorageAllocation, "InstanceID", instanceID), Class: classStorageAllocation,
		Props: map[string]any{
			"InstanceID": instanceID, "ResourceType": int32(31), "ResourceSubType": subTypeVirtualHD,
			"HostResource": []any{hostPath}, "ElementName": "Hard Disk Image",
		},
	}}
}

// Classes and values of a VM's virtual hardware (learn.microsoft.com,
// hyperv_v2: Msvm_ProcessorSettingData, Msvm_MemorySettingData,
// Msvm_SyntheticEthernetPortSettingData, Msvm_EthernetPortAllocationSettingData,
// Msvm_VirtualEthernetSwitch; CIM_ResourceAllocationSettingData ResourceType:
// 3 processor, 4 memory, 5 IDE controller, 6 parallel SCSI HBA, 10 Ethernet
// adapter, 17 disk drive, 33 Ethernet connection).
const (
	classProcessorSettings = "Msvm_ProcessorSettingData"
	classMemorySettings    = "Msvm_MemorySettingData"
	classSyntheticPort     = "Msvm_SyntheticEthernetPortSettingData"
	classPortAllocation    = "Msvm_EthernetPortAllocationSettingData"
	classSwitch            = "Msvm_VirtualEthernetSwitch"

	subTypeSCSIController = "Microsoft:Hyper-V:Synthetic SCSI Controller"
	subTypeIDEController  = "Microsoft:Hyper-V:Emulated IDE Controller"
	subTypeDiskDrive      = "Microsoft:Hyper-V:Synthetic Disk Drive"
	subTypeSyntheticPort  = "Microsoft:Hyper-V:Synthetic Ethernet Port"
	subTypeConnection     = "Microsoft:Hyper-V:Ethernet Connection"
)

// hardwareObjects renders the VM's configuration as the setting data Hyper-V
// associates with its realized settings: processors, memory, disk
// controllers and drives (the drive of disk i is drives[i], the Parent of
// its storage allocation), network adapters and their switch connections.
func (s *Sim) hardwareObjects(vm provider.VM, vssdPath string, cfg provider.VMConfig) (out []simObject, drives []string) {
	rasd := func(class, instanceID string, props map[string]any) simObject {
		props["InstanceID"] = instanceID
		return simObject{owners: []string{vssdPath}, obj: hyperv.Object{Path: s.path(class, "InstanceID", instanceID), Class: class, Props: props}}
	}
	base := "Microsoft:" + vm.ID
	out = append(out, rasd(classProcessorSettings, base+`\b637f346-6a0e-4dec-af52-bd70cb80a21d\0`, map[string]any{
		"ResourceType": int32(3), "ElementName": "Processor", "VirtualQuantity": int64(cfg.Processors)}))
	out = append(out, rasd(classMemorySettings, base+`\4764334d-e001-4176-82ee-5594ec9b530e`, map[string]any{
		"ResourceType": int32(4), "ElementName": "Memory", "AllocationUnits": "byte * 2^20",
		"VirtualQuantity": cfg.MemoryBytes >> 20, "DynamicMemoryEnabled": cfg.DynamicMemory}))
	switches := map[string]bool{}
	controllers := map[string]string{} // "scsi/0" → path
	controller := func(kind string, n int) string {
		key := fmt.Sprintf("%s/%d", kind, n)
		if p, ok := controllers[key]; ok {
			return p
		}
		typ, sub, id := int32(6), subTypeSCSIController, fmt.Sprintf(`%s\%s\%d`, base, scsiController, n)
		if kind == "ide" {
			typ, sub, id = 5, subTypeIDEController, fmt.Sprintf(`%s\83F8638B-8DCA-4152-9EDA-2CA8B33039B4\ide%d`, base, n)
		}
		o := rasd(classResourceAllocation, id, map[string]any{"ResourceType": typ, "ResourceSubType": sub, "Address": fmt.Sprint(n)})
		out = append(out, o)
		controllers[key] = o.obj.Path
		return o.obj.Path
	}
	for i := range vm.Disks {
		slot := provider.DiskSlot{Controller: "scsi", Location: i}
		if i < len(cfg.Disks) {
			slot = cfg.Disks[i]
		}
		parent := controller(slot.Controller, slot.ControllerNumber)
		id := strings.TrimSuffix(diskInstanceID(vm.ID, i), `\L`) + `\D`
		o := rasd(classResourceAllocation, id, map[string]any{"ResourceType": int32(17), "ResourceSubType": subTypeDiskDrive,
			"Parent": parent, "AddressOnParent": fmt.Sprint(slot.Location)})
		out = append(out, o)
		drives = append(drives, o.obj.Path)
	}
	for i, n := range cfg.NetworkAdapters {
		id := fmt.Sprintf(`%s\%08X-0000-0000-0000-000000000000`, base, i)
		port := rasd(classSyntheticPort, id, map[string]any{"ResourceType": int32(10), "ResourceSubType": subTypeSyntheticPort,
			"ElementName": n.Name, "Address": n.MAC, "StaticMacAddress": n.StaticMAC})
		out = append(out, port)
		var host []any
		if n.Switch != "" {
			sw := s.path(classSwitch, "CreationClassName", classSwitch, "Name", n.Switch)
			host = []any{sw}
			if !switches[n.Switch] {
				switches[n.Switch] = true
				out = append(out, simObject{obj: hyperv.Object{Path: sw, Class: classSwitch, Props: map[string]any{
					"CreationClassName": classSwitch, "Name": n.Switch, "ElementName": n.Switch}}})
			}
		}
		out = append(out, rasd(classPortAllocation, id+`\C`, map[string]any{"ResourceType": int32(33), "ResourceSubType": subTypeConnection,
			"Parent": port.obj.Path, "HostResource": host}))
	}
	return out, drives
}
