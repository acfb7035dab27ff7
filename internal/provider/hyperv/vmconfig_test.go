package hyperv

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/replicator/replicator/internal/provider"
)

// addHardware adds to the recording the answers Hyper-V gives for web01's
// hardware: two processors, 4096 MB of dynamic memory, secure boot, one
// adapter on the switch "LAN" with a static MAC, and its two disks on SCSI
// controller 0, locations 0 and 1. Property names and units follow the
// classes' documentation (learn.microsoft.com, Msvm_ProcessorSettingData,
// Msvm_MemorySettingData, Msvm_SyntheticEthernetPortSettingData,
// Msvm_EthernetPortAllocationSettingData, Msvm_ResourceAllocationSettingData).
func addHardware(f *fakeWMI) {
	id := f.rec.IDs["web01"]
	ns := `\\HV01\root\virtualization\v2:`
	vssdPath := ns + `Msvm_VirtualSystemSettingData.InstanceID="Microsoft:` + id + `"`
	var vssd object
	for _, o := range f.rec.Queries["SELECT * FROM Msvm_VirtualSystemSettingData WHERE VirtualSystemType = 'Microsoft:Hyper-V:System:Realized'"] {
		if o.Path == vssdPath {
			vssd = o
		}
	}
	vssd.Props = copyProps(vssd.Props)
	vssd.Props["SecureBootEnabled"] = true
	f.rec.Queries["SELECT * FROM Msvm_VirtualSystemSettingData WHERE VirtualSystemIdentifier = '"+id+"'"] = []object{vssd}
	assoc := func(class string) string { return "ASSOCIATORS OF {" + vssdPath + "} WHERE ResultClass = " + class }
	f.rec.Queries[assoc(classProcessorSettings)] = []object{{Path: ns + "Msvm_ProcessorSettingData.InstanceID=\"p\"", Props: map[string]any{"VirtualQuantity": "2"}}}
	f.rec.Queries[assoc(classMemorySettings)] = []object{{Path: ns + "Msvm_MemorySettingData.InstanceID=\"m\"", Props: map[string]any{"VirtualQuantity": "4096", "DynamicMemoryEnabled": true}}}
	portPath := ns + `Msvm_SyntheticEthernetPortSettingData.InstanceID="Microsoft:` + id + `\\A1"`
	f.rec.Queries[assoc(classSyntheticPort)] = []object{{Path: portPath, Props: map[string]any{
		"ElementName": "Network Adapter", "Address": "00155D010203", "StaticMacAddress": true, "InstanceID": "Microsoft:" + id + `\A1`}}}
	switchPath := ns + `Msvm_VirtualEthernetSwitch.CreationClassName="Msvm_VirtualEthernetSwitch",Name="S1"`
	f.rec.Queries[assoc(classPortAllocation)] = []object{{Path: ns + "Msvm_EthernetPortAllocationSettingData.InstanceID=\"c\"", Props: map[string]any{
		"Parent": portPath, "HostResource": []any{switchPath}}}}
	f.rec.Objects[switchPath] = object{Path: switchPath, Props: map[string]any{"ElementName": "LAN"}}
	ctrl := ns + `Msvm_ResourceAllocationSettingData.InstanceID="Microsoft:` + id + `\\DB12A8C7-5E1F-4A0B-9C3D-2E4F6A8B0C1D"`
	f.rec.Objects[ctrl] = object{Path: ctrl, Props: map[string]any{"ResourceType": float64(resourceTypeSCSI)}}
	for _, s := range f.rec.Queries[assoc(classStorageAllocation)] {
		drive := s.str("Parent")
		loc := "0"
		if diskIDOf(s.str("InstanceID")) == dataDiskID {
			loc = "1"
		}
		f.rec.Objects[drive] = object{Path: drive, Props: map[string]any{"AddressOnParent": loc, "Parent": ctrl}}
	}
}

func copyProps(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func TestVMConfig(t *testing.T) {
	f := newFake(t)
	addHardware(f)
	p, _ := testProvider(f, "", nil)
	c, err := p.VMConfig(context.Background(), f.rec.IDs["web01"])
	if err != nil {
		t.Fatal(err)
	}
	want := provider.VMConfig{
		Generation: 2, Processors: 2, MemoryBytes: 4096 << 20, DynamicMemory: true, SecureBoot: true,
		NetworkAdapters: []provider.NetworkAdapter{{Name: "Network Adapter", Switch: "LAN", MAC: "00155D010203", StaticMAC: true}},
	}
	got := c
	got.Disks = nil
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("VMConfig = %+v\nwant %+v", got, want)
	}
	slots := map[string]provider.DiskSlot{}
	for _, s := range c.Disks {
		slots[s.ID] = s
	}
	if s := slots[osDiskID]; s.Controller != "scsi" || s.ControllerNumber != 0 || s.Location != 0 {
		t.Errorf("os disk slot %+v", s)
	}
	if s := slots[dataDiskID]; s.Controller != "scsi" || s.ControllerNumber != 0 || s.Location != 1 {
		t.Errorf("data disk slot %+v", s)
	}
}

func TestVMConfigUnknownVM(t *testing.T) {
	f := newFake(t)
	f.rec.Queries["SELECT * FROM Msvm_VirtualSystemSettingData WHERE VirtualSystemIdentifier = 'nope'"] = nil
	p, _ := testProvider(f, "", nil)
	if _, err := p.VMConfig(context.Background(), "nope"); !errors.Is(err, provider.ErrVMNotFound) {
		t.Fatalf("err = %v, want ErrVMNotFound", err)
	}
}
