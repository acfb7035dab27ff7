package hvsim

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/replicator/replicator/internal/disk"
	"github.com/replicator/replicator/internal/provider"
	"github.com/replicator/replicator/internal/provider/hyperv"
	"github.com/replicator/replicator/internal/vhdx"
)

// param is one declared in parameter: its name and CIM type ("string",
// "uint16", "uint64", "ref": an object path).
type param struct {
	name, cimType string
}

// signature is a method as its class declares it (learn.microsoft.com,
// hyperv_v2, one page per method; the same names and types as the
// generated stubs of github.com/microsoft/wmi).
type signature struct {
	class string
	in    []param
	out   []string
	// snapshotTable: the method returns Msvm_VirtualSystemSnapshotService's
	// values (0–6, 4096); otherwise the 32768+ table.
	snapshotTable bool
}

var signatures = map[string]signature{
	"CreateSnapshot": {classSnapshotService, []param{{"AffectedSystem", "ref"}, {"SnapshotSettings", "string"}, {"SnapshotType", "uint16"}},
		[]string{"ResultingSnapshot", "Job"}, true},
	"DestroySnapshot":         {classSnapshotService, []param{{"AffectedSnapshot", "ref"}}, []string{"Job"}, true},
	"ConvertToReferencePoint": {classSnapshotService, []param{{"AffectedSnapshot", "ref"}}, []string{"ResultingReferencePoint", "Job"}, true},
	"DestroyReferencePoint":   {classReferencePointSvc, []param{{"AffectedReferencePoint", "ref"}}, []string{"Job"}, false},
	"ModifySystemSettings":    {classManagementService, []param{{"SystemSettings", "string"}}, []string{"Job"}, false},
	"GetVirtualHardDiskSettingData": {classImageManagement, []param{{"Path", "string"}},
		[]string{"SettingData", "Job"}, false},
	"GetVirtualDiskChanges": {classImageManagement, []param{{"Path", "string"}, {"LimitId", "string"}, {"TargetSnapshotId", "string"}, {"ByteOffset", "uint64"}, {"ByteLength", "uint64"}},
		[]string{"ProcessedByteLength", "ChangedByteOffsets", "ChangedByteLengths", "Job"}, false},
	"RequestStateChange": {classJob, []param{{"RequestedState", "uint16"}, {"TimeoutPeriod", "datetime"}}, nil, false},
}

// Return values. Msvm_VirtualSystemSnapshotService: 0 completed, 1 not
// supported, 2 failed, 3 timeout, 4 invalid parameter, 5 invalid state,
// 6 invalid type, 4096 job started (learn.microsoft.com, hyperv_v2/
// msvm-virtualsystemsnapshotservice-createsnapshot). The other services:
// 32768 failed, 32769 access denied, 32770 not supported, 32773 invalid
// parameter, 32775 invalid state, 32776 incorrect data type, 32779 file not
// found (msvm-imagemanagementservice-getvirtualdiskchanges and others).
const (
	rcCompleted  = 0
	rcJobStarted = 4096

	rcSnapInvalidParameter = 4
	rcSnapInvalidState     = 5
	rcSnapInvalidType      = 6

	rcFailed           = 32768
	rcNotSupported     = 32770
	rcInvalidParameter = 32773
	rcInvalidState     = 32775
	rcIncorrectType    = 32776
	rcFileNotFound     = 32779
)

// maxChangesPerCall is how much of a disk one GetVirtualDiskChanges call
// processes: the method "may process less" than asked (ProcessedByteLength
// "may be equal to ByteLength or less").
const maxChangesPerCall = 1 << 30

// Invoke runs a method on the object at path.
func (s *Sim) Invoke(ctx context.Context, path, method string, in map[string]any, out []string) (hyperv.Result, error) {
	sig, ok := signatures[method]
	if !ok {
		// The simulated host offers only the methods in signatures (those
		// the source provider calls); any other is answered as WMI answers
		// a method a provider does not offer: WBEM_E_METHOD_NOT_IMPLEMENTED
		// (learn.microsoft.com, "WMI Error Constants"). The replica host's
		// DefineSystem and AddResourceSettings are among those not offered.
		return hyperv.Result{}, &wmiError{op: method + " on " + path, hr: 0x80041055, text: "the simulated Hyper-V host does not offer this method"}
	}
	var res hyperv.Result
	err := s.locked(ctx, func() error {
		objs, err := s.objects(ctx)
		if err != nil {
			return err
		}
		self, ok := find(objs, path)
		if !ok || self.Class != sig.class {
			return &wmiError{op: method + " on " + path, hr: 0x80041002, text: "not found"}
		}
		args, rc := checkArgs(sig, in)
		if rc != 0 {
			res = hyperv.Result{ReturnValue: rc, Out: map[string]any{}}
			return nil
		}
		res, err = s.run(ctx, objs, self, method, args)
		if err != nil {
			return err
		}
		// Only the out parameters asked for come back, as through the
		// scripting API.
		asked := map[string]any{}
		for _, name := range out {
			asked[name] = res.Out[name]
		}
		res.Out = asked
		return nil
	})
	return res, err
}

func find(objs []simObject, path string) (hyperv.Object, bool) {
	for _, o := range objs {
		if strings.EqualFold(o.obj.Path, path) {
			return o.obj, true
		}
	}
	return hyperv.Object{}, false
}

// checkArgs keeps the declared parameters. A name the method does not
// declare is dropped, as github.com/microsoft/wmi drops the error of setting
// it: the method then runs without it. A declared one of the wrong type is
// refused with the table's "invalid type".
func checkArgs(sig signature, in map[string]any) (map[string]any, uint32) {
	args := map[string]any{}
	for _, p := range sig.in {
		v, ok := in[p.name]
		if !ok {
			continue
		}
		good := false
		switch p.cimType {
		case "string", "ref", "datetime":
			_, good = v.(string)
		case "uint16":
			_, good = v.(uint16)
		case "uint64":
			_, good = v.(uint64)
		}
		if !good {
			if sig.snapshotTable {
				return nil, rcSnapInvalidType
			}
			return nil, rcIncorrectType
		}
		args[p.name] = v
	}
	return args, 0
}

func invalidParameter(sig signature) uint32 {
	if sig.snapshotTable {
		return rcSnapInvalidParameter
	}
	return rcInvalidParameter
}

func (s *Sim) run(ctx context.Context, objs []simObject, self hyperv.Object, method string, args map[string]any) (hyperv.Result, error) {
	sig := signatures[method]
	bad := hyperv.Result{ReturnValue: invalidParameter(sig), Out: map[string]any{}}
	ref := func(name, class string) (hyperv.Object, bool) {
		p, _ := args[name].(string)
		o, ok := find(objs, p)
		return o, ok && o.Class == class
	}
	job := func(j jobRecord) (hyperv.Result, error) {
		p, err := s.startJob(j)
		if err != nil {
			return hyperv.Result{}, err
		}
		return hyperv.Result{ReturnValue: rcJobStarted, Out: map[string]any{"Job": p}}, nil
	}
	switch method {
	case "CreateSnapshot":
		vm, ok := ref("AffectedSystem", classComputerSystem)
		if !ok {
			return bad, nil
		}
		// SnapshotType 2 is a full snapshot, 32768 a recovery snapshot
		// (learn.microsoft.com, msvm-virtualsystemsnapshotservice-createsnapshot;
		// Microsoft's xHyper-VBackup sample).
		st, _ := args["SnapshotType"].(uint16)
		if st != 2 && st != 32768 {
			return bad, nil
		}
		level := 2
		if text, ok := args["SnapshotSettings"].(string); ok && text != "" {
			settings, err := parseInstance(text)
			if err != nil || settings.Class != "Msvm_VirtualSystemSnapshotSettingData" {
				return bad, nil
			}
			// ConsistencyLevel 1 application-consistent, 2 crash-consistent
			// (msvm-virtualsystemsnapshotsettingdata).
			switch fmt.Sprint(settings.Props["ConsistencyLevel"]) {
			case "1":
				level = 1
			case "2", "<nil>":
			default:
				return bad, nil
			}
			switch fmt.Sprint(settings.Props["GuestBackupType"]) {
			case "1", "2", "<nil>":
			default:
				return bad, nil
			}
		}
		vmID := fmt.Sprint(vm.Props["Name"])
		if reason := s.unsnapshottable(vmID); reason != "" {
			// IgnoreNonSnapshottableDisks aside, a pass-through disk makes
			// the VM's state invalid for a checkpoint.
			return hyperv.Result{ReturnValue: rcSnapInvalidState, Out: map[string]any{}}, nil
		}
		return job(jobRecord{Method: method, VMID: vmID, Level: level})
	case "DestroySnapshot", "ConvertToReferencePoint":
		snap, ok := ref("AffectedSnapshot", classSettingData)
		if !ok || fmt.Sprint(snap.Props["VirtualSystemType"]) == systemTypeRealized {
			return bad, nil
		}
		return job(jobRecord{Method: method, VMID: fmt.Sprint(snap.Props["VirtualSystemIdentifier"]), Target: strings.TrimPrefix(fmt.Sprint(snap.Props["InstanceID"]), "Microsoft:")})
	case "DestroyReferencePoint":
		rp, ok := ref("AffectedReferencePoint", classReferencePoint)
		if !ok {
			return bad, nil
		}
		id := fmt.Sprint(rp.Props["InstanceID"])
		return job(jobRecord{Method: method, VMID: fmt.Sprint(rp.Props["VirtualSystemIdentifier"]), Target: id[strings.LastIndexByte(id, ':')+1:]})
	case "ModifySystemSettings":
		return s.modifySystemSettings(ctx, objs, args, bad)
	case "GetVirtualHardDiskSettingData":
		return s.vhdSettingData(ctx, args)
	case "GetVirtualDiskChanges":
		return s.virtualDiskChanges(ctx, args)
	case "RequestStateChange":
		return s.requestStateChange(self, args)
	}
	return hyperv.Result{}, errors.New("unreachable")
}

// unsnapshottable says why the VM cannot be checkpointed, or "".
func (s *Sim) unsnapshottable(vmID string) string {
	for _, d := range s.attributes(vmID).ExtraDisks {
		if d.Kind == "passthrough" {
			return "pass-through disk " + d.Path
		}
	}
	return ""
}

// modifySystemSettings applies the ElementName of a setting data; nothing
// else of a checkpoint is changeable here.
func (s *Sim) modifySystemSettings(ctx context.Context, objs []simObject, args map[string]any, bad hyperv.Result) (hyperv.Result, error) {
	text, _ := args["SystemSettings"].(string)
	inst, err := parseInstance(text)
	if err != nil || inst.Class != classSettingData {
		return bad, nil
	}
	id := fmt.Sprint(inst.Props["InstanceID"])
	cur, ok := find(objs, s.path(classSettingData, "InstanceID", id))
	if !ok {
		return bad, nil
	}
	name := fmt.Sprint(inst.Props["ElementName"])
	if fmt.Sprint(cur.Props["VirtualSystemType"]) != systemTypeRecovery {
		return hyperv.Result{ReturnValue: rcNotSupported, Out: map[string]any{}}, nil
	}
	if err := s.lab.RenameCheckpoint(ctx, fmt.Sprint(cur.Props["VirtualSystemIdentifier"]), strings.TrimPrefix(id, "Microsoft:"), name); err != nil {
		return hyperv.Result{ReturnValue: rcFailed, Out: map[string]any{}}, nil
	}
	return hyperv.Result{ReturnValue: rcCompleted, Out: map[string]any{"Job": nil}}, nil
}

// vhdSettingData describes a disk file as Msvm_VirtualHardDiskSettingData:
// Format 2 VHD, 3 VHDX, 4 VHD Set; Type 3 dynamic, 4 differencing
// (learn.microsoft.com, hyperv_v2/msvm-virtualharddisksettingdata).
func (s *Sim) vhdSettingData(ctx context.Context, args map[string]any) (hyperv.Result, error) {
	p, _ := args["Path"].(string)
	props := map[string]any{"Path": p}
	if d, ok := s.extraDisk(ctx, p); ok {
		props["MaxInternalSize"] = uint64(d.Size)
		props["Format"] = uint16(2)
		if d.Kind == "vhds" {
			props["Format"] = uint16(4)
		}
		props["Type"] = uint16(3)
	} else {
		img, err := vhdx.Open(p)
		if err != nil {
			if isNotExist(err) {
				return hyperv.Result{ReturnValue: rcFileNotFound, Out: map[string]any{}}, nil
			}
			return hyperv.Result{ReturnValue: rcFailed, Out: map[string]any{}}, nil
		}
		props["MaxInternalSize"] = uint64(img.Size())
		props["Format"] = uint16(3)
		props["Type"] = uint16(3)
		props["BlockSize"] = img.BlockSize()
		props["LogicalSectorSize"] = uint32(img.SectorSize())
		if img.HasParent() {
			props["Type"] = uint16(4)
			props["ParentPath"] = img.Parent().Path()
		}
		img.Close()
	}
	return hyperv.Result{ReturnValue: rcCompleted, Out: map[string]any{
		"SettingData": renderInstance("Msvm_VirtualHardDiskSettingData", props), "Job": nil,
	}}, nil
}

func (s *Sim) extraDisk(ctx context.Context, p string) (ExtraDisk, bool) {
	vms, err := s.lab.VMs(ctx)
	if err != nil {
		return ExtraDisk{}, false
	}
	for _, vm := range vms {
		for _, d := range s.attributes(vm.ID).ExtraDisks {
			if d.Path == p {
				return d, true
			}
		}
	}
	return ExtraDisk{}, false
}

// virtualDiskChanges answers GetVirtualDiskChanges for the frozen disk of a
// checkpoint from the lab's record of writes since the RCT id's reference
// point. ByteLength "must be less than the size of the Virtual Disk"
// (learn.microsoft.com, hyperv_v2/msvm-imagemanagementservice-getvirtualdiskchanges);
// a region past the end, an unknown RCT id or one of another disk is an
// invalid parameter (the documentation names no code for these; 32773 is
// the table's). The disk the VM writes to now is not answered: the
// simulator tracks changes up to checkpoints only.
func (s *Sim) virtualDiskChanges(ctx context.Context, args map[string]any) (hyperv.Result, error) {
	bad := hyperv.Result{ReturnValue: rcInvalidParameter, Out: map[string]any{}}
	p, _ := args["Path"].(string)
	limit, _ := args["LimitId"].(string)
	off, okOff := args["ByteOffset"].(uint64)
	length, okLen := args["ByteLength"].(uint64)
	if p == "" || limit == "" || !okOff || !okLen || length == 0 {
		return bad, nil
	}
	vmID, cpID, index, diskID, size, ok := s.frozenDisk(ctx, p)
	if !ok {
		if _, err := vhdx.Open(p); err != nil && isNotExist(err) {
			return hyperv.Result{ReturnValue: rcFileNotFound, Out: map[string]any{}}, nil
		}
		return hyperv.Result{ReturnValue: rcNotSupported, Out: map[string]any{}}, nil
	}
	if length >= uint64(size) || off >= uint64(size) || off+length > uint64(size) {
		return bad, nil
	}
	parts := strings.Split(limit, ":")
	if len(parts) != 3 || parts[0] != "rctX" || parts[2] != strconv.Itoa(index) {
		return bad, nil
	}
	changed, err := s.lab.ChangedRanges(ctx, vmID, cpID, diskID, parts[1])
	if err != nil {
		if errors.Is(err, provider.ErrNoChangeTracking) {
			return bad, nil
		}
		return hyperv.Result{ReturnValue: rcFailed, Out: map[string]any{}}, nil
	}
	processed := min(length, maxChangesPerCall)
	window := disk.Extent{Offset: int64(off), Length: int64(processed)}
	offsets, lengths := []any{}, []any{}
	for _, e := range changed {
		lo, hi := max(e.Offset, window.Offset), min(e.End(), window.End())
		if lo >= hi {
			continue
		}
		// uint64 values and arrays come as decimal strings through the
		// scripting API.
		offsets = append(offsets, strconv.FormatInt(lo, 10))
		lengths = append(lengths, strconv.FormatInt(hi-lo, 10))
	}
	return hyperv.Result{ReturnValue: rcCompleted, Out: map[string]any{
		"ProcessedByteLength": strconv.FormatUint(processed, 10), "ChangedByteOffsets": offsets, "ChangedByteLengths": lengths, "Job": nil,
	}}, nil
}

// frozenDisk finds the checkpoint disk whose file is p.
func (s *Sim) frozenDisk(ctx context.Context, p string) (vmID, cpID string, index int, diskID string, size int64, ok bool) {
	vms, err := s.lab.VMs(ctx)
	if err != nil {
		return
	}
	for _, vm := range vms {
		cps, err := s.lab.Checkpoints(ctx, vm.ID)
		if err != nil {
			continue
		}
		for _, cp := range cps {
			for i, d := range cp.Disks {
				if d.Path == p {
					return vm.ID, cp.ID, i, d.DiskID, d.VirtualSize, true
				}
			}
		}
	}
	return
}

// requestStateChange on a job: 4 (terminate) ends a running job without its
// work (CIM_ConcreteJob.RequestStateChange).
func (s *Sim) requestStateChange(self hyperv.Object, args map[string]any) (hyperv.Result, error) {
	st, _ := args["RequestedState"].(uint16)
	if st != 4 {
		return hyperv.Result{ReturnValue: rcNotSupported, Out: map[string]any{}}, nil
	}
	jobs, err := s.readJobs()
	if err != nil {
		return hyperv.Result{}, err
	}
	for _, j := range jobs {
		if j.ID == fmt.Sprint(self.Props["InstanceID"]) && j.State == jobRunning {
			j.State, j.ErrorDescription, j.Ended = jobTerminated, "terminated on request", s.now().UTC()
			if err := s.writeJob(j); err != nil {
				return hyperv.Result{}, err
			}
		}
	}
	return hyperv.Result{ReturnValue: rcCompleted, Out: map[string]any{}}, nil
}
