package main

import (
	"context"
	"testing"

	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/diskimage"
	"github.com/replicator/replicator/internal/provider/lab"
	"github.com/replicator/replicator/internal/replica"
	"github.com/replicator/replicator/internal/replica/replicatest"
)

// TestExclusionsThatShrinkAreSent: after a point made with exclude.swap, a
// changed-block-tracking run with exclude.swap off sends the swap space the
// earlier point left out: the replica equals the source byte for byte,
// swap included.
func TestExclusionsThatShrinkAreSent(t *testing.T) {
	h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, false, nil)
	in := contract.ReplicationInput{Job: "demo", VMs: []string{"web01"}}
	first := h.run(in)
	requireSuccess(t, first)
	if d := first.VMs[0].Disks[0]; d.BlocksExcluded == 0 {
		t.Fatalf("the first run excluded nothing: the test needs swap on web01: %+v", d)
	}

	h.cfg.Jobs[0].Exclude.Swap = false
	h.writeConfig()
	res := h.run(in)
	requireSuccess(t, res)
	if d := res.VMs[0].Disks[0]; d.ChangeTracking != contract.TrackingRCT {
		t.Fatalf("the second run did not use change tracking: %+v", d)
	}

	ctx := context.Background()
	vms, err := lab.New("hv01", h.cfg.Hosts[0].Path).VMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	store, err := replica.Open(h.cfg.Agent.Datastore)
	if err != nil {
		t.Fatal(err)
	}
	r, err := store.Replica("demo", res.VMs[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, vm := range vms {
		if vm.ID != res.VMs[0].ID {
			continue
		}
		for _, d := range vm.Disks {
			src, err := diskimage.Open(d.Path)
			if err != nil {
				t.Fatal(err)
			}
			dst, err := r.OpenPoint(res.VMs[0].RestorePoint, d.ID)
			if err != nil {
				t.Fatal(err)
			}
			replicatest.RequireSameImage(t, "web01 disk "+d.ID+" with nothing excluded", src, dst, src.Size(), nil)
			src.Close()
			dst.Close()
		}
	}
}
