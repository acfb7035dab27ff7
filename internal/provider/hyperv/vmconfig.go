package hyperv

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/replicator/replicator/internal/provider"
)

// Classes of a VM's virtual hardware, associated with its realized
// Msvm_VirtualSystemSettingData (learn.microsoft.com, "Hyper-V WMI provider
// (V2)": Msvm_ProcessorSettingData, Msvm_MemorySettingData,
// Msvm_SyntheticEthernetPortSettingData, Msvm_EthernetPortAllocationSettingData).
const (
	classProcessorSettings = "Msvm_ProcessorSettingData"
	classMemorySettings    = "Msvm_MemorySettingData"
	classSyntheticPort     = "Msvm_SyntheticEthernetPortSettingData"
	classPortAllocation    = "Msvm_EthernetPortAllocationSettingData"
)

// ResourceType of Msvm_ResourceAllocationSettingData for disk controllers
// (CIM_ResourceAllocationSettingData: 5 IDE controller, 6 parallel SCSI HBA).
const (
	resourceTypeIDE  = 5
	resourceTypeSCSI = 6
)

// VMConfig reads the VM's virtual hardware from its realized setting data and
// the settings associated with it: processors, startup memory, secure boot,
// network adapters with their switches and MAC addresses, and where each
// virtual disk is attached.
func (p *Provider) VMConfig(ctx context.Context, vmID string) (provider.VMConfig, error) {
	op := fmt.Sprintf("read the configuration of VM %s", vmID)
	q, err := selectWhere(classSettingData, "VirtualSystemIdentifier", vmID)
	if err != nil {
		return provider.VMConfig{}, fmt.Errorf("%s: %w", op, err)
	}
	objs, err := p.c.Query(ctx, q)
	if err != nil {
		return provider.VMConfig{}, fmt.Errorf("%s: %w", op, err)
	}
	var vssd object
	for _, o := range objs {
		if o.str("VirtualSystemType") == systemTypeRealized {
			vssd = o
		}
	}
	if vssd.Path == "" {
		return provider.VMConfig{}, fmt.Errorf("%s: %w", op, provider.ErrVMNotFound)
	}
	c := provider.VMConfig{
		Generation:      generationOf(vssd.str("VirtualSystemSubType")),
		SecureBoot:      asBoolValue(vssd.prop("SecureBootEnabled")),
		NetworkAdapters: []provider.NetworkAdapter{},
		Disks:           []provider.DiskSlot{},
	}
	assoc := func(class string) ([]object, error) { return associators(ctx, p.c, vssd.Path, class) }
	procs, err := assoc(classProcessorSettings)
	if err != nil {
		return c, fmt.Errorf("%s: processors: %w", op, err)
	}
	if len(procs) > 0 {
		n, _ := procs[0].int("VirtualQuantity")
		c.Processors = int(min(max(n, 0), provider.MaxProcessors))
	}
	mem, err := assoc(classMemorySettings)
	if err != nil {
		return c, fmt.Errorf("%s: memory: %w", op, err)
	}
	if len(mem) > 0 {
		// VirtualQuantity of memory is in megabytes (AllocationUnits "byte * 2^20").
		mb, _ := mem[0].int("VirtualQuantity")
		if mb > 0 && mb < 1<<30 {
			c.MemoryBytes = mb << 20
		}
		c.DynamicMemory = asBoolValue(mem[0].prop("DynamicMemoryEnabled"))
	}
	ports, err := assoc(classSyntheticPort)
	if err != nil {
		return c, fmt.Errorf("%s: network adapters: %w", op, err)
	}
	allocs, err := assoc(classPortAllocation)
	if err != nil {
		return c, fmt.Errorf("%s: network connections: %w", op, err)
	}
	if len(ports) > provider.MaxNetworkAdapters {
		return c, fmt.Errorf("%s: %d network adapters (at most %d)", op, len(ports), provider.MaxNetworkAdapters)
	}
	for _, port := range ports {
		n := provider.NetworkAdapter{Name: port.str("ElementName"), MAC: port.str("Address"), StaticMAC: asBoolValue(port.prop("StaticMacAddress"))}
		// The connection's Parent is the port's path; its HostResource the switch.
		for _, a := range allocs {
			if !samePath(a.str("Parent"), port.Path, port.str("InstanceID")) {
				continue
			}
			if hr := a.strs("HostResource"); len(hr) > 0 && hr[0] != "" {
				sw, err := p.c.Get(ctx, hr[0])
				if err != nil {
					p.log.Warn("hyperv: cannot read the switch of a network adapter", "vm", vmID, "adapter", n.Name, "err", err)
				} else {
					n.Switch = sw.str("ElementName")
				}
			}
		}
		c.NetworkAdapters = append(c.NetworkAdapters, n)
	}
	disks, err := p.diskSlotsOf(ctx, vssd.Path)
	if err != nil {
		return c, fmt.Errorf("%s: disks: %w", op, err)
	}
	c.Disks = disks
	return c, c.Check()
}

// diskSlotsOf places each virtual hard disk: its drive (the disk's Parent)
// gives the location (AddressOnParent), the drive's controller (its Parent)
// the controller type; the controller's number is its place among the VM's
// controllers of that type, as Hyper-V Manager numbers them.
func (p *Provider) diskSlotsOf(ctx context.Context, settingsPath string) ([]provider.DiskSlot, error) {
	sasds, err := associators(ctx, p.c, settingsPath, classStorageAllocation)
	if err != nil {
		return nil, err
	}
	controllers := map[string][]string{} // type → controller paths in the order met
	slots := []provider.DiskSlot{}
	for _, s := range sasds {
		if s.str("ResourceSubType") != resourceSubTypeVirtualHD {
			continue
		}
		slot := provider.DiskSlot{ID: diskIDOf(s.str("InstanceID")), Controller: "scsi"}
		drive, err := p.c.Get(ctx, s.str("Parent"))
		if err != nil {
			if errors.Is(err, errObjectNotFound) {
				slots = append(slots, slot)
				continue
			}
			return nil, fmt.Errorf("drive of disk %s: %w", slot.ID, err)
		}
		if loc, err := strconv.Atoi(drive.str("AddressOnParent")); err == nil && loc >= 0 {
			slot.Location = loc
		}
		ctrl, err := p.c.Get(ctx, drive.str("Parent"))
		if err == nil {
			kind := "scsi"
			if t, _ := ctrl.int("ResourceType"); t == resourceTypeIDE {
				kind = "ide"
			}
			slot.Controller = kind
			list := controllers[kind]
			idx := -1
			for i, c := range list {
				if strings.EqualFold(c, ctrl.Path) {
					idx = i
				}
			}
			if idx < 0 {
				idx = len(list)
				controllers[kind] = append(list, ctrl.Path)
			}
			// IDE controllers carry their number in Address ("0", "1").
			if n, err := strconv.Atoi(ctrl.str("Address")); err == nil && kind == "ide" {
				idx = n
			}
			slot.ControllerNumber = idx
		}
		slots = append(slots, slot)
		if len(slots) > provider.MaxDisks {
			return nil, fmt.Errorf("more than %d disks", provider.MaxDisks)
		}
	}
	return slots, nil
}

// samePath says whether a REF property names the object at path (WMI may
// give a REF relative to the namespace, or by InstanceID).
func samePath(ref, path, instanceID string) bool {
	if ref == "" {
		return false
	}
	if strings.EqualFold(ref, path) {
		return true
	}
	return instanceID != "" && strings.Contains(strings.ReplaceAll(ref, `\\`, `\`), strings.ReplaceAll(instanceID, `\\`, `\`))
}

// asBoolValue reads a WMI boolean (bool, or its text).
func asBoolValue(v any) bool {
	switch x := v.(type) {
	case bool:
		return x
	case string:
		return strings.EqualFold(x, "true")
	}
	return false
}
