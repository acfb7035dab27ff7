package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/replicator/replicator/internal/provider/hyperv"
	"github.com/replicator/replicator/internal/provider/lab"
)

// `hyperv capture` over the simulator: the recording holds the answers the
// provider relies on, and the host is left as it was.
func TestHypervCaptureSimulatedHost(t *testing.T) {
	dir := t.TempDir()
	simDir := filepath.Join(dir, "hvsim")
	cfg := filepath.Join(dir, "replicator.yaml")
	if err := os.WriteFile(cfg, []byte("temporal: {address: 127.0.0.1:7233}\nhosts:\n  - {name: sim1, provider: hyperv-sim, path: "+simDir+"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	vm, err := lab.CreateVM(simDir, "web01", []int64{8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "web01.json")
	text, err := runStarter(t, "hyperv", "capture", "--host", "sim1", "--vm", "web01", "--out", out, "--config", cfg)
	if err != nil {
		t.Fatalf("capture: %v\n%s", err, text)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rec hyperv.Recording
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Host != "HVSIM" || rec.IDs["web01"] != vm.ID || rec.IDs["snapshot"] == "" || rec.IDs["referencePoint"] == "" {
		t.Fatalf("recording ids %+v host %q", rec.IDs, rec.Host)
	}
	calls := map[string]int{}
	var failed *hyperv.Invocation
	for i, inv := range rec.Invocations {
		calls[inv.Method]++
		if inv.Method == "DestroySnapshot" && inv.Result.ReturnValue != 0 && inv.Result.ReturnValue != 4096 {
			failed = &rec.Invocations[i]
		}
	}
	for _, m := range []string{"CreateSnapshot", "ModifySystemSettings", "ConvertToReferencePoint", "GetVirtualDiskChanges", "GetVirtualHardDiskSettingData", "DestroySnapshot", "DestroyReferencePoint"} {
		if calls[m] == 0 {
			t.Errorf("no %s recorded: %v", m, calls)
		}
	}
	if failed == nil || failed.Result.ReturnValue != 4 {
		t.Errorf("the failing call: %+v, want DestroySnapshot answering 4 (invalid parameter)", failed)
	}
	if len(rec.VHDSettings) == 0 || len(rec.Queries) == 0 {
		t.Errorf("no disk settings or queries recorded")
	}
	if len(rec.Errors) != 1 || !strings.Contains(rec.Errors[0], "expected to fail") {
		t.Errorf("errors %v, want only the expected failure", rec.Errors)
	}
	h := lab.New("sim1", simDir)
	cps, _ := h.Checkpoints(context.Background(), vm.ID)
	rps, _ := h.ReferencePoints(context.Background(), vm.ID)
	if len(cps) != 0 || len(rps) != 0 {
		t.Fatalf("capture left %d checkpoints and %d reference points", len(cps), len(rps))
	}
}
