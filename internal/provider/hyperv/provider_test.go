package hyperv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/replicator/replicator/internal/disk"
	"github.com/replicator/replicator/internal/provider"
)

const (
	osDiskID   = "DB12A8C7-5E1F-4A0B-9C3D-2E4F6A8B0C1D-0-0"
	dataDiskID = "DB12A8C7-5E1F-4A0B-9C3D-2E4F6A8B0C1D-0-1"
	gib        = int64(1) << 30
)

func TestHost(t *testing.T) {
	f := newFake(t)
	p, _ := testProvider(f, "", nil)
	h, err := p.Host(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := provider.Host{Name: "HV01", Kind: "hyperv", Version: "10.0.20348"}
	if h != want {
		t.Fatalf("Host = %+v, want %+v", h, want)
	}
}

func TestHostUnreachable(t *testing.T) {
	f := newFake(t)
	f.fail["SELECT * FROM Msvm_VirtualSystemManagementService"] = classifyHRESULT("query", hrRPCServerUnavailable, errors.New("The RPC server is unavailable."))
	p, _ := testProvider(f, "hv01", nil)
	_, err := p.Host(context.Background())
	if !errors.Is(err, provider.ErrHostUnreachable) || !Retryable(err) {
		t.Fatalf("err = %v; want retryable ErrHostUnreachable", err)
	}
}

func TestVMsInventory(t *testing.T) {
	f := newFake(t)
	ids := f.rec.IDs
	savedDisks := "ASSOCIATORS OF {" + `\\HV01\root\virtualization\v2:Msvm_VirtualSystemSettingData.InstanceID="Microsoft:` + ids["saved01"] + `"} WHERE ResultClass = Msvm_StorageAllocationSettingData`
	f.fail[savedDisks] = classifyHRESULT("query", hrWbemTransportFailure, errors.New("transport failure"))
	var logs strings.Builder
	p, _ := testProvider(f, "", &logs)

	vms, err := p.VMs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []provider.VM{
		{ID: ids["legacy01"], Name: "legacy01", State: "off", Generation: 1, ConfigurationVersion: "5.0", Disks: []provider.Disk{
			{ID: "83F8638B-8DCA-4152-9EDA-2CA8B33039B4-0-0", Path: `D:\Hyper-V\legacy01\legacy01.vhd`, VirtualSize: 40 * gib, Format: "vhd"},
		}, Unsupported: "configuration version 5.0 has no resilient change tracking (6.2 or later is needed: Update-VMVersion); " +
			"disk 83F8638B-8DCA-4152-9EDA-2CA8B33039B4-0-0 (D:\\Hyper-V\\legacy01\\legacy01.vhd) is a VHD file: only VHDX disks have resilient change tracking and recovery checkpoints (convert it with Convert-VHD)"},
		{ID: ids["saved01"], Name: "saved01", State: "saved", Generation: 2, ConfigurationVersion: "9.0"},
		{ID: ids["web01"], Name: "web01", State: "running", Generation: 2, ConfigurationVersion: "10.0", Disks: []provider.Disk{
			{ID: osDiskID, Path: `D:\Hyper-V\web01\Virtual Hard Disks\web01-os_0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0.avhdx`, VirtualSize: 10 * gib, Format: "vhdx"},
			{ID: dataDiskID, Path: `D:\Hyper-V\web01\Virtual Hard Disks\web01-data_8A7C6E5F-1B2D-4C3E-9F4A-5B6C7D8E9F0A.avhdx`, VirtualSize: 100 * gib, Format: "vhdx"},
		}},
	}
	if !reflect.DeepEqual(vms, want) {
		got, _ := json.MarshalIndent(vms, "", " ")
		t.Fatalf("VMs =\n%s", got)
	}
	if !strings.Contains(logs.String(), "saved01") {
		t.Errorf("no warning names the VM whose disks failed: %q", logs.String())
	}
}

func TestStateNames(t *testing.T) {
	for code, want := range map[int64]string{2: "running", 3: "off", 6: "saved", 9: "paused", 10: "other", 32768: "other", 32769: "other", 32770: "other", 32774: "other", 0: "other", 4: "other"} {
		if got := stateName(code); got != want {
			t.Errorf("stateName(%d) = %q, want %q", code, got, want)
		}
	}
}

// snapshotJob makes CreateSnapshot start a job that runs, then completes.
func snapshotJob(f *fakeWMI, finalState int, code int, desc string) {
	const id = "5A3C2B1D-0E9F-4A8B-B7C6-D5E4F3A2B1C0"
	f.jobs[jobPath(id)] = []object{jobObject(id, jobStarting, 0, 0, ""), jobObject(id, jobRunning, 40, 0, ""), jobObject(id, finalState, 100, code, desc)}
	f.methods["CreateSnapshot"] = func(invocation) (result, error) {
		return result{ReturnValue: rcJobStarted, Out: map[string]any{"Job": jobPath(id), "ResultingSnapshot": nil}}, nil
	}
	snap := f.rec.Objects[`\\HV01\root\virtualization\v2:Msvm_VirtualSystemSettingData.InstanceID="Microsoft:`+f.rec.IDs["snapshot"]+`"`]
	f.rec.Queries["ASSOCIATORS OF {"+jobPath(id)+"} WHERE ResultClass = Msvm_VirtualSystemSettingData"] = []object{snap}
}

func TestCreateCheckpoint(t *testing.T) {
	for _, tc := range []struct {
		c    provider.Consistency
		want uint16
	}{{provider.ApplicationConsistent, 1}, {provider.CrashConsistent, 2}} {
		f := newFake(t)
		snapshotJob(f, jobCompleted, 0, "")
		p, clk := testProvider(f, "", nil)
		vmID := f.rec.IDs["web01"]

		cp, err := p.CreateCheckpoint(context.Background(), vmID, provider.CheckpointOptions{Consistency: tc.c})
		if err != nil {
			t.Fatal(err)
		}
		calls := f.callsOf("CreateSnapshot")
		if len(calls) != 1 {
			t.Fatalf("%d CreateSnapshot calls", len(calls))
		}
		in := calls[0].In
		if in["SnapshotType"] != uint16(32768) {
			t.Errorf("SnapshotType = %#v, want uint16 32768 (recovery checkpoint)", in["SnapshotType"])
		}
		wantVM := `\\HV01\root\virtualization\v2:Msvm_ComputerSystem.CreationClassName="Msvm_ComputerSystem",Name="` + vmID + `"`
		if in["AffectedSystem"] != wantVM {
			t.Errorf("AffectedSystem = %v", in["AffectedSystem"])
		}
		var settings struct {
			Class string         `json:"class"`
			Props map[string]any `json:"props"`
		}
		if err := json.Unmarshal([]byte(asString(in["SnapshotSettings"])), &settings); err != nil {
			t.Fatalf("SnapshotSettings: %v", err)
		}
		if settings.Class != "Msvm_VirtualSystemSnapshotSettingData" || settings.Props["ConsistencyLevel"] != float64(tc.want) {
			t.Errorf("SnapshotSettings = %+v, want ConsistencyLevel %d", settings, tc.want)
		}
		if !strings.HasSuffix(calls[0].Path, `Msvm_VirtualSystemSnapshotService.CreationClassName="Msvm_VirtualSystemSnapshotService",Name="vmms",SystemCreationClassName="Msvm_ComputerSystem",SystemName="HV01"`) {
			t.Errorf("CreateSnapshot called on %s", calls[0].Path)
		}
		want := provider.Checkpoint{
			ID: f.rec.IDs["snapshot"], Name: "web01 - Backup - (24.11.2026 - 19:05:01)", VMID: vmID, Created: time.Date(2026, 11, 24, 19, 5, 1, 123456000, time.UTC),
			Disks: []provider.CheckpointDisk{
				{DiskID: osDiskID, Path: `D:\Hyper-V\web01\Virtual Hard Disks\web01-os.vhdx`, VirtualSize: 10 * gib},
				{DiskID: dataDiskID, Path: `D:\Hyper-V\web01\Virtual Hard Disks\web01-data.vhdx`, VirtualSize: 100 * gib},
			},
			Consistency: tc.c,
		}
		if !reflect.DeepEqual(cp, want) {
			t.Fatalf("checkpoint = %+v\nwant %+v", cp, want)
		}
		if len(clk.slept) != 2 || clk.slept[0] != time.Second || clk.slept[1] != 2*time.Second {
			t.Errorf("job polled with sleeps %v, want [1s 2s]", clk.slept)
		}
		// The checkpoint is found again by its id (a resumed run).
		// What the host made is known only to CreateCheckpoint.
		again, err := p.Checkpoint(context.Background(), vmID, cp.ID)
		want.Consistency = provider.CrashConsistent
		if err != nil || !reflect.DeepEqual(again, want) {
			t.Fatalf("Checkpoint(%s) = %+v, %v", cp.ID, again, err)
		}
	}
}

func TestCreateCheckpointFailures(t *testing.T) {
	f := newFake(t)
	p, _ := testProvider(f, "", nil)
	_, err := p.CreateCheckpoint(context.Background(), "00000000-0000-0000-0000-000000000000", provider.CheckpointOptions{})
	if !errors.Is(err, provider.ErrVMNotFound) || Retryable(err) {
		t.Fatalf("missing VM: err = %v", err)
	}

	f = newFake(t)
	snapshotJob(f, jobException, 32775, "'web01' could not initiate a checkpoint operation: The virtual machine is in an invalid state.")
	p, _ = testProvider(f, "", nil)
	_, err = p.CreateCheckpoint(context.Background(), f.rec.IDs["web01"], provider.CheckpointOptions{Consistency: provider.ApplicationConsistent})
	if err == nil || !Retryable(err) || !strings.Contains(err.Error(), "invalid state") || !strings.Contains(err.Error(), "web01") {
		t.Fatalf("job exception: err = %v", err)
	}

	f = newFake(t)
	f.methods["CreateSnapshot"] = func(invocation) (result, error) { return result{ReturnValue: rcSnapNotSupported}, nil }
	p, _ = testProvider(f, "", nil)
	_, err = p.CreateCheckpoint(context.Background(), f.rec.IDs["web01"], provider.CheckpointOptions{Consistency: provider.ApplicationConsistent})
	var he *Error
	if !errors.As(err, &he) || he.Code != rcSnapNotSupported || he.Retryable() || !strings.Contains(err.Error(), "not supported") {
		t.Fatalf("not supported: err = %v", err)
	}
	if n := len(f.callsOf("CreateSnapshot")); n != 1 {
		t.Errorf("%d CreateSnapshot calls after a permanent refusal, want 1 (no crash-consistent fallback)", n)
	}
}

func TestCheckpointNotFound(t *testing.T) {
	f := newFake(t)
	p, _ := testProvider(f, "", nil)
	_, err := p.Checkpoint(context.Background(), f.rec.IDs["web01"], "11111111-2222-4333-8444-555555555555")
	if !errors.Is(err, provider.ErrCheckpointNotFound) {
		t.Fatalf("err = %v", err)
	}
	// A checkpoint of another VM is not this VM's.
	_, err = p.Checkpoint(context.Background(), f.rec.IDs["legacy01"], f.rec.IDs["snapshot"])
	if !errors.Is(err, provider.ErrCheckpointNotFound) {
		t.Fatalf("other VM: err = %v", err)
	}
}

type stubImage struct{ disk.Image }

// fakeShares records the shares the provider connects to.
type fakeShares struct {
	roots []string
	err   error
}

func (s *fakeShares) connect(ctx context.Context, share string) error {
	s.roots = append(s.roots, share)
	return s.err
}

func TestOpenDisk(t *testing.T) {
	var opened, parents []string
	old := openImage
	openImage = func(path string, chain []string) (disk.Image, error) {
		opened, parents = append(opened, path), chain
		return stubImage{}, nil
	}
	defer func() { openImage = old }()

	f := newFake(t)
	// The frozen data disk is the child of a base on another volume: the
	// host names the parent (ParentPath), and it is opened through the
	// host's share, never on this machine's own E: drive.
	frozen := `D:\Hyper-V\web01\Virtual Hard Disks\web01-data.vhdx`
	base := `E:\Base\web01-data-base.vhdx`
	setting := func(path, parent string) string {
		return `<INSTANCE CLASSNAME="Msvm_VirtualHardDiskSettingData"><PROPERTY NAME="MaxInternalSize" TYPE="uint64"><VALUE>107374182400</VALUE></PROPERTY>` +
			`<PROPERTY NAME="Path" TYPE="string"><VALUE>` + path + `</VALUE></PROPERTY><PROPERTY NAME="ParentPath" TYPE="string"><VALUE>` + parent + `</VALUE></PROPERTY></INSTANCE>`
	}
	f.rec.VHDSettings[frozen] = setting(frozen, base)
	f.rec.VHDSettings[base] = setting(base, "")
	p, _ := testProvider(f, "hv01.example.com", nil)
	shares := &fakeShares{}
	p.shares, p.shareUser = shares, `CORP\backup`
	if _, err := p.OpenDisk(context.Background(), f.rec.IDs["web01"], f.rec.IDs["snapshot"], dataDiskID); err != nil {
		t.Fatal(err)
	}
	want := []string{`\\hv01.example.com\D$\Hyper-V\web01\Virtual Hard Disks\web01-data.vhdx`}
	if !reflect.DeepEqual(opened, want) || !reflect.DeepEqual(parents, []string{`\\hv01.example.com\E$\Base\web01-data-base.vhdx`}) {
		t.Fatalf("opened %q with parents %q", opened, parents)
	}
	if !reflect.DeepEqual(shares.roots, []string{`\\hv01.example.com\D$`, `\\hv01.example.com\E$`}) {
		t.Fatalf("SMB sessions to %q, want D$ and E$", shares.roots)
	}
	// A share that does not answer: a clear, retryable error naming it and the account.
	shares.err = errors.New("The network path was not found.")
	shares.roots = nil
	p.shares = shares
	p2, _ := testProvider(f, "hv01.example.com", nil)
	p2.shares, p2.shareUser = shares, `CORP\backup`
	_, err := p2.OpenDisk(context.Background(), f.rec.IDs["web01"], f.rec.IDs["snapshot"], dataDiskID)
	if !errors.Is(err, provider.ErrHostUnreachable) || !Retryable(err) || !strings.Contains(err.Error(), `\\hv01.example.com\D$`) ||
		!strings.Contains(err.Error(), `account CORP\backup`) || !strings.Contains(err.Error(), "network path was not found") {
		t.Fatalf("unreachable share: %v", err)
	}
	shares.err = errShareRefused
	_, err = p2.OpenDisk(context.Background(), f.rec.IDs["web01"], f.rec.IDs["snapshot"], dataDiskID)
	if err == nil || Retryable(err) || !strings.Contains(err.Error(), "was refused") {
		t.Fatalf("refused account: %v", err)
	}
	opened = nil
	_, err = p.OpenDisk(context.Background(), f.rec.IDs["web01"], f.rec.IDs["snapshot"], "no-such-disk")
	if !errors.Is(err, provider.ErrCheckpointNotFound) {
		t.Fatalf("missing disk: err = %v", err)
	}
}

func TestHostFilePath(t *testing.T) {
	for _, tc := range []struct{ remote, in, want string }{
		{"", `D:\VMs\a.vhdx`, `D:\VMs\a.vhdx`},
		{"hv02", `D:\VMs\a.vhdx`, `\\hv02\D$\VMs\a.vhdx`},
		{"hv02", `\\filer\vms\a.vhdx`, `\\filer\vms\a.vhdx`},
		{"hv02", `c:\a.vhdx`, `\\hv02\c$\a.vhdx`},
	} {
		if got := hostFilePath(tc.remote, tc.in); got != tc.want {
			t.Errorf("hostFilePath(%q, %q) = %q, want %q", tc.remote, tc.in, got, tc.want)
		}
	}
}

// rctAnswers makes GetVirtualDiskChanges answer from a list, in order.
func rctAnswers(t *testing.T, f *fakeWMI, answers ...result) {
	i := 0
	f.methods["GetVirtualDiskChanges"] = func(inv invocation) (result, error) {
		if i >= len(answers) {
			t.Errorf("GetVirtualDiskChanges called %d times, %d answers recorded", i+1, len(answers))
			return result{ReturnValue: rcFailed}, nil
		}
		i++
		return answers[i-1], nil
	}
}

func changes(processed int64, offsets, lengths []string) result {
	o := make([]any, len(offsets))
	for i := range offsets {
		o[i] = offsets[i]
	}
	l := make([]any, len(lengths))
	for i := range lengths {
		l[i] = lengths[i]
	}
	return result{ReturnValue: 0, Out: map[string]any{"ProcessedByteLength": fmt.Sprint(processed), "ChangedByteOffsets": o, "ChangedByteLengths": l, "Job": nil}}
}

func TestChangedRangesLoop(t *testing.T) {
	f := newFake(t)
	size := 10 * gib
	rctAnswers(t, f,
		// The first call covers 4 GiB: two adjacent ranges and one crossing into the next call's part.
		changes(4*gib, []string{"0", "1048576", "4293918720"}, []string{"1048576", "2097152", "2097152"}),
		// The second covers 5 GiB; its first range overlaps the previous one.
		changes(5*gib, []string{"4294967296", "6442450944"}, []string{"1048576", "65536"}),
		// The last reports a range past the end of the disk, which is clamped.
		changes(gib, []string{"10736369664"}, []string{"4194304"}),
	)
	p, _ := testProvider(f, "", nil)
	got, err := p.ChangedRanges(context.Background(), f.rec.IDs["web01"], f.rec.IDs["snapshot"], osDiskID, f.rec.IDs["referencePointOld"])
	if err != nil {
		t.Fatal(err)
	}
	want := []disk.Extent{
		{Offset: 0, Length: 3 << 20},
		{Offset: 4*gib - 1<<20, Length: 2 << 20},
		{Offset: 6 * gib, Length: 65536},
		{Offset: size - 1<<20, Length: 1 << 20},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ranges = %+v\nwant %+v", got, want)
	}
	calls := f.callsOf("GetVirtualDiskChanges")
	if len(calls) != 3 {
		t.Fatalf("%d calls", len(calls))
	}
	for i, w := range []struct{ off, len uint64 }{{0, uint64(size - 4096)}, {uint64(4 * gib), uint64(6 * gib)}, {uint64(9 * gib), uint64(gib)}} {
		in := calls[i].In
		if in["ByteOffset"] != w.off || in["ByteLength"] != w.len {
			t.Errorf("call %d asked offset %v length %v, want %d %d", i, in["ByteOffset"], in["ByteLength"], w.off, w.len)
		}
		if in["Path"] != `D:\Hyper-V\web01\Virtual Hard Disks\web01-os.vhdx` {
			t.Errorf("call %d Path = %v, want the frozen disk", i, in["Path"])
		}
		if in["LimitId"] != "rctX:5d0a1c2b-3e4f-4a5b-8c6d-7e8f9a0b1c2d:00000000000000b2" {
			t.Errorf("call %d LimitId = %v, want the os disk's RCT id", i, in["LimitId"])
		}
		if !reflect.DeepEqual(calls[i].Out, []string{"ProcessedByteLength", "ChangedByteOffsets", "ChangedByteLengths", "Job"}) {
			t.Errorf("call %d asked out params %v", i, calls[i].Out)
		}
	}
}

func TestChangedRangesNotAvailable(t *testing.T) {
	ctx := context.Background()
	f := newFake(t)
	p, _ := testProvider(f, "", nil)
	vm, cp := f.rec.IDs["web01"], f.rec.IDs["snapshot"]

	if _, err := p.ChangedRanges(ctx, vm, cp, osDiskID, ""); !errors.Is(err, provider.ErrNoChangeTracking) {
		t.Errorf("no reference point: %v", err)
	}
	if _, err := p.ChangedRanges(ctx, vm, cp, osDiskID, "Microsoft:"+vm+":00000000-0000-0000-0000-000000000000"); !errors.Is(err, provider.ErrNoChangeTracking) {
		t.Errorf("reference point gone: %v", err)
	}
	for _, rc := range []uint32{rcFileNotFound, rcNotSupported, rcInvalidParameter} {
		rctAnswers(t, f, result{ReturnValue: rc})
		_, err := p.ChangedRanges(ctx, vm, cp, osDiskID, f.rec.IDs["referencePointOld"])
		if !errors.Is(err, provider.ErrNoChangeTracking) || Retryable(err) {
			t.Errorf("return %d: err = %v, want ErrNoChangeTracking, not retryable", rc, err)
		}
	}
	rctAnswers(t, f, result{ReturnValue: rcSystemInUse})
	if _, err := p.ChangedRanges(ctx, vm, cp, osDiskID, f.rec.IDs["referencePointOld"]); err == nil || !Retryable(err) || errors.Is(err, provider.ErrNoChangeTracking) {
		t.Errorf("system in use: err = %v, want retryable", err)
	}
	rctAnswers(t, f, changes(0, nil, nil))
	if _, err := p.ChangedRanges(ctx, vm, cp, osDiskID, f.rec.IDs["referencePointOld"]); err == nil || !strings.Contains(err.Error(), "no progress") {
		t.Errorf("no progress: err = %v", err)
	}
	rctAnswers(t, f, changes(gib, []string{"0", "512"}, []string{"512"}))
	if _, err := p.ChangedRanges(ctx, vm, cp, osDiskID, f.rec.IDs["referencePointOld"]); err == nil || !strings.Contains(err.Error(), "2 changed offsets but 1 lengths") {
		t.Errorf("mismatched arrays: err = %v", err)
	}
}

func TestChangedRangesCancelled(t *testing.T) {
	f := newFake(t)
	ctx, cancel := context.WithCancel(context.Background())
	f.methods["GetVirtualDiskChanges"] = func(invocation) (result, error) {
		cancel()
		return changes(gib, nil, nil), nil
	}
	p, _ := testProvider(f, "", nil)
	_, err := p.ChangedRanges(ctx, f.rec.IDs["web01"], f.rec.IDs["snapshot"], osDiskID, f.rec.IDs["referencePointOld"])
	if !errors.Is(err, context.Canceled) || len(f.callsOf("GetVirtualDiskChanges")) != 1 {
		t.Fatalf("err = %v after %d calls", err, len(f.callsOf("GetVirtualDiskChanges")))
	}
}

func convertAnswers(f *fakeWMI, newRP string) {
	f.methods["ConvertToReferencePoint"] = func(invocation) (result, error) {
		return result{ReturnValue: 0, Out: map[string]any{"ResultingReferencePoint": `\\HV01\root\virtualization\v2:Msvm_VirtualSystemReferencePoint.InstanceID="` + newRP + `"`, "Job": nil}}, nil
	}
}

func TestConvertToReferencePointOrder(t *testing.T) {
	f := newFake(t)
	ids := f.rec.IDs
	convertAnswers(f, ids["referencePointNew"])
	f.methods["DestroyReferencePoint"] = func(invocation) (result, error) { return result{ReturnValue: 0}, nil }
	p, _ := testProvider(f, "", nil)

	id, err := p.ConvertToReferencePoint(context.Background(), ids["web01"], ids["snapshot"], ids["referencePointOld"])
	if err != nil {
		t.Fatal(err)
	}
	if id != ids["referencePointNew"] {
		t.Fatalf("reference point %q, want %q", id, ids["referencePointNew"])
	}
	if order := f.invokeOrder(); !reflect.DeepEqual(order, []string{"ConvertToReferencePoint", "DestroyReferencePoint"}) {
		t.Fatalf("order %v", order)
	}
	conv := f.callsOf("ConvertToReferencePoint")[0]
	if conv.In["AffectedSnapshot"] != `\\HV01\root\virtualization\v2:Msvm_VirtualSystemSettingData.InstanceID="Microsoft:`+ids["snapshot"]+`"` {
		t.Errorf("AffectedSnapshot = %v", conv.In["AffectedSnapshot"])
	}
	destroy := f.callsOf("DestroyReferencePoint")[0]
	if destroy.In["AffectedReferencePoint"] != `\\HV01\root\virtualization\v2:Msvm_VirtualSystemReferencePoint.InstanceID="`+ids["referencePointOld"]+`"` {
		t.Errorf("AffectedReferencePoint = %v", destroy.In["AffectedReferencePoint"])
	}
	if !strings.Contains(destroy.Path, "Msvm_VirtualSystemReferencePointService") {
		t.Errorf("DestroyReferencePoint called on %s", destroy.Path)
	}
}

func TestConvertToReferencePointFailureKeepsPrevious(t *testing.T) {
	f := newFake(t)
	ids := f.rec.IDs
	f.methods["ConvertToReferencePoint"] = func(invocation) (result, error) { return result{ReturnValue: rcInvalidState}, nil }
	p, _ := testProvider(f, "", nil)
	_, err := p.ConvertToReferencePoint(context.Background(), ids["web01"], ids["snapshot"], ids["referencePointOld"])
	if err == nil || !Retryable(err) {
		t.Fatalf("err = %v, want retryable", err)
	}
	if n := len(f.callsOf("DestroyReferencePoint")); n != 0 {
		t.Fatalf("previous reference point destroyed %d times after a failed conversion", n)
	}
}

func TestConvertToReferencePointDestroyFailureWarns(t *testing.T) {
	f := newFake(t)
	ids := f.rec.IDs
	convertAnswers(f, ids["referencePointNew"])
	f.methods["DestroyReferencePoint"] = func(invocation) (result, error) { return result{ReturnValue: rcFailed}, nil }
	var logs strings.Builder
	p, _ := testProvider(f, "", &logs)
	id, err := p.ConvertToReferencePoint(context.Background(), ids["web01"], ids["snapshot"], ids["referencePointOld"])
	if err != nil || id != ids["referencePointNew"] {
		t.Fatalf("= %q, %v", id, err)
	}
	if !strings.Contains(logs.String(), ids["referencePointOld"]) {
		t.Fatalf("no warning names the reference point left behind: %q", logs.String())
	}
}

func TestConvertFirstReferencePointDestroysNothing(t *testing.T) {
	f := newFake(t)
	ids := f.rec.IDs
	convertAnswers(f, ids["referencePointNew"])
	p, _ := testProvider(f, "", nil)
	if _, err := p.ConvertToReferencePoint(context.Background(), ids["web01"], ids["snapshot"], ""); err != nil {
		t.Fatal(err)
	}
	if order := f.invokeOrder(); !reflect.DeepEqual(order, []string{"ConvertToReferencePoint"}) {
		t.Fatalf("order %v", order)
	}
}

func TestReleaseCheckpoint(t *testing.T) {
	f := newFake(t)
	ids := f.rec.IDs
	f.methods["DestroySnapshot"] = func(invocation) (result, error) { return result{ReturnValue: 0}, nil }
	p, _ := testProvider(f, "", nil)
	if err := p.ReleaseCheckpoint(context.Background(), ids["web01"], ids["snapshot"]); err != nil {
		t.Fatal(err)
	}
	calls := f.callsOf("DestroySnapshot")
	if len(calls) != 1 || calls[0].In["AffectedSnapshot"] != `\\HV01\root\virtualization\v2:Msvm_VirtualSystemSettingData.InstanceID="Microsoft:`+ids["snapshot"]+`"` {
		t.Fatalf("DestroySnapshot calls %+v", calls)
	}
	// Releasing a checkpoint that is gone is not an error, and calls nothing.
	if err := p.ReleaseCheckpoint(context.Background(), ids["web01"], "11111111-2222-4333-8444-555555555555"); err != nil {
		t.Fatal(err)
	}
	if len(f.callsOf("DestroySnapshot")) != 1 {
		t.Fatal("DestroySnapshot called for a missing checkpoint")
	}
}
