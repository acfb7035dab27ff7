package hyperv

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/replicator/replicator/internal/provider"
)

// The checkpoint carries the name it was asked for (ElementName through
// ModifySystemSettings) and the snapshot settings ask for a copy backup.
func TestCreateCheckpointNamedCopyBackup(t *testing.T) {
	f := newFake(t)
	snapshotJob(f, jobCompleted, 0, "")
	p, _ := testProvider(f, "", nil)
	name := provider.CheckpointName("nightly", "web01")
	cp, err := p.CreateCheckpoint(context.Background(), f.rec.IDs["web01"], provider.CheckpointOptions{Name: name, Consistency: provider.CrashConsistent})
	if err != nil {
		t.Fatal(err)
	}
	if cp.Name != name || !provider.MadeByJob(cp.Name, "nightly") {
		t.Errorf("checkpoint name %q, want %q", cp.Name, name)
	}
	mods := f.callsOf("ModifySystemSettings")
	if len(mods) != 1 || !strings.Contains(mods[0].Path, "Msvm_VirtualSystemManagementService") {
		t.Fatalf("ModifySystemSettings calls %+v, want one on the management service", mods)
	}
	var settings struct {
		Props map[string]any `json:"props"`
	}
	if err := json.Unmarshal([]byte(asString(f.callsOf("CreateSnapshot")[0].In["SnapshotSettings"])), &settings); err != nil {
		t.Fatal(err)
	}
	if settings.Props["GuestBackupType"] != float64(2) {
		t.Errorf("GuestBackupType = %v, want 2 (copy)", settings.Props["GuestBackupType"])
	}
}

// A job that ends in 32768 (completed with warnings) made its checkpoint:
// it is used, and the warning travels with it.
func TestCreateCheckpointCompletedWithWarnings(t *testing.T) {
	f := newFake(t)
	snapshotJob(f, jobCompletedWithWarnings, 0, "The guest's VSS writer reported a warning.")
	p, _ := testProvider(f, "", nil)
	cp, err := p.CreateCheckpoint(context.Background(), f.rec.IDs["web01"], provider.CheckpointOptions{Consistency: provider.CrashConsistent})
	if err != nil {
		t.Fatal(err)
	}
	if cp.ID != f.rec.IDs["snapshot"] || !strings.Contains(cp.Warning, "VSS writer reported a warning") {
		t.Fatalf("checkpoint %+v, want the snapshot with the job's warning", cp)
	}
	if n := len(f.callsOf("CreateSnapshot")); n != 1 {
		t.Errorf("%d CreateSnapshot calls, want 1", n)
	}
}

// A VM on a VHD disk with an old configuration version is refused with the
// reasons, and no snapshot is asked for.
func TestCreateCheckpointRefusesUnsupportedVM(t *testing.T) {
	f := newFake(t)
	id := f.rec.IDs["legacy01"]
	vssd := f.rec.Queries["SELECT * FROM Msvm_VirtualSystemSettingData WHERE VirtualSystemType = 'Microsoft:Hyper-V:System:Realized'"]
	for _, o := range vssd {
		if o.str("VirtualSystemIdentifier") == id {
			f.rec.Queries["SELECT * FROM Msvm_VirtualSystemSettingData WHERE VirtualSystemIdentifier = '"+id+"'"] = []object{o}
		}
	}
	for _, o := range f.rec.Queries["SELECT * FROM Msvm_ComputerSystem"] {
		if o.str("Name") == id {
			f.rec.Queries["SELECT * FROM Msvm_ComputerSystem WHERE Name = '"+id+"'"] = []object{o}
		}
	}
	p, _ := testProvider(f, "", nil)
	_, err := p.CreateCheckpoint(context.Background(), id, provider.CheckpointOptions{Consistency: provider.CrashConsistent})
	if !errors.Is(err, provider.ErrUnsupported) || Retryable(err) {
		t.Fatalf("err = %v, want ErrUnsupported, not retryable", err)
	}
	for _, want := range []string{"legacy01.vhd", "VHD file", "configuration version 5.0"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("err %q does not say %q", err, want)
		}
	}
	if n := len(f.callsOf("CreateSnapshot")); n != 0 {
		t.Errorf("%d CreateSnapshot calls on an unsupported VM", n)
	}
}

// VirtualDiskIdentifiers hold storage allocation InstanceIDs; the RCT id is
// the one at the same index as the disk's slot.
func TestRCTIDForStorageAllocationIDs(t *testing.T) {
	rp := object{Props: map[string]any{
		"InstanceID": "Microsoft:rp",
		"VirtualDiskIdentifiers": []any{
			`Microsoft:4C0F3D7E-9A8B-4E21-B6C3-1D2E3F4A5B6C\DB12A8C7-5E1F-4A0B-9C3D-2E4F6A8B0C1D\0\1\L`,
			`Microsoft:4C0F3D7E-9A8B-4E21-B6C3-1D2E3F4A5B6C\DB12A8C7-5E1F-4A0B-9C3D-2E4F6A8B0C1D\0\0\L`,
		},
		"ResilientChangeTrackingIdentifiers": []any{"rctX:data:1", "rctX:os:1"},
	}}
	got, err := rctIDFor(rp, osDiskID, "{5D0A1C2B-3E4F-4A5B-8C6D-7E8F9A0B1C2D}")
	if err != nil || got != "rctX:os:1" {
		t.Fatalf("rctIDFor = %q, %v; want rctX:os:1", got, err)
	}
	if _, err := rctIDFor(rp, "other-0-9", ""); err == nil {
		t.Fatal("a disk the reference point does not hold got an RCT id")
	}
}

// GetVirtualDiskChanges answering 4096: the output comes after the job.
func TestChangedRangesJobAnswer(t *testing.T) {
	const id = "7A3C2B1D-0E9F-4A8B-B7C6-D5E4F3A2B1C0"
	f := newFake(t)
	f.jobs[jobPath(id)] = []object{jobObject(id, jobRunning, 10, 0, ""), jobObject(id, jobCompleted, 100, 0, "")}
	started := result{ReturnValue: rcJobStarted, Out: map[string]any{"Job": jobPath(id), "ProcessedByteLength": nil}}
	rctAnswers(t, f, started, changes(10*gib, []string{"1048576"}, []string{"65536"}))
	p, _ := testProvider(f, "", nil)
	got, err := p.ChangedRanges(context.Background(), f.rec.IDs["web01"], f.rec.IDs["snapshot"], osDiskID, f.rec.IDs["referencePointOld"])
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Offset != 1<<20 || got[0].Length != 65536 {
		t.Fatalf("ranges %+v", got)
	}
	for _, c := range f.callsOf("GetVirtualDiskChanges") {
		if l, _ := c.In["ByteLength"].(uint64); l >= uint64(10*gib) {
			t.Errorf("ByteLength %d is not less than the disk's size", l)
		}
	}
}

// guestBackupType full asks for GuestBackupType 1.
func TestCreateCheckpointFullBackup(t *testing.T) {
	f := newFake(t)
	snapshotJob(f, jobCompleted, 0, "")
	p, _ := testProvider(f, "", nil)
	if _, err := p.CreateCheckpoint(context.Background(), f.rec.IDs["web01"], provider.CheckpointOptions{Consistency: provider.ApplicationConsistent, FullBackup: true}); err != nil {
		t.Fatal(err)
	}
	var settings struct {
		Props map[string]any `json:"props"`
	}
	if err := json.Unmarshal([]byte(asString(f.callsOf("CreateSnapshot")[0].In["SnapshotSettings"])), &settings); err != nil {
		t.Fatal(err)
	}
	if settings.Props["GuestBackupType"] != float64(1) || settings.Props["ConsistencyLevel"] != float64(1) {
		t.Errorf("settings %v, want GuestBackupType 1 and ConsistencyLevel 1", settings.Props)
	}
}
