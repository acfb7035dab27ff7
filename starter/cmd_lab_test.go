package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/replicator/replicator/internal/provider"
	"github.com/replicator/replicator/internal/provider/lab"
	"github.com/replicator/replicator/internal/vhdx"
)

func labList(t *testing.T, dataDir string) []labVM {
	t.Helper()
	out, err := runStarter(t, "lab", "ls", "--json", "--data-dir", dataDir)
	if err != nil {
		t.Fatalf("lab ls: %v\n%s", err, out)
	}
	var vms []labVM
	if err := json.Unmarshal([]byte(out), &vms); err != nil {
		t.Fatalf("lab ls --json: %v\n%s", err, out)
	}
	return vms
}

func readLabDisk(t *testing.T, path string) []byte {
	t.Helper()
	d, err := vhdx.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	b := make([]byte, d.Size())
	if _, err := d.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLabCreateWriteList(t *testing.T) {
	dataDir := t.TempDir()
	if vms := labList(t, dataDir); len(vms) != 0 {
		t.Fatalf("empty lab lists %+v", vms)
	}
	if out, err := runStarter(t, "lab", "create", "app01", "--disk", "8MiB", "--disk", "4MiB", "--data-dir", dataDir); err != nil {
		t.Fatalf("lab create: %v\n%s", err, out)
	}
	vms := labList(t, dataDir)
	if len(vms) != 1 || vms[0].Name != "app01" || vms[0].ID == "" || len(vms[0].Disks) != 2 ||
		vms[0].Disks[0].VirtualSize != 8<<20 || vms[0].Disks[1].VirtualSize != 4<<20 {
		t.Fatalf("lab ls after create: %+v", vms)
	}
	if dir := filepath.Join(dataDir, "lab", "app01"); filepath.Dir(vms[0].Disks[0].Path) != dir {
		t.Fatalf("disk %s is not in the --dev lab %s", vms[0].Disks[0].Path, dir)
	}
	base := vms[0].Disks[1].Path
	if out, err := runStarter(t, "lab", "write", "app01", "--disk", "1", "--percent", "25", "--seed", "9", "--data-dir", dataDir); err != nil {
		t.Fatalf("lab write: %v\n%s", err, out)
	}
	written := readLabDisk(t, base)
	if bytes.Count(written, []byte{0}) > len(written)*80/100 {
		t.Fatal("lab write --percent 25 left more than 80% of the disk zero")
	}

	// During a checkpoint, ls shows the child and writes go there.
	h := lab.New("hv01", filepath.Join(dataDir, "lab"))
	cp, err := h.CreateCheckpoint(context.Background(), vms[0].ID, provider.CheckpointOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vms = labList(t, dataDir)
	child := vms[0].Disks[1].Path
	if child != filepath.Join(dataDir, "lab", "app01", "disk1_"+cp.ID+".avhdx") {
		t.Fatalf("during a checkpoint ls shows %s", child)
	}
	if out, err := runStarter(t, "lab", "write", "app01", "--disk", "1", "--percent", "25", "--seed", "10", "--data-dir", dataDir); err != nil {
		t.Fatalf("lab write: %v\n%s", err, out)
	}
	if !bytes.Equal(readLabDisk(t, base), written) {
		t.Fatal("a write during the checkpoint changed the frozen disk")
	}
	if bytes.Equal(readLabDisk(t, child), written) {
		t.Fatal("a write during the checkpoint did not reach the child")
	}
}

func TestLabErrors(t *testing.T) {
	dataDir := t.TempDir()
	for _, args := range [][]string{
		{"lab", "create", "vm", "--disk", "lots"},
		{"lab", "create", "vm"},
		{"lab", "create", "../vm", "--disk", "8MiB"},
		{"lab", "write", "missing", "--percent", "5"},
		{"lab", "write", "missing"},
		{"lab", "ls", "--host", "nope"},
	} {
		out, err := runStarter(t, append(args, "--data-dir", dataDir)...)
		if err == nil {
			t.Errorf("%s: no error\n%s", strings.Join(args, " "), out)
		}
	}
	if _, err := os.Stat(filepath.Join(dataDir, "vm")); !os.IsNotExist(err) {
		t.Errorf("a failed create left %s: %v", filepath.Join(dataDir, "vm"), err)
	}
	out, err := runStarter(t, "lab", "write", "missing", "--percent", "5", "--data-dir", dataDir)
	if err == nil || !strings.Contains(err.Error(), `"missing"`) {
		t.Errorf("write to a missing VM: %v\n%s", err, out)
	}
}

func TestLabHostFromConfig(t *testing.T) {
	dir := t.TempDir()
	labA, labB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	cfg := filepath.Join(dir, "replicator.yaml")
	yaml := "temporal: {address: 127.0.0.1:7233}\n" +
		"hosts:\n" +
		"  - {name: hv00, provider: hyperv, path: hv00.example.internal}\n" +
		"  - {name: labA, provider: lab, path: " + labA + "}\n" +
		"  - {name: labB, provider: lab, path: " + labB + "}\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runStarter(t, "lab", "create", "one", "--disk", "2MiB", "--config", cfg); err != nil {
		t.Fatalf("lab create: %v\n%s", err, out)
	}
	if out, err := runStarter(t, "lab", "create", "two", "--disk", "2MiB", "--config", cfg, "--host", "labB"); err != nil {
		t.Fatalf("lab create --host labB: %v\n%s", err, out)
	}
	for lab, name := range map[string]string{labA: "one", labB: "two"} {
		if _, err := os.Stat(filepath.Join(lab, name, "vm.json")); err != nil {
			t.Errorf("VM %s not in %s: %v", name, lab, err)
		}
	}
	if _, err := runStarter(t, "lab", "ls", "--config", cfg, "--host", "hv00"); err == nil || !strings.Contains(err.Error(), "hyperv") {
		t.Errorf("lab ls on a hyperv host: %v", err)
	}
}
