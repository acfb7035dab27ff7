package hyperv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/replicator/replicator/internal/provider"
)

// embedded decodes what the fake's EmbeddedInstance rendered.
func embedded(t *testing.T, v any) (string, map[string]any) {
	t.Helper()
	var e struct {
		Class string         `json:"class"`
		Props map[string]any `json:"props"`
	}
	if err := json.Unmarshal([]byte(asString(v)), &e); err != nil {
		t.Fatalf("embedded instance %v: %v", v, err)
	}
	return e.Class, e.Props
}

func TestRegisterReplicaVMDefinesTheVM(t *testing.T) {
	f := newFake(t)
	ns := `\\HV01\root\virtualization\v2:`
	const newID = "11111111-2222-3333-4444-555555555555"
	sysPath := ns + `Msvm_ComputerSystem.CreationClassName="Msvm_ComputerSystem",Name="` + newID + `"`
	vssdPath := ns + `Msvm_VirtualSystemSettingData.InstanceID="Microsoft:` + newID + `"`
	defined := false
	f.rec.Queries["SELECT * FROM Msvm_ComputerSystem WHERE ElementName = 'web01_replica'"] = nil
	f.rec.Queries["SELECT * FROM Msvm_VirtualEthernetSwitch WHERE ElementName = 'DR-LAN'"] = []object{{Path: ns + `Msvm_VirtualEthernetSwitch.Name="S"`}}
	f.rec.Queries["SELECT * FROM Msvm_VirtualSystemSettingData WHERE VirtualSystemIdentifier = '"+newID+"'"] = []object{{Path: vssdPath,
		Props: map[string]any{"VirtualSystemType": systemTypeRealized, "VirtualSystemSubType": "Microsoft:Hyper-V:SubType:2"}}}
	f.rec.Queries["ASSOCIATORS OF {"+vssdPath+"} WHERE ResultClass = Msvm_StorageAllocationSettingData"] = nil
	f.rec.Objects[sysPath] = object{Path: sysPath, Props: map[string]any{"Name": newID, "ElementName": "web01_replica", "EnabledState": float64(3)}}
	var created []map[string]any
	f.methods["CreateVirtualHardDisk"] = func(inv invocation) (result, error) {
		class, props := embedded(t, inv.In["VirtualDiskSettingData"])
		if class != classVHDSettingData {
			t.Errorf("CreateVirtualHardDisk of %s", class)
		}
		created = append(created, props)
		return result{ReturnValue: 0}, nil
	}
	f.methods["DefineSystem"] = func(inv invocation) (result, error) {
		_, sys := embedded(t, inv.In["SystemSettings"])
		if sys["ElementName"] != "web01_replica" || sys["VirtualSystemSubType"] != "Microsoft:Hyper-V:SubType:2" || sys["SecureBootEnabled"] != true {
			t.Errorf("DefineSystem settings %v", sys)
		}
		res := inv.In["ResourceSettings"].([]string)
		if len(res) != 2 {
			t.Fatalf("DefineSystem resources %v", res)
		}
		if c, p := embedded(t, res[0]); c != classProcessorSettings || p["VirtualQuantity"] != float64(4) {
			t.Errorf("processors %s %v", c, p)
		}
		if c, p := embedded(t, res[1]); c != classMemorySettings || p["VirtualQuantity"] != float64(4096) {
			t.Errorf("memory %s %v", c, p)
		}
		defined = true
		f.mu.Lock()
		f.rec.Queries["SELECT * FROM Msvm_ComputerSystem WHERE ElementName = 'web01_replica'"] = []object{f.rec.Objects[sysPath]}
		f.mu.Unlock()
		return result{ReturnValue: 0, Out: map[string]any{"ResultingSystem": sysPath}}, nil
	}
	type added struct {
		class string
		props map[string]any
	}
	var adds []added
	f.methods["AddResourceSettings"] = func(inv invocation) (result, error) {
		if inv.In["AffectedConfiguration"] != vssdPath {
			t.Errorf("AddResourceSettings to %v", inv.In["AffectedConfiguration"])
		}
		class, props := embedded(t, inv.In["ResourceSettings"].([]string)[0])
		adds = append(adds, added{class, props})
		return result{ReturnValue: 0, Out: map[string]any{"ResultingResourceSettings": []any{fmt.Sprintf("res-%d", len(adds))}}}, nil
	}
	p, _ := testProvider(f, "", nil)
	h := &ReplicaHost{Provider: p, Folder: `D:\Replicas\`}
	spec := provider.ReplicaVMSpec{Name: "web01_replica", SourceID: "src", Config: provider.VMConfig{
		Generation: 2, Processors: 4, MemoryBytes: 4 << 30, SecureBoot: true,
		NetworkAdapters: []provider.NetworkAdapter{{Name: "nic", Switch: "DR-LAN", MAC: "00155D010203"}},
		Disks:           []provider.DiskSlot{{ID: "0-0", Controller: "scsi", Location: 0}, {ID: "0-1", Controller: "scsi", Location: 1}},
	}, Disks: []provider.ReplicaVMDisk{{ID: "0-0", Parent: `D:\ds\demo\x\disks\0-0\p2.avhdx`}, {ID: "0-1", Parent: `D:\ds\demo\x\disks\0-1\p2.avhdx`}}}
	if _, err := h.RegisterReplicaVM(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	if !defined || len(created) != 2 {
		t.Fatalf("defined %v, %d disks created", defined, len(created))
	}
	for i, c := range created {
		if c["Type"] != float64(vhdTypeDifferencing) || c["ParentPath"] != spec.Disks[i].Parent ||
			!strings.HasPrefix(asString(c["Path"]), `D:\Replicas\web01_replica\disk`+spec.Disks[i].ID+"_") {
			t.Errorf("disk %d created as %v", i, c)
		}
	}
	// One SCSI controller, then per disk a drive on it and the disk in the
	// drive, then the adapter and its connection to the switch.
	want := []string{classRASD, classRASD, classStorageAllocation, classRASD, classStorageAllocation, classSyntheticPort, classPortAllocation}
	if len(adds) != len(want) {
		t.Fatalf("added %d resources, want %d: %+v", len(adds), len(want), adds)
	}
	for i, w := range want {
		if adds[i].class != w {
			t.Fatalf("resource %d is %s, want %s", i, adds[i].class, w)
		}
	}
	if adds[0].props["ResourceSubType"] != subTypeSCSIController {
		t.Errorf("controller %v", adds[0].props)
	}
	if adds[1].props["Parent"] != "res-1" || adds[1].props["AddressOnParent"] != "0" || adds[3].props["AddressOnParent"] != "1" {
		t.Errorf("drives %v %v", adds[1].props, adds[3].props)
	}
	if adds[2].props["Parent"] != "res-2" || asStrings(adds[2].props["HostResource"])[0] != asString(created[0]["Path"]) {
		t.Errorf("disk %v", adds[2].props)
	}
	if adds[5].props["Address"] != "00155D010203" || adds[5].props["StaticMacAddress"] != true {
		t.Errorf("adapter %v", adds[5].props)
	}
	if adds[6].props["Parent"] != "res-6" || asStrings(adds[6].props["HostResource"])[0] != ns+`Msvm_VirtualEthernetSwitch.Name="S"` {
		t.Errorf("connection %v", adds[6].props)
	}
	if len(f.callsOf("DestroySystem")) != 0 {
		t.Error("a new VM destroyed something")
	}
}

func TestRegisterReplicaVMRefusesARunningVM(t *testing.T) {
	f := newFake(t)
	f.rec.Queries["SELECT * FROM Msvm_ComputerSystem WHERE ElementName = 'web01_replica'"] = []object{{Path: "x", Props: map[string]any{"Name": "id", "EnabledState": float64(2)}}}
	p, _ := testProvider(f, "", nil)
	h := &ReplicaHost{Provider: p, Folder: `D:\Replicas`}
	_, err := h.RegisterReplicaVM(context.Background(), provider.ReplicaVMSpec{Name: "web01_replica", Config: provider.VMConfig{Generation: 2},
		Disks: []provider.ReplicaVMDisk{{ID: "0", Parent: `D:\p.avhdx`}}})
	if !errors.Is(err, provider.ErrVMRunning) {
		t.Fatalf("err = %v, want ErrVMRunning", err)
	}
	for _, m := range []string{"DestroySystem", "CreateVirtualHardDisk", "DefineSystem"} {
		if len(f.callsOf(m)) != 0 {
			t.Errorf("%s called for a running VM", m)
		}
	}
}

func TestMakeStandaloneConvertsTheChainOfAnOffVM(t *testing.T) {
	f := newFake(t)
	ns := `\\HV01\root\virtualization\v2:`
	const id = "11111111-2222-3333-4444-555555555555"
	vssdPath := ns + `Msvm_VirtualSystemSettingData.InstanceID="Microsoft:` + id + `"`
	state := float64(2)
	sys := func() []object {
		return []object{{Path: "sys", Props: map[string]any{"Name": id, "ElementName": "web01_replica", "EnabledState": state}}}
	}
	f.rec.Queries["SELECT * FROM Msvm_ComputerSystem WHERE ElementName = 'web01_replica'"] = sys()
	f.rec.Queries["SELECT * FROM Msvm_VirtualSystemSettingData WHERE VirtualSystemIdentifier = '"+id+"'"] = []object{{Path: vssdPath,
		Props: map[string]any{"VirtualSystemType": systemTypeRealized}}}
	child := `D:\replica-vms\web01_replica\disk0_x.avhdx`
	f.rec.Queries["ASSOCIATORS OF {"+vssdPath+"} WHERE ResultClass = Msvm_StorageAllocationSettingData"] = []object{{Path: "sasd",
		Props: map[string]any{"ResourceSubType": resourceSubTypeVirtualHD, "HostResource": []any{child}, "InstanceID": `Microsoft:` + id + `\C\0\0\L`}}}
	p, _ := testProvider(f, "", nil)
	h := &ReplicaHost{Provider: p, Folder: `D:\replica-vms`}
	if _, err := h.MakeStandalone(context.Background(), "web01_replica"); !errors.Is(err, provider.ErrVMRunning) {
		t.Fatalf("running VM: %v", err)
	}
	state = 3
	f.rec.Queries["SELECT * FROM Msvm_ComputerSystem WHERE ElementName = 'web01_replica'"] = sys()
	var converted, modified map[string]any
	f.methods["ConvertVirtualHardDisk"] = func(inv invocation) (result, error) {
		if inv.In["SourcePath"] != child {
			t.Errorf("converted %v", inv.In["SourcePath"])
		}
		_, converted = embedded(t, inv.In["VirtualDiskSettingData"])
		return result{ReturnValue: 0}, nil
	}
	f.methods["ModifyResourceSettings"] = func(inv invocation) (result, error) {
		_, modified = embedded(t, inv.In["ResourceSettings"].([]string)[0])
		return result{ReturnValue: 0}, nil
	}
	if _, err := h.MakeStandalone(context.Background(), "web01_replica"); err != nil {
		t.Fatal(err)
	}
	want := `D:\replica-vms\web01_replica\disk0_x-standalone.vhdx`
	if converted["Path"] != want || converted["Type"] != float64(vhdTypeDynamic) {
		t.Fatalf("converted to %v", converted)
	}
	if asStrings(modified["HostResource"])[0] != want || modified["InstanceID"] != `Microsoft:`+id+`\C\0\0\L` {
		t.Fatalf("modified %v", modified)
	}
}
