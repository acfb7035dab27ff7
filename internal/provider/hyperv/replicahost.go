package hyperv

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/replicator/replicator/internal/provider"
)

// ReplicaHost is a Hyper-V host where a target registers replica VMs. Their
// differencing disks live in Folder\<vm-name>\ on the host.
//
// The WMI sequence follows Microsoft's documentation of
// Msvm_VirtualSystemManagementService (DefineSystem, AddResourceSettings,
// DestroySystem) and Msvm_ImageManagementService (CreateVirtualHardDisk,
// ConvertVirtualHardDisk), and the resource types and subtypes Hyper-V
// reports for its devices (learn.microsoft.com, "Hyper-V WMI provider (V2)").
// Like the rest of this package it has run against recorded answers only.
type ReplicaHost struct {
	*Provider
	Folder string
}

var _ provider.ReplicaHost = (*ReplicaHost)(nil)

// Values of the classes a replica VM is made of.
const (
	classVirtualSwitch    = "Msvm_VirtualEthernetSwitch"
	classRASD             = "Msvm_ResourceAllocationSettingData"
	classVHDSettingData   = "Msvm_VirtualHardDiskSettingData"
	vhdTypeDynamic        = uint16(3)
	vhdTypeDifferencing   = uint16(4)
	vhdFormatVHDX         = uint16(3)
	resourceTypeDrive     = uint16(17)
	resourceTypeLogical   = uint16(31)
	resourceTypeEthernet  = uint16(10)
	resourceTypeEthConn   = uint16(33)
	subTypeSCSIController = "Microsoft:Hyper-V:Synthetic SCSI Controller"
	subTypeDiskDrive      = "Microsoft:Hyper-V:Synthetic Disk Drive"
	subTypeEthernetPort   = "Microsoft:Hyper-V:Synthetic Ethernet Port"
	subTypeEthConnection  = "Microsoft:Hyper-V:Ethernet Connection"
)

// vmByName returns the Msvm_ComputerSystem whose ElementName is name, or ErrVMNotFound.
func (h *ReplicaHost) vmByName(ctx context.Context, name string) (object, error) {
	q, err := selectWhere(classComputerSystem, "ElementName", name)
	if err != nil {
		return object{}, err
	}
	objs, err := h.c.Query(ctx, q)
	if err != nil {
		return object{}, err
	}
	if len(objs) == 0 {
		return object{}, &Error{Op: fmt.Sprintf("find VM %q", name), err: provider.ErrVMNotFound}
	}
	if len(objs) > 1 {
		return object{}, &Error{Op: fmt.Sprintf("find VM %q", name), Description: "several VMs carry that name; rename the others"}
	}
	return objs[0], nil
}

// ReplicaVM returns the VM of that name with its disks.
func (h *ReplicaHost) ReplicaVM(ctx context.Context, name string) (provider.VM, error) {
	sys, err := h.vmByName(ctx, name)
	if err != nil {
		return provider.VM{}, err
	}
	vssd, err := h.realized(ctx, sys.str("Name"))
	if err != nil {
		return provider.VM{}, err
	}
	vm := mapVM(sys, vssd)
	refs, err := h.diskRefsOf(ctx, vssd.Path)
	if err != nil {
		return vm, err
	}
	for _, r := range refs {
		vm.Disks = append(vm.Disks, provider.Disk{ID: r.ID, Path: r.Path, Format: formatOf(r.Path)})
	}
	return vm, nil
}

// realized returns the realized setting data of a VM.
func (h *ReplicaHost) realized(ctx context.Context, vmID string) (object, error) {
	q, err := selectWhere(classSettingData, "VirtualSystemIdentifier", vmID)
	if err != nil {
		return object{}, err
	}
	objs, err := h.c.Query(ctx, q)
	if err != nil {
		return object{}, err
	}
	for _, o := range objs {
		if o.str("VirtualSystemType") == systemTypeRealized {
			return o, nil
		}
	}
	return object{}, &Error{Op: "read the settings of VM " + vmID, err: provider.ErrVMNotFound}
}

// StartVM starts the VM of that name.
func (h *ReplicaHost) StartVM(ctx context.Context, name string) error {
	sys, err := h.vmByName(ctx, name)
	if err != nil {
		return err
	}
	return h.Provider.StartVM(ctx, sys.str("Name"))
}

// StopVM shuts the VM of that name down cleanly.
func (h *ReplicaHost) StopVM(ctx context.Context, name string) error {
	sys, err := h.vmByName(ctx, name)
	if err != nil {
		return err
	}
	return h.Provider.StopVM(ctx, sys.str("Name"))
}

// RegisterReplicaVM defines the VM anew: an existing VM of that name (off)
// is destroyed (its configuration only: Hyper-V leaves disk files), the
// disks are created as differencing children of the restore points, and the
// VM is defined with its processors and memory, then given a SCSI
// controller (generation 2) or its IDE controller (generation 1), a drive
// and disk per disk slot, and its network adapters with their MAC addresses,
// connected to the switch of the same name when the host has one.
func (h *ReplicaHost) RegisterReplicaVM(ctx context.Context, spec provider.ReplicaVMSpec) (provider.VM, error) {
	op := "register replica VM " + spec.Name
	if err := spec.Config.Check(); err != nil {
		return provider.VM{}, fmt.Errorf("%s: %w", op, err)
	}
	if h.Folder == "" {
		return provider.VM{}, &Error{Op: op, Description: "no folder for replica VMs"}
	}
	if strings.ContainsAny(spec.Name, `\/:*?"<>|`) {
		return provider.VM{}, &Error{Op: op, Description: "the name cannot be a folder name"}
	}
	vsms, err := h.servicePath(ctx, classManagementService)
	if err != nil {
		return provider.VM{}, fmt.Errorf("%s: %w", op, err)
	}
	ims, err := h.servicePath(ctx, classImageManagement)
	if err != nil {
		return provider.VM{}, fmt.Errorf("%s: %w", op, err)
	}
	if old, err := h.vmByName(ctx, spec.Name); err == nil {
		if st, _ := old.int("EnabledState"); st != enabledStateDisabled {
			return provider.VM{}, fmt.Errorf("%s: %w; power it off first", op, provider.ErrVMRunning)
		}
		if _, err := h.call(ctx, op, kindGeneric, vsms, "DestroySystem", map[string]any{"AffectedSystem": old.Path}, []string{"Job"}); err != nil {
			return provider.VM{}, err
		}
	} else if !errors.Is(err, provider.ErrVMNotFound) {
		return provider.VM{}, fmt.Errorf("%s: %w", op, err)
	}
	dir := strings.TrimRight(h.Folder, `\`) + `\` + spec.Name
	stamp := h.now().UTC().Format("20060102T150405")
	children := map[string]string{}
	for _, d := range spec.Disks {
		child := fmt.Sprintf(`%s\disk%s_%s.avhdx`, dir, d.ID, stamp)
		sd, err := h.c.EmbeddedInstance(ctx, classVHDSettingData, map[string]any{
			"Type": vhdTypeDifferencing, "Format": vhdFormatVHDX, "Path": child, "ParentPath": d.Parent})
		if err != nil {
			return provider.VM{}, fmt.Errorf("%s: %w", op, err)
		}
		if _, err := h.call(ctx, op, kindGeneric, ims, "CreateVirtualHardDisk", map[string]any{"VirtualDiskSettingData": sd}, []string{"Job"}); err != nil {
			return provider.VM{}, err
		}
		children[d.ID] = child
	}
	cfg := spec.Config
	subType := "Microsoft:Hyper-V:SubType:2"
	if cfg.Generation == 1 {
		subType = "Microsoft:Hyper-V:SubType:1"
	}
	sysProps := map[string]any{"ElementName": spec.Name, "VirtualSystemSubType": subType, "ConfigurationDataRoot": dir}
	if cfg.Generation != 1 {
		sysProps["SecureBootEnabled"] = cfg.SecureBoot
	}
	vssdText, err := h.c.EmbeddedInstance(ctx, classSettingData, sysProps)
	if err != nil {
		return provider.VM{}, fmt.Errorf("%s: %w", op, err)
	}
	var resources []string
	if cfg.Processors > 0 {
		s, err := h.c.EmbeddedInstance(ctx, classProcessorSettings, map[string]any{"VirtualQuantity": uint64(cfg.Processors)})
		if err != nil {
			return provider.VM{}, fmt.Errorf("%s: %w", op, err)
		}
		resources = append(resources, s)
	}
	if cfg.MemoryBytes > 0 {
		s, err := h.c.EmbeddedInstance(ctx, classMemorySettings, map[string]any{
			"VirtualQuantity": uint64(cfg.MemoryBytes >> 20), "DynamicMemoryEnabled": cfg.DynamicMemory})
		if err != nil {
			return provider.VM{}, fmt.Errorf("%s: %w", op, err)
		}
		resources = append(resources, s)
	}
	res, err := h.call(ctx, op, kindGeneric, vsms, "DefineSystem",
		map[string]any{"SystemSettings": vssdText, "ResourceSettings": resources}, []string{"ResultingSystem", "Job"})
	if err != nil {
		return provider.VM{}, err
	}
	sys, err := h.resultingObject(ctx, op, res, "ResultingSystem", classComputerSystem)
	if err != nil {
		return provider.VM{}, err
	}
	vssd, err := h.realized(ctx, sys.str("Name"))
	if err != nil {
		return provider.VM{}, fmt.Errorf("%s: %w", op, err)
	}
	add := func(class string, props map[string]any) (string, error) {
		s, err := h.c.EmbeddedInstance(ctx, class, props)
		if err != nil {
			return "", fmt.Errorf("%s: %w", op, err)
		}
		r, err := h.call(ctx, op, kindGeneric, vsms, "AddResourceSettings",
			map[string]any{"AffectedConfiguration": vssd.Path, "ResourceSettings": []string{s}}, []string{"ResultingResourceSettings", "Job"})
		if err != nil {
			return "", err
		}
		paths := asStrings(r.Out["ResultingResourceSettings"])
		if len(paths) == 0 {
			return "", &Error{Op: op, Description: "AddResourceSettings of " + class + " returned no resource"}
		}
		return paths[0], nil
	}
	controllers := map[string]string{} // "scsi/0" → path of the controller
	controller := func(slot provider.DiskSlot) (string, error) {
		key := fmt.Sprintf("%s/%d", slot.Controller, slot.ControllerNumber)
		if p, ok := controllers[key]; ok {
			return p, nil
		}
		if slot.Controller == "ide" {
			// Generation 1 VMs come with their two IDE controllers.
			objs, err := associators(ctx, h.c, vssd.Path, classRASD)
			if err != nil {
				return "", err
			}
			for _, o := range objs {
				if t, _ := o.int("ResourceType"); t == resourceTypeIDE && o.str("Address") == fmt.Sprint(slot.ControllerNumber) {
					controllers[key] = o.Path
					return o.Path, nil
				}
			}
			return "", &Error{Op: op, Description: fmt.Sprintf("no IDE controller %d", slot.ControllerNumber)}
		}
		p, err := add(classRASD, map[string]any{"ResourceType": uint16(resourceTypeSCSI), "ResourceSubType": subTypeSCSIController})
		if err != nil {
			return "", err
		}
		controllers[key] = p
		return p, nil
	}
	slots := map[string]provider.DiskSlot{}
	for _, s := range cfg.Disks {
		slots[s.ID] = s
	}
	for i, d := range spec.Disks {
		slot, ok := slots[d.ID]
		if !ok {
			slot = provider.DiskSlot{ID: d.ID, Controller: "scsi", Location: i}
		}
		if cfg.Generation != 1 {
			slot.Controller = "scsi" // generation 2 VMs have no IDE
		}
		ctrl, err := controller(slot)
		if err != nil {
			return provider.VM{}, err
		}
		drive, err := add(classRASD, map[string]any{"ResourceType": resourceTypeDrive, "ResourceSubType": subTypeDiskDrive,
			"Parent": ctrl, "AddressOnParent": fmt.Sprint(slot.Location)})
		if err != nil {
			return provider.VM{}, err
		}
		if _, err := add(classStorageAllocation, map[string]any{"ResourceType": resourceTypeLogical, "ResourceSubType": resourceSubTypeVirtualHD,
			"Parent": drive, "HostResource": []string{children[d.ID]}}); err != nil {
			return provider.VM{}, err
		}
	}
	for _, n := range cfg.NetworkAdapters {
		props := map[string]any{"ResourceType": resourceTypeEthernet, "ResourceSubType": subTypeEthernetPort, "ElementName": n.Name}
		if n.MAC != "" {
			props["StaticMacAddress"], props["Address"] = true, n.MAC
		}
		port, err := add(classSyntheticPort, props)
		if err != nil {
			return provider.VM{}, err
		}
		if n.Switch == "" {
			continue
		}
		q, err := selectWhere(classVirtualSwitch, "ElementName", n.Switch)
		if err != nil {
			return provider.VM{}, fmt.Errorf("%s: %w", op, err)
		}
		sws, err := h.c.Query(ctx, q)
		if err != nil {
			return provider.VM{}, fmt.Errorf("%s: %w", op, err)
		}
		if len(sws) == 0 {
			h.log.Warn("hyperv: the replica VM's adapter stays disconnected: no switch of that name", "vm", spec.Name, "switch", n.Switch)
			continue
		}
		if _, err := add(classPortAllocation, map[string]any{"ResourceType": resourceTypeEthConn, "ResourceSubType": subTypeEthConnection,
			"Parent": port, "HostResource": []string{sws[0].Path}}); err != nil {
			return provider.VM{}, err
		}
	}
	return h.ReplicaVM(ctx, spec.Name)
}

// MakeStandalone converts each disk of the powered-off VM (its child and
// the restore points below) into a new dynamic VHDX without parent
// (ConvertVirtualHardDisk) and attaches it in place of the child.
func (h *ReplicaHost) MakeStandalone(ctx context.Context, name string) (provider.VM, error) {
	op := "make VM " + name + " standalone"
	sys, err := h.vmByName(ctx, name)
	if err != nil {
		return provider.VM{}, err
	}
	if st, _ := sys.int("EnabledState"); st != enabledStateDisabled {
		return provider.VM{}, fmt.Errorf("%s: %w; on Hyper-V the replica VM must be off to get disks of its own", op, provider.ErrVMRunning)
	}
	vssd, err := h.realized(ctx, sys.str("Name"))
	if err != nil {
		return provider.VM{}, err
	}
	ims, err := h.servicePath(ctx, classImageManagement)
	if err != nil {
		return provider.VM{}, fmt.Errorf("%s: %w", op, err)
	}
	vsms, err := h.servicePath(ctx, classManagementService)
	if err != nil {
		return provider.VM{}, fmt.Errorf("%s: %w", op, err)
	}
	sasds, err := associators(ctx, h.c, vssd.Path, classStorageAllocation)
	if err != nil {
		return provider.VM{}, fmt.Errorf("%s: %w", op, err)
	}
	for _, s := range sasds {
		hr := s.strs("HostResource")
		if s.str("ResourceSubType") != resourceSubTypeVirtualHD || len(hr) == 0 || !strings.HasSuffix(strings.ToLower(hr[0]), ".avhdx") {
			continue
		}
		out := strings.TrimSuffix(hr[0], hr[0][len(hr[0])-6:]) + "-standalone.vhdx"
		sd, err := h.c.EmbeddedInstance(ctx, classVHDSettingData, map[string]any{"Type": vhdTypeDynamic, "Format": vhdFormatVHDX, "Path": out})
		if err != nil {
			return provider.VM{}, fmt.Errorf("%s: %w", op, err)
		}
		if _, err := h.call(ctx, op, kindGeneric, ims, "ConvertVirtualHardDisk", map[string]any{"SourcePath": hr[0], "VirtualDiskSettingData": sd}, []string{"Job"}); err != nil {
			return provider.VM{}, err
		}
		mod, err := h.c.EmbeddedInstance(ctx, classStorageAllocation, map[string]any{"InstanceID": s.str("InstanceID"), "HostResource": []string{out}})
		if err != nil {
			return provider.VM{}, fmt.Errorf("%s: %w", op, err)
		}
		if _, err := h.call(ctx, op, kindGeneric, vsms, "ModifyResourceSettings", map[string]any{"ResourceSettings": []string{mod}}, []string{"ResultingResourceSettings", "Job"}); err != nil {
			return provider.VM{}, err
		}
	}
	return h.ReplicaVM(ctx, name)
}
