package lab

import (
	"context"
	"strings"
	"testing"
)

func TestVMConfigKeptWithTheVM(t *testing.T) {
	dir := t.TempDir()
	vm, err := CreateVMWith(dir, "app01", []int64{4 << 20, 8 << 20}, Hardware{Processors: 4, MemoryBytes: 8 << 30, Switches: []string{"LAN", "Backup"}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := New("hv", dir).VMConfig(context.Background(), vm.ID)
	if err != nil {
		t.Fatal(err)
	}
	if c.Generation != 2 || c.Processors != 4 || c.MemoryBytes != 8<<30 || !c.SecureBoot {
		t.Fatalf("config %+v", c)
	}
	if len(c.NetworkAdapters) != 2 || c.NetworkAdapters[0].Switch != "LAN" || c.NetworkAdapters[1].Switch != "Backup" {
		t.Fatalf("adapters %+v", c.NetworkAdapters)
	}
	for _, n := range c.NetworkAdapters {
		if len(n.MAC) != 12 || !strings.HasPrefix(n.MAC, "00155D") {
			t.Fatalf("MAC %q", n.MAC)
		}
	}
	if len(c.Disks) != 2 || c.Disks[1].ID != "1" || c.Disks[1].Controller != "scsi" || c.Disks[1].Location != 1 {
		t.Fatalf("disks %+v", c.Disks)
	}
}

func TestCreateVMWithRefusesBadHardware(t *testing.T) {
	for _, hw := range []Hardware{{Processors: -1}, {MemoryBytes: 1 << 20}, {MemoryBytes: 3<<20 + 1}, {Switches: []string{""}}} {
		if _, err := CreateVMWith(t.TempDir(), "x", []int64{1 << 20}, hw); err == nil {
			t.Errorf("%+v accepted", hw)
		}
	}
}
