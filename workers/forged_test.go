package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/replicator/replicator/activities"
	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/provider/lab"
	"github.com/replicator/replicator/internal/replica"
)

// TestForgedSettingsRefused starts VMReplicationWorkflow and continued
// ReplicationWorkflows through a real Temporal server with settings no
// configuration holds: retention 1, a 512-byte block size over a huge disk,
// a VM outside the job. Each is refused with an error naming what, and the
// replica's restore points stay as they were. Another target address is
// never dialled: the proxy sends where its own configuration says.
func TestForgedSettingsRefused(t *testing.T) {
	clearReplicatorEnv(t)
	h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, false, func(c *config.Config) {
		c.Jobs[0].VMs = []string{"web01"} // db01 is outside the job
	})
	first := h.run(contract.ReplicationInput{Job: "demo"})
	if first.Status != contract.StatusSuccess || len(first.VMs) != 1 {
		t.Fatalf("the first run: %+v", first)
	}
	ctx := context.Background()
	// runVM runs VMReplicationWorkflow with a forged input; it must end with
	// a result, not hang or fail its task.
	runVM := func(t *testing.T, id string, in contract.VMInput) contract.VMResult {
		t.Helper()
		run, err := h.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: h.cfg.Temporal.TaskQueue},
			contract.VMReplicationWorkflow, in)
		if err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		var res contract.VMResult
		if err := run.Get(wctx, &res); err != nil {
			t.Fatalf("run %s did not end with a result: %v", id, err)
		}
		return res
	}
	vms, err := lab.New("hv01", h.cfg.Hosts[0].Path).VMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]contract.VM{}
	for _, vm := range vms {
		c := contract.VM{ID: vm.ID, Name: vm.Name, Generation: vm.Generation}
		for _, d := range vm.Disks {
			c.Disks = append(c.Disks, contract.Disk{ID: d.ID, VirtualSize: d.VirtualSize, SectorSize: 512})
		}
		byName[vm.Name] = c
	}
	web, db := byName["web01"], byName["db01"]
	cfg, err := config.Load(config.LoadOptions{File: h.cfgFile, DataDir: h.dir})
	if err != nil {
		t.Fatal(err)
	}
	job, _ := cfg.Job("demo")
	spec := activities.Spec(cfg, job)
	store, err := replica.Open(h.cfg.Agent.Datastore)
	if err != nil {
		t.Fatal(err)
	}
	points := func() []string {
		r, err := store.Replica("demo", web.ID)
		if err != nil {
			t.Fatal(err)
		}
		ps, err := r.Points()
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, p := range ps {
			ids = append(ids, p.ID)
		}
		return ids
	}
	before := points()

	huge := web
	huge.Disks = []contract.Disk{{ID: web.Disks[0].ID, VirtualSize: 1 << 50, SectorSize: 512}}
	cases := []struct {
		name string
		edit func(s *contract.JobSpec)
		vm   contract.VM
		want []string
	}{
		{"retention 1", func(s *contract.JobSpec) { s.Retention = 1 }, web,
			[]string{"retention 1 (configured 7)"}},
		{"block size 512", func(s *contract.JobSpec) { s.BlockSize = 512 }, web,
			[]string{"block size 512 in the input, 1048576 configured"}},
		{"block size 512 and a 1 PiB disk", func(s *contract.JobSpec) { s.BlockSize = 512 }, huge,
			[]string{"size 1125899906842624 outside (0, 64 TiB]"}},
		{"VM outside the job", func(s *contract.JobSpec) {}, db,
			[]string{`VM "db01"`, `is not one of job "demo"'s VMs [web01]`}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := spec
			c.edit(&s)
			res := runVM(t, fmt.Sprintf("forged-vm-%d-%d", i, time.Now().UnixNano()), contract.VMInput{Job: s, VM: c.vm})
			if res.Status != contract.StatusFailed {
				t.Fatalf("forged run ended %s: %+v", res.Status, res)
			}
			requireAll(t, "the forged run's error", res.Error, c.want...)
			if got := points(); !slices.Equal(got, before) {
				t.Fatalf("restore points %v after the forged run, were %v", got, before)
			}
			if _, err := os.Stat(filepath.Join(h.cfg.Agent.Datastore, "demo", db.ID)); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("a replica folder for %s, outside the job, exists after the forged run (%v)", db.Name, err)
			}
		})
	}
	t.Run("continued run with forged settings", func(t *testing.T) {
		forged := spec
		forged.TargetAddress, forged.Retention = "127.0.0.1:1", 1
		carried := contract.ReplicationResult{Job: "demo", Status: contract.StatusRunning, RunID: "first", VMs: []contract.VMResult{
			{Name: web.Name, ID: web.ID, Status: contract.StatusPending, Disks: []contract.DiskResult{{ID: web.Disks[0].ID, Status: contract.StatusPending}}}}}
		id := fmt.Sprintf("forged-continued-%d", time.Now().UnixNano())
		run, err := h.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: h.cfg.Temporal.TaskQueue},
			contract.ReplicationWorkflow, contract.ReplicationInput{Job: "demo", Continued: &contract.RunContinuation{
				Spec: forged, Pending: []contract.VM{web}, Result: carried}})
		if err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		var res contract.ReplicationResult
		err = run.Get(wctx, &res)
		text := ""
		if err != nil {
			text = err.Error()
		}
		out, _ := json.Marshal(res)
		text += string(out)
		requireAll(t, "the forged continuation", text, `input continued.spec differs from the configuration of job "demo" in [targetAddress retention]`)
		if got := points(); !slices.Equal(got, before) {
			t.Fatalf("restore points %v after the forged continuation, were %v", got, before)
		}
	})
	// Where the proxy reaches the agent is its own configuration's business
	// (targets[] are as seen from the proxy): a run that carries another
	// address (where nothing listens) still sends to the configured agent.
	t.Run("another target address", func(t *testing.T) {
		s := spec
		s.TargetAddress = "127.0.0.1:1"
		res := runVM(t, fmt.Sprintf("forged-address-%d", time.Now().UnixNano()), contract.VMInput{Job: s, VM: web})
		if res.Status != contract.StatusSuccess {
			t.Fatalf("a run carrying another target address ended %s (the proxy dialled it?): %+v", res.Status, res)
		}
		if got := points(); len(got) != len(before)+1 {
			t.Fatalf("restore points %v after the run, were %v: want one more, at the configured agent", got, before)
		}
	})
}
