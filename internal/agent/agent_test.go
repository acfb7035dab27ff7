package agent

import (
	"context"
	"strings"
	"testing"

	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/digest"
	"github.com/replicator/replicator/internal/transfer"
)

// TestCommitSurvivesRestarts: the commit of a restore point is retried by
// Temporal after the agent died, either before it committed (the new
// process continues the open point from the metadata) or after (the retry
// finds the point by its checkpoint and succeeds again).
func TestCommitSurvivesRestarts(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	const job, vmID, cp, size, bs = "demo", "vm-1", "cp-1", 1 << 20, 64 << 10
	a, err := New(dir, "agent test")
	if err != nil {
		t.Fatal(err)
	}
	vm := contract.VM{ID: vmID, Name: "web01", Disks: []contract.Disk{{ID: "0", VirtualSize: size, SectorSize: 512}}}
	if _, err := a.Prepare(ctx, job, vm); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Begin(ctx, contract.BeginInput{Job: job, VMID: vmID, RunID: "run-1", CheckpointID: cp, BlockSize: bs}); err != nil {
		t.Fatal(err)
	}
	sink, err := a.OpenDisk(ctx, transfer.Hello{Version: transfer.Version, Job: job, VMID: vmID, DiskID: "0", CheckpointID: cp, DiskSize: size, BlockSize: bs}, "proxy")
	if err != nil {
		t.Fatal(err)
	}
	block := make([]byte, bs)
	for i := range block {
		block[i] = byte(i)
	}
	if _, err := sink.WriteAt(block, 0); err != nil {
		t.Fatal(err)
	}
	sink.SetDigest(0, digest.Of(block))
	if err := sink.Complete(); err != nil {
		t.Fatal(err)
	}
	sink.Close()
	a.Close() // the agent dies before the commit activity reaches it

	a2, err := New(dir, "agent test 2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a2.Commit(ctx, job, vmID, "cp-other", 7); err == nil || !strings.Contains(err.Error(), "open restore point is of checkpoint cp-1") {
		t.Fatalf("commit of another checkpoint: %v", err)
	}
	point, err := a2.Commit(ctx, job, vmID, cp, 7)
	if err != nil {
		t.Fatalf("commit after a restart: %v", err)
	}
	a2.Close()

	a3, err := New(dir, "agent test 3")
	if err != nil {
		t.Fatal(err)
	}
	defer a3.Close()
	again, err := a3.Commit(ctx, job, vmID, cp, 7)
	if err != nil || again != point {
		t.Fatalf("retried commit: point %q, %v; want %q", again, err, point)
	}
	if _, err := a3.Commit(ctx, job, vmID, "cp-2", 7); err == nil || !strings.Contains(err.Error(), "not of checkpoint cp-2") {
		t.Fatalf("commit of a checkpoint never begun: %v", err)
	}
	r, _ := a3.Store().Replica(job, vmID)
	points, err := r.Points()
	if err != nil || len(points) != 1 {
		t.Fatalf("want 1 restore point, got %v (%v)", points, err)
	}
	if _, err := r.Verify(ctx, point); err != nil {
		t.Fatal(err)
	}
}
