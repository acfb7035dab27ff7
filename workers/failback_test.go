package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/diskimage"
	"github.com/replicator/replicator/internal/exclude"
	"github.com/replicator/replicator/internal/provider/lab"
	"github.com/replicator/replicator/internal/replica/replicatest"
	"github.com/replicator/replicator/internal/vhdx"
)

// compareVMs compares the disks of two lab VMs byte for byte, outside the
// ranges replication excludes on the first (swap, which the replica never had).
func compareVMs(t *testing.T, a, b *lab.Host, vmA, vmB string) {
	t.Helper()
	ctx := context.Background()
	va, err := a.ReplicaVM(ctx, vmA)
	if err != nil {
		t.Fatal(err)
	}
	vb, err := b.ReplicaVM(ctx, vmB)
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range va.Disks {
		ia, err := diskimage.Open(d.Path)
		if err != nil {
			t.Fatal(err)
		}
		ib, err := diskimage.Open(vb.Disks[i].Path)
		if err != nil {
			t.Fatal(err)
		}
		_, excluded, err := exclude.Analyze(ctx, ia, ia.Size(), ia.SectorSize(), exclude.Options{Swap: true})
		if err != nil {
			t.Fatal(err)
		}
		replicatest.RequireSameImage(t, vmA+" and "+vmB+" disk "+d.ID, ia, ib, ia.Size(), excluded)
		ia.Close()
		ib.Close()
	}
}

// Fail over, write 5% into the replica VM, fail back: the original VM's
// disks equal the replica VM's, and what travelled is what the replica VM
// wrote, not the disk. Undo returns to failover; commit to ready, and the
// next run continues incrementally with a replica equal to the source.
func TestFailbackCommitAndUndo(t *testing.T) {
	h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, false, nil)
	starter := buildStarter(t, filepath.Join(h.dir, "bin"))
	ctx := context.Background()
	src := lab.New("hv01", h.cfg.Hosts[0].Path)
	dr := lab.New("dr01", h.cfg.Agent.Host.Path)
	requireSuccess(t, h.run(contract.ReplicationInput{Job: "demo", VMs: []string{"web01"}}))

	res := runStarterBin(t, starter, h.dir, "failback", "demo", "web01", "--output", "json", "--config", h.cfgFile)
	if res.code != 1 || !strings.Contains(res.stderr, "state ready") {
		t.Fatalf("failback without failover: exit %d, %q", res.code, res.stderr)
	}
	if res = runStarterBin(t, starter, h.dir, "failover", "demo", "web01", "--output", "json", "--config", h.cfgFile); res.code != 0 {
		t.Fatalf("failover: %s", res.stderr)
	}
	if err := dr.Write(ctx, "web01_replica", 0, 5, 11); err != nil {
		t.Fatal(err)
	}
	rvm, err := dr.ReplicaVM(ctx, "web01_replica")
	if err != nil {
		t.Fatal(err)
	}
	child, err := vhdx.Open(rvm.Disks[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	var written int64
	for _, e := range child.OwnAllocated() {
		written += e.Length
	}
	size := child.Size()
	child.Close()

	res = runStarterBin(t, starter, h.dir, "failback", "demo", "web01", "--output", "json", "--config", h.cfgFile)
	if res.code != 0 {
		t.Fatalf("failback: exit %d: %s", res.code, res.stderr)
	}
	var fb contract.FailbackResult
	if err := json.Unmarshal([]byte(res.stdout), &fb); err != nil {
		t.Fatal(err)
	}
	t.Logf("failback: replica VM wrote %d bytes of %d; changed %d, written %d, sent %d", written, size, fb.BytesChanged, fb.BytesWritten, fb.BytesSent)
	if fb.Replica.State != "failback" || fb.BytesChanged != written {
		t.Fatalf("failback result %+v; the replica VM wrote %d bytes", fb, written)
	}
	// Whole 64 KiB blocks travel: a little more than written, far from the disk.
	if fb.BytesWritten < written || fb.BytesWritten > written+written/2 || fb.BytesSent > written+written/2 {
		t.Fatalf("failback moved %d bytes (%d on the wire) for %d written in failover", fb.BytesWritten, fb.BytesSent, written)
	}
	compareVMs(t, src, dr, "web01", "web01_replica")
	if vm, _ := src.ReplicaVM(ctx, "web01"); vm.State != "running" {
		t.Fatalf("original VM after failback: %+v", vm)
	}
	if vm, _ := dr.ReplicaVM(ctx, "web01_replica"); vm.State != "off" {
		t.Fatalf("replica VM after failback: %+v", vm)
	}
	for _, args := range [][]string{{"failback", "demo", "web01"}, {"failover", "undo", "demo", "web01"}, {"failover", "demo", "web01"}} {
		before := rowOf(t, h.replicaList(t, starter), "web01")
		r := runStarterBin(t, starter, h.dir, append(args, "--config", h.cfgFile)...)
		if r.code != 1 || !strings.Contains(r.stderr, "state failback") {
			t.Fatalf("%v in failback: exit %d, %q", args, r.code, r.stderr)
		}
		if after := rowOf(t, h.replicaList(t, starter), "web01"); after != before {
			t.Fatalf("refused %v changed the replica: %+v, was %+v", args, after, before)
		}
	}

	// Undo: back to failover, the original off, the replica VM running.
	if res = runStarterBin(t, starter, h.dir, "failback", "undo", "demo", "web01", "--output", "json", "--config", h.cfgFile); res.code != 0 {
		t.Fatalf("failback undo: %s", res.stderr)
	}
	if row := rowOf(t, h.replicaList(t, starter), "web01"); row.State != "failover" {
		t.Fatalf("after failback undo: %+v", row)
	}
	if vm, _ := dr.ReplicaVM(ctx, "web01_replica"); vm.State != "running" {
		t.Fatalf("replica VM after failback undo: %+v", vm)
	}
	if vm, _ := src.ReplicaVM(ctx, "web01"); vm.State != "off" {
		t.Fatalf("original VM after failback undo: %+v", vm)
	}
	// Fail back again (the replica VM wrote more meanwhile), then commit.
	if err := dr.Write(ctx, "web01_replica", 0, 1, 12); err != nil {
		t.Fatal(err)
	}
	if res = runStarterBin(t, starter, h.dir, "failback", "demo", "web01", "--output", "json", "--config", h.cfgFile); res.code != 0 {
		t.Fatalf("second failback: %s", res.stderr)
	}
	compareVMs(t, src, dr, "web01", "web01_replica")
	if res = runStarterBin(t, starter, h.dir, "failback", "commit", "demo", "web01", "--output", "json", "--config", h.cfgFile); res.code != 0 {
		t.Fatalf("failback commit: %s", res.stderr)
	}
	if row := rowOf(t, h.replicaList(t, starter), "web01"); row.State != "ready" {
		t.Fatalf("after commit: %+v", row)
	}
	// Replication resumes incrementally from the failed-back VM.
	if err := src.Write(ctx, "web01", 0, 1, 13); err != nil {
		t.Fatal(err)
	}
	next := h.run(contract.ReplicationInput{Job: "demo", VMs: []string{"web01"}})
	requireSuccess(t, next)
	if d := next.VMs[0].Disks[0]; d.ChangeTracking == contract.TrackingFull || d.BytesRead > 64<<20 {
		t.Fatalf("run after failback commit: %+v", d)
	}
	h.checkReplicaMatchesSource(next)
}

// Failback to a new VM on another host: the VM is made with the replica
// VM's disks and hardware and receives everything they hold; the original
// VM is not touched.
func TestFailbackToANewVMOnAnotherHost(t *testing.T) {
	h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, false, func(c *config.Config) {
		c.Hosts = append(c.Hosts, config.Host{Name: "hv02", Provider: "lab", Path: filepath.Join(filepath.Dir(c.Hosts[0].Path), "lab2")})
	})
	starter := buildStarter(t, filepath.Join(h.dir, "bin"))
	ctx := context.Background()
	src := lab.New("hv01", h.cfg.Hosts[0].Path)
	other := lab.New("hv02", h.cfg.Hosts[1].Path)
	dr := lab.New("dr01", h.cfg.Agent.Host.Path)
	requireSuccess(t, h.run(contract.ReplicationInput{Job: "demo", VMs: []string{"db01"}}))
	if res := runStarterBin(t, starter, h.dir, "failover", "demo", "db01", "--output", "json", "--config", h.cfgFile); res.code != 0 {
		t.Fatalf("failover: %s", res.stderr)
	}
	if err := dr.Write(ctx, "db01_replica", 1, 5, 3); err != nil {
		t.Fatal(err)
	}
	before, err := src.ReplicaVM(ctx, "db01")
	if err != nil {
		t.Fatal(err)
	}
	res := runStarterBin(t, starter, h.dir, "failback", "demo", "db01", "--to-host", "hv02", "--as", "db01-dr", "--output", "json", "--config", h.cfgFile)
	if res.code != 0 {
		t.Fatalf("failback --to-host: exit %d: %s", res.code, res.stderr)
	}
	var fb contract.FailbackResult
	if err := json.Unmarshal([]byte(res.stdout), &fb); err != nil {
		t.Fatal(err)
	}
	if fb.ToHost != "hv02" || fb.ToVM != "db01-dr" || fb.Replica.State != "failback" {
		t.Fatalf("failback result %+v", fb)
	}
	nvm, err := other.ReplicaVM(ctx, "db01-dr")
	if err != nil || nvm.State != "running" || len(nvm.Disks) != 2 {
		t.Fatalf("new VM %+v, %v", nvm, err)
	}
	rvm, err := dr.ReplicaVM(ctx, "db01_replica")
	if err != nil {
		t.Fatal(err)
	}
	for i := range nvm.Disks {
		a, err := diskimage.Open(rvm.Disks[i].Path)
		if err != nil {
			t.Fatal(err)
		}
		b, err := diskimage.Open(nvm.Disks[i].Path)
		if err != nil {
			t.Fatal(err)
		}
		replicatest.RequireSameImage(t, "new VM disk "+nvm.Disks[i].ID, a, b, a.Size(), nil)
		a.Close()
		b.Close()
	}
	if after, _ := src.ReplicaVM(ctx, "db01"); after.State != before.State {
		t.Fatalf("the original VM changed state: %s, was %s", after.State, before.State)
	}
	res = runStarterBin(t, starter, h.dir, "failback", "demo", "db01", "--to-host", "hv02", "--output", "json", "--config", h.cfgFile)
	if res.code != 1 || !strings.Contains(res.stderr, "needs both toHost and as") {
		t.Fatalf("--to-host without --as: exit %d, %q", res.code, res.stderr)
	}
}

// Failing back from an older point also sends the blocks of the points
// newer than it (the source holds the newest): the original VM then equals
// the replica VM, not the newest point.
func TestFailbackFromAnOlderPoint(t *testing.T) {
	h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, false, nil)
	starter := buildStarter(t, filepath.Join(h.dir, "bin"))
	ctx := context.Background()
	src := lab.New("hv01", h.cfg.Hosts[0].Path)
	dr := lab.New("dr01", h.cfg.Agent.Host.Path)
	first := h.run(contract.ReplicationInput{Job: "demo", VMs: []string{"web01"}})
	requireSuccess(t, first)
	if err := src.Write(ctx, "web01", 0, 4, 31); err != nil {
		t.Fatal(err)
	}
	requireSuccess(t, h.run(contract.ReplicationInput{Job: "demo", VMs: []string{"web01"}}))
	if res := runStarterBin(t, starter, h.dir, "failover", "demo", "web01", "--point", first.VMs[0].RestorePoint, "--output", "json", "--config", h.cfgFile); res.code != 0 {
		t.Fatalf("failover: %s", res.stderr)
	}
	if err := dr.Write(ctx, "web01_replica", 0, 2, 32); err != nil {
		t.Fatal(err)
	}
	res := runStarterBin(t, starter, h.dir, "failback", "demo", "web01", "--output", "json", "--config", h.cfgFile)
	if res.code != 0 {
		t.Fatalf("failback: %s", res.stderr)
	}
	compareVMs(t, src, dr, "web01", "web01_replica")
}
