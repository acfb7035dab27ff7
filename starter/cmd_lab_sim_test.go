package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/replicator/replicator/internal/provider"
	"github.com/replicator/replicator/internal/provider/hyperv"
	"github.com/replicator/replicator/internal/provider/hyperv/hvsim"
)

// `starter lab` manages a simulated Hyper-V host picked with --host, and
// `ls --json` lists what the host holds: checkpoints and reference points,
// including those of jobs that ended since anyone looked.
func TestLabOnSimulatedHost(t *testing.T) {
	dir := t.TempDir()
	simDir := filepath.Join(dir, "hvsim")
	cfg := filepath.Join(dir, "replicator.yaml")
	yaml := "temporal: {address: 127.0.0.1:7233}\nhosts:\n" +
		"  - {name: lab1, provider: lab, path: " + filepath.Join(dir, "lab") + "}\n" +
		"  - {name: sim1, provider: hyperv-sim, path: " + simDir + ", simulator: {jobDelay: 200ms}}\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := runStarter(t, "lab", "create", "db01", "--disk", "8MiB", "--config", cfg, "--host", "sim1"); err != nil {
		t.Fatalf("lab create: %v\n%s", err, out)
	}
	if out, err := runStarter(t, "lab", "write", "db01", "--percent", "5", "--seed", "3", "--config", cfg, "--host", "sim1"); err != nil {
		t.Fatalf("lab write: %v\n%s", err, out)
	}
	list := func() []labVM {
		out, err := runStarter(t, "lab", "ls", "--json", "--config", cfg, "--host", "sim1")
		if err != nil {
			t.Fatalf("lab ls: %v\n%s", err, out)
		}
		var vms []labVM
		if err := json.Unmarshal([]byte(out), &vms); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		return vms
	}
	vms := list()
	if len(vms) != 1 || vms[0].Name != "db01" || vms[0].State != "running" || len(vms[0].Checkpoints) != 0 || len(vms[0].ReferencePoints) != 0 {
		t.Fatalf("lab ls: %+v", vms)
	}
	ctx := context.Background()
	p, err := hvsim.NewProvider("sim1", simDir, hvsim.Options{JobDelay: 200 * time.Millisecond}, hyperv.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	name := provider.CheckpointName("nightly", "db01")
	cp, err := p.CreateCheckpoint(ctx, vms[0].ID, provider.CheckpointOptions{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	vms = list()
	if len(vms[0].Checkpoints) != 1 || vms[0].Checkpoints[0].Name != name || vms[0].Checkpoints[0].ID != cp.ID {
		t.Fatalf("lab ls during a checkpoint: %+v", vms[0])
	}
	if _, err := p.ConvertToReferencePoint(ctx, vms[0].ID, cp.ID, ""); err != nil {
		t.Fatal(err)
	}
	vms = list()
	if len(vms[0].Checkpoints) != 0 || len(vms[0].ReferencePoints) != 1 || vms[0].ReferencePoints[0].Name != name {
		t.Fatalf("lab ls after the conversion: %+v", vms[0])
	}
	if out, err := runStarter(t, "lab", "ls", "--config", cfg, "--host", "nope"); err == nil {
		t.Fatalf("an unknown host was accepted:\n%s", out)
	}
}
