package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/provider"
	"github.com/replicator/replicator/internal/provider/lab"
	"github.com/replicator/replicator/internal/replica"
)

// A failover plan of three VMs starts them in the plan's order with its
// delays; the replica VMs carry the job's network mapping and re-IP rules;
// undoing the plan returns all three to ready.
func TestFailoverPlanInOrderAndUndo(t *testing.T) {
	const delay = 2 * time.Second
	h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, false, func(c *config.Config) {
		c.Jobs[0].NetworkMapping = map[string]string{"lan": "DR-LAN"}
		c.Jobs[0].ReIP = []config.ReIP{{Source: "10.0.0.0/24", Target: "10.9.0.0/24", Gateway: "10.9.0.1", DNS: []string{"10.9.0.53"}}}
		c.FailoverPlans = []config.FailoverPlan{{Name: "tier", VMs: []config.PlanVM{
			{VM: "db01", Job: "demo", Delay: delay},
			{VM: "app01", Job: "demo", Delay: delay},
			{VM: "web01", Job: "demo"},
		}}}
	})
	ctx := context.Background()
	if _, err := lab.CreateVMWith(h.cfg.Hosts[0].Path, "app01", []int64{16 << 20}, lab.Hardware{Processors: 4, MemoryBytes: 4 << 30, Switches: []string{"LAN", "Storage"}}); err != nil {
		t.Fatal(err)
	}
	if err := lab.New("hv01", h.cfg.Hosts[0].Path).Write(ctx, "app01", 0, 20, 5); err != nil {
		t.Fatal(err)
	}
	requireSuccess(t, h.run(contract.ReplicationInput{Job: "demo"}))
	starter := buildStarter(t, filepath.Join(h.dir, "bin"))

	res := runStarterBin(t, starter, h.dir, "failover", "plan", "tier", "--output", "json", "--config", h.cfgFile)
	if res.code != 0 {
		t.Fatalf("failover plan: exit %d: %s\n%s", res.code, res.stderr, res.stdout)
	}
	var plan contract.FailoverPlanResult
	if err := json.Unmarshal([]byte(res.stdout), &plan); err != nil {
		t.Fatal(err)
	}
	if plan.Status != contract.StatusSuccess || len(plan.VMs) != 3 {
		t.Fatalf("plan result %+v", plan)
	}
	// In order, each after the previous one's delay: the replicas' own
	// records of when they entered failover say so.
	store, err := replica.Open(h.cfg.Agent.Datastore)
	if err != nil {
		t.Fatal(err)
	}
	var since []time.Time
	for i, want := range []string{"db01", "app01", "web01"} {
		if plan.VMs[i].VM != want || plan.VMs[i].Status != contract.StatusSuccess || plan.VMs[i].Replica.VMState != "running" {
			t.Fatalf("plan VM %d: %+v", i, plan.VMs[i])
		}
		r, err := store.Find("demo", want)
		if err != nil {
			t.Fatal(err)
		}
		l, err := r.Lifecycle()
		if err != nil || l.State != replica.StateFailover {
			t.Fatalf("%s: %+v %v", want, l, err)
		}
		since = append(since, l.Since)
	}
	for i := 1; i < len(since); i++ {
		if gap := since[i].Sub(since[i-1]); gap < delay {
			t.Fatalf("VM %d entered failover %s after VM %d; the plan's delay is %s", i, gap, i-1, delay)
		}
	}

	// The replica VM has the source's hardware, with the network mapping
	// applied and the re-IP rules recorded.
	dr := lab.New("dr01", h.cfg.Agent.Host.Path)
	rvm, err := dr.ReplicaVM(ctx, "app01_replica")
	if err != nil {
		t.Fatal(err)
	}
	c, err := dr.VMConfig(ctx, rvm.ID)
	if err != nil {
		t.Fatal(err)
	}
	src, err := lab.New("hv01", h.cfg.Hosts[0].Path).VMConfig(ctx, "app01")
	if err != nil {
		t.Fatal(err)
	}
	if c.Processors != 4 || c.MemoryBytes != 4<<30 || len(c.NetworkAdapters) != 2 {
		t.Fatalf("replica VM hardware %+v", c)
	}
	wantNICs := []provider.NetworkAdapter{src.NetworkAdapters[0], src.NetworkAdapters[1]}
	wantNICs[0].Switch = "DR-LAN"
	if c.NetworkAdapters[0] != wantNICs[0] || c.NetworkAdapters[1] != wantNICs[1] {
		t.Fatalf("adapters %+v, want %+v (LAN mapped, Storage kept, MACs of the source)", c.NetworkAdapters, wantNICs)
	}
	if len(c.ReIP) != 1 || c.ReIP[0].Target != "10.9.0.0/24" || c.ReIP[0].Gateway != "10.9.0.1" {
		t.Fatalf("re-IP rules %+v", c.ReIP)
	}

	// Undo as a group: all three ready, their VMs off.
	res = runStarterBin(t, starter, h.dir, "failover", "plan", "undo", "tier", "--output", "json", "--config", h.cfgFile)
	if res.code != 0 {
		t.Fatalf("failover plan undo: exit %d: %s\n%s", res.code, res.stderr, res.stdout)
	}
	for _, row := range h.replicaList(t, starter) {
		if row.State != "ready" {
			t.Fatalf("after plan undo: %+v", row)
		}
		vm, err := dr.ReplicaVM(ctx, row.ReplicaVM)
		if err != nil || vm.State != "off" {
			t.Fatalf("replica VM %s after undo: %+v %v", row.ReplicaVM, vm, err)
		}
	}
	// A second undo changes nothing and says each VM was not in failover.
	res = runStarterBin(t, starter, h.dir, "failover", "plan", "undo", "tier", "--output", "json", "--config", h.cfgFile)
	if err := json.Unmarshal([]byte(res.stdout), &plan); err != nil {
		t.Fatalf("second undo: %v\n%s", err, res.stderr)
	}
	for _, v := range plan.VMs {
		if v.Status != "skipped" {
			t.Fatalf("second undo of %s: %+v", v.VM, v)
		}
	}
}
