package hvsim

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/replicator/replicator/internal/disk"
	"github.com/replicator/replicator/internal/provider"
	"github.com/replicator/replicator/internal/provider/hyperv"
	"github.com/replicator/replicator/internal/provider/lab"
)

const mib = 1 << 20

func newHost(t *testing.T, o Options) (*Sim, *hyperv.Provider) {
	t.Helper()
	s, err := Open("hv-sim", t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	p := hyperv.NewOverWMI(s, hyperv.Options{PollInterval: 10 * time.Millisecond, MaxPollInterval: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	return s, p
}

func readAll(t *testing.T, img disk.Image) []byte {
	t.Helper()
	b := make([]byte, img.Size())
	if _, err := img.ReadAt(b, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return b
}

// The provider over the simulator: a named checkpoint of real differencing
// disks, a reference point with RCT ids, changed ranges that cover exactly
// the blocks written since, and nothing left behind.
func TestProviderThroughSimulator(t *testing.T) {
	ctx := context.Background()
	s, p := newHost(t, Options{JobDelay: 200 * time.Millisecond})
	if _, err := lab.CreateVM(s.dir, "web01", []int64{64 * mib, 32 * mib}); err != nil {
		t.Fatal(err)
	}
	if err := s.Lab().Write(ctx, "web01", 0, 10, 1); err != nil {
		t.Fatal(err)
	}
	h, err := p.Host(ctx)
	if err != nil || h.Kind != "hyperv" || h.Name != "HVSIM" {
		t.Fatalf("host %+v, %v", h, err)
	}
	vms, err := p.VMs(ctx)
	if err != nil || len(vms) != 1 {
		t.Fatalf("VMs %+v, %v", vms, err)
	}
	vm := vms[0]
	if vm.State != "running" || vm.ConfigurationVersion != "9.0" || len(vm.Disks) != 2 || vm.Disks[0].VirtualSize != 64*mib || vm.Unsupported != "" {
		t.Fatalf("VM %+v", vm)
	}
	name := provider.CheckpointName("nightly", "web01")
	start := time.Now()
	cp1, err := p.CreateCheckpoint(ctx, vm.ID, provider.CheckpointOptions{Name: name, Consistency: provider.ApplicationConsistent})
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(start) < 200*time.Millisecond {
		t.Errorf("checkpoint made in %s, before the job's delay", time.Since(start))
	}
	if cp1.Name != name || len(cp1.Disks) != 2 || cp1.Warning != "" {
		t.Fatalf("checkpoint %+v", cp1)
	}
	img, err := p.OpenDisk(ctx, vm.ID, cp1.ID, vm.Disks[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	frozen := readAll(t, img)
	img.Close()
	// The guest writes on; the checkpoint does not move.
	if err := s.Lab().Write(ctx, "web01", 0, 1, 2); err != nil {
		t.Fatal(err)
	}
	img, _ = p.OpenDisk(ctx, vm.ID, cp1.ID, vm.Disks[0].ID)
	if !bytes.Equal(readAll(t, img), frozen) {
		t.Fatal("the frozen disk changed under a write of the guest")
	}
	img.Close()
	if _, err := p.ChangedRanges(ctx, vm.ID, cp1.ID, vm.Disks[0].ID, ""); !errors.Is(err, provider.ErrNoChangeTracking) {
		t.Fatalf("no reference point: %v", err)
	}
	rp1, err := p.ConvertToReferencePoint(ctx, vm.ID, cp1.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	if cps, _ := p.Checkpoints(ctx, vm.ID); len(cps) != 0 {
		t.Fatalf("checkpoints after conversion: %+v", cps)
	}
	rps, _ := s.Lab().ReferencePoints(ctx, vm.ID)
	if len(rps) != 1 || rps[0].Name != name {
		t.Fatalf("reference points %+v, want one named %q", rps, name)
	}

	cp2, err := p.CreateCheckpoint(ctx, vm.ID, provider.CheckpointOptions{Name: name, Consistency: provider.CrashConsistent})
	if err != nil {
		t.Fatal(err)
	}
	changed, err := p.ChangedRanges(ctx, vm.ID, cp2.ID, vm.Disks[0].ID, rp1)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range changed {
		n += e.Length
	}
	if n == 0 || n > 64*mib/20 {
		t.Fatalf("%d bytes changed after writing 1%% of 64 MiB", n)
	}
	// Every byte that differs between the two points lies in a changed range.
	img, _ = p.OpenDisk(ctx, vm.ID, cp2.ID, vm.Disks[0].ID)
	now := readAll(t, img)
	img.Close()
	for i := range now {
		if now[i] != frozen[i] && !inRanges(changed, int64(i)) {
			t.Fatalf("byte %d changed outside the changed ranges", i)
		}
	}
	other, err := p.ChangedRanges(ctx, vm.ID, cp2.ID, vm.Disks[1].ID, rp1)
	if err != nil || len(other) != 0 {
		t.Fatalf("unwritten disk: %+v, %v", other, err)
	}
	rp2, err := p.ConvertToReferencePoint(ctx, vm.ID, cp2.ID, rp1)
	if err != nil || rp2 == rp1 {
		t.Fatal(rp2, err)
	}
	rps, _ = s.Lab().ReferencePoints(ctx, vm.ID)
	if len(rps) != 1 || !strings.HasSuffix(rp2, rps[0].ID) {
		t.Fatalf("reference points %+v after replacing %s with %s", rps, rp1, rp2)
	}
}

func inRanges(es []disk.Extent, off int64) bool {
	for _, e := range es {
		if off >= e.Offset && off < e.End() {
			return true
		}
	}
	return false
}

// jobWarnings: every job ends in 32768; the checkpoint is made and carries
// the warning.
func TestJobWarnings(t *testing.T) {
	ctx := context.Background()
	s, p := newHost(t, Options{JobWarnings: true})
	vm, err := lab.CreateVM(s.dir, "db01", []int64{8 * mib})
	if err != nil {
		t.Fatal(err)
	}
	cp, err := p.CreateCheckpoint(ctx, vm.ID, provider.CheckpointOptions{Name: "replicator j db01"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(cp.Warning, "completed with warnings") {
		t.Fatalf("warning %q", cp.Warning)
	}
	if err := p.ReleaseCheckpoint(ctx, vm.ID, cp.ID); err != nil {
		t.Fatal(err)
	}
	if cps, _ := p.Checkpoints(ctx, vm.ID); len(cps) != 0 {
		t.Fatalf("checkpoints after release: %+v", cps)
	}
}

// A guest that cannot freeze: the application-consistent job fails, the
// provider takes a crash-consistent checkpoint and says so.
func TestApplicationConsistencyFallsBack(t *testing.T) {
	ctx := context.Background()
	s, p := newHost(t, Options{})
	vm, err := lab.CreateVM(s.dir, "app01", []int64{8 * mib})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetVM(ctx, "app01", VMOptions{NoGuestFreeze: true}); err != nil {
		t.Fatal(err)
	}
	cp, err := p.CreateCheckpoint(ctx, vm.ID, provider.CheckpointOptions{Consistency: provider.ApplicationConsistent})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(cp.Warning, "crash-consistent") || !strings.Contains(cp.Warning, "quiesced") {
		t.Fatalf("warning %q", cp.Warning)
	}
	if cps, _ := p.Checkpoints(ctx, vm.ID); len(cps) != 1 {
		t.Fatalf("%d checkpoints, want exactly 1", len(cps))
	}
}

// VHD and pass-through disks, old configuration versions: listed with the
// reason, refused before any checkpoint.
func TestUnsupportedVMs(t *testing.T) {
	ctx := context.Background()
	s, p := newHost(t, Options{})
	for _, tc := range []struct {
		name string
		o    VMOptions
		want string
	}{
		{"pass01", VMOptions{ExtraDisks: []ExtraDisk{{Kind: "passthrough", Path: `\\.\PHYSICALDRIVE3`, Size: 8 * mib}}}, "PHYSICALDRIVE3) is a pass-through disk"},
		{"vhd01", VMOptions{ExtraDisks: []ExtraDisk{{Kind: "vhd", Path: "/data/old.vhd", Size: 8 * mib}}}, "(/data/old.vhd) is a VHD file"},
		{"set01", VMOptions{ExtraDisks: []ExtraDisk{{Kind: "vhds", Path: "/data/shared.vhds", Size: 8 * mib}}}, "is a VHD Set (shared) file"},
		{"old01", VMOptions{ConfigurationVersion: "5.0"}, "configuration version 5.0"},
	} {
		vm, err := lab.CreateVM(s.dir, tc.name, []int64{8 * mib})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.SetVM(ctx, tc.name, tc.o); err != nil {
			t.Fatal(err)
		}
		vms, err := p.VMs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range vms {
			if v.ID == vm.ID && !strings.Contains(v.Unsupported, tc.want) {
				t.Errorf("%s: unsupported %q, want %q", tc.name, v.Unsupported, tc.want)
			}
		}
		_, err = p.CreateCheckpoint(ctx, vm.ID, provider.CheckpointOptions{Name: "replicator j " + tc.name})
		if !errors.Is(err, provider.ErrUnsupported) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: CreateCheckpoint err = %v", tc.name, err)
		}
		if cps, _ := s.Lab().Checkpoints(ctx, vm.ID); len(cps) != 0 {
			t.Errorf("%s: %d checkpoints made", tc.name, len(cps))
		}
	}
}

// Documented return values and parameter checks, straight at the WMI level.
func TestReturnValues(t *testing.T) {
	ctx := context.Background()
	s, _ := newHost(t, Options{})
	vm, err := lab.CreateVM(s.dir, "web01", []int64{8 * mib})
	if err != nil {
		t.Fatal(err)
	}
	snapSvc := s.servicePath(classSnapshotService)
	vmPath := s.path(classComputerSystem, "CreationClassName", classComputerSystem, "Name", vm.ID)
	for _, tc := range []struct {
		name string
		in   map[string]any
		want uint32
	}{
		{"misspelled parameter is dropped", map[string]any{"AffectedSytem": vmPath, "SnapshotType": uint16(32768)}, 4},
		{"wrong CIM type", map[string]any{"AffectedSystem": vmPath, "SnapshotType": uint32(32768)}, 6},
		{"unknown snapshot type", map[string]any{"AffectedSystem": vmPath, "SnapshotType": uint16(7)}, 4},
		{"job started", map[string]any{"AffectedSystem": vmPath, "SnapshotType": uint16(32768)}, 4096},
	} {
		res, err := s.Invoke(ctx, snapSvc, "CreateSnapshot", tc.in, []string{"Job"})
		if err != nil || res.ReturnValue != tc.want {
			t.Errorf("%s: return %d, %v; want %d", tc.name, res.ReturnValue, err, tc.want)
		}
	}
	ims := s.servicePath(classImageManagement)
	res, err := s.Invoke(ctx, ims, "GetVirtualHardDiskSettingData", map[string]any{"Path": "/no/such.vhdx"}, []string{"SettingData"})
	if err != nil || res.ReturnValue != 32779 {
		t.Errorf("missing file: %d, %v; want 32779", res.ReturnValue, err)
	}
	cp, err := s.Lab().CreateCheckpoint(ctx, vm.ID, provider.CheckpointOptions{})
	if err != nil {
		t.Fatal(err)
	}
	frozen := cp.Disks[0].Path
	for _, tc := range []struct {
		off, length uint64
		want        uint32
	}{{0, 8 * mib, 32773}, {0, 8*mib - 4096, 32773}, {4 * mib, 5 * mib, 32773}} {
		res, err := s.Invoke(ctx, ims, "GetVirtualDiskChanges", map[string]any{"Path": frozen, "LimitId": "rctX:none:0", "TargetSnapshotId": "", "ByteOffset": tc.off, "ByteLength": tc.length}, []string{"ProcessedByteLength"})
		if err != nil || res.ReturnValue != tc.want {
			t.Errorf("changes [%d,+%d): %d, %v; want %d", tc.off, tc.length, res.ReturnValue, err, tc.want)
		}
	}
}

// The provider reads a VM's hardware through the simulator's WMI objects as
// the lab keeps it: processors, memory, secure boot, adapters with their
// MACs and switches, and each disk's controller and location.
func TestVMConfigThroughSimulator(t *testing.T) {
	ctx := context.Background()
	s, p := newHost(t, Options{})
	if _, err := lab.CreateVMWith(s.dir, "db01", []int64{32 * mib, 16 * mib, 16 * mib},
		lab.Hardware{Processors: 4, MemoryBytes: 4 << 30, Switches: []string{"LAN", "Storage", "LAN"}}); err != nil {
		t.Fatal(err)
	}
	vms, err := p.VMs(ctx)
	if err != nil || len(vms) != 1 {
		t.Fatalf("VMs %+v, %v", vms, err)
	}
	want, err := s.Lab().VMConfig(ctx, vms[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	got, err := p.VMConfig(ctx, vms[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Generation != want.Generation || got.Processors != 4 || got.MemoryBytes != 4<<30 || got.SecureBoot != want.SecureBoot || got.DynamicMemory != want.DynamicMemory {
		t.Fatalf("hardware read %+v, lab has %+v", got, want)
	}
	if len(got.NetworkAdapters) != 3 {
		t.Fatalf("adapters %+v, want 3", got.NetworkAdapters)
	}
	for i, n := range got.NetworkAdapters {
		w := want.NetworkAdapters[i]
		if n.Switch != w.Switch || n.MAC != w.MAC || n.StaticMAC != w.StaticMAC || n.Name != w.Name {
			t.Errorf("adapter %d: %+v, lab has %+v", i, n, w)
		}
	}
	if len(got.Disks) != 3 {
		t.Fatalf("disk slots %+v, want 3", got.Disks)
	}
	for i, d := range got.Disks {
		if d.ID != vms[0].Disks[i].ID || d.Controller != "scsi" || d.ControllerNumber != 0 || d.Location != want.Disks[i].Location {
			t.Errorf("disk slot %d: %+v, want disk %s on scsi 0 at %d", i, d, vms[0].Disks[i].ID, want.Disks[i].Location)
		}
	}
	if _, err := p.VMConfig(ctx, "no-such-vm"); !errors.Is(err, provider.ErrVMNotFound) {
		t.Fatalf("unknown VM: %v", err)
	}
}
