package lab

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/replicator/replicator/internal/testkit"
	"github.com/replicator/replicator/internal/vhdx"
)

// sfdiskDump is the JSON of `sfdisk --json`.
type sfdiskDump struct {
	PartitionTable struct {
		Label      string `json:"label"`
		ID         string `json:"id"`
		FirstLBA   int64  `json:"firstlba"`
		LastLBA    int64  `json:"lastlba"`
		Partitions []struct {
			Start int64  `json:"start"`
			Size  int64  `json:"size"`
			Type  string `json:"type"`
			UUID  string `json:"uuid"`
			Name  string `json:"name"`
		} `json:"partitions"`
	} `json:"partitiontable"`
}

func rawCopy(t *testing.T, vhdxPath string) string {
	t.Helper()
	raw := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(raw, readVHDX(t, vhdxPath), 0o644); err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestSeedMakesPartitionedDemoVMs(t *testing.T) {
	sfdisk := testkit.RequireTool(t, "sfdisk")
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "lab")
	if err := Seed(ctx, dir); err != nil {
		t.Fatal(err)
	}
	h := New("hv01", dir)
	vms, err := h.VMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(vms) != 2 || vms[0].Name != "db01" || vms[1].Name != "web01" || len(vms[0].Disks) != 2 || len(vms[1].Disks) != 1 {
		t.Fatalf("seeded VMs: %+v", vms)
	}
	if vms[0].Disks[0].VirtualSize != 256<<20 || vms[0].Disks[1].VirtualSize != 128<<20 || vms[1].Disks[0].VirtualSize != 256<<20 {
		t.Fatalf("disk sizes: %+v %+v", vms[0].Disks, vms[1].Disks)
	}

	raw := rawCopy(t, vms[1].Disks[0].Path)
	out, err := exec.Command(sfdisk, "--json", raw).Output()
	if err != nil {
		t.Fatalf("sfdisk --json: %v\n%s", err, out)
	}
	var dump sfdiskDump
	if err := json.Unmarshal(out, &dump); err != nil {
		t.Fatalf("sfdisk output: %v\n%s", err, out)
	}
	pt := dump.PartitionTable
	if pt.Label != "gpt" || len(pt.Partitions) != 2 {
		t.Fatalf("partition table: %s", out)
	}
	data, swap := pt.Partitions[0], pt.Partitions[1]
	if data.Type != gptTypeLinuxData || swap.Type != gptTypeLinuxSwap || data.Start != 2048 || swap.Start != data.Start+data.Size {
		t.Fatalf("partitions: %s", out)
	}
	if swap.Start+swap.Size-1 > pt.LastLBA {
		t.Fatalf("swap ends past the last usable LBA: %s", out)
	}
	// sfdisk -d reads the table without complaint (it checks the CRCs of
	// the primary and the backup) and dumps what it read.
	cmd := exec.Command(sfdisk, "-d", raw)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	dumpText, err := cmd.Output()
	if err != nil || stderr.Len() != 0 {
		t.Fatalf("sfdisk -d: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(string(dumpText), "label: gpt") || !strings.Contains(string(dumpText), "type="+gptTypeLinuxSwap) {
		t.Fatalf("sfdisk -d:\n%s", dumpText)
	}

	disk := readVHDX(t, vms[1].Disks[0].Path)
	page := disk[swap.Start*512 : swap.Start*512+4096]
	if string(page[4096-10:]) != "SWAPSPACE2" || binary.LittleEndian.Uint32(page[1024:]) != 1 ||
		int64(binary.LittleEndian.Uint32(page[1028:])) != swap.Size*512/4096-1 {
		t.Fatalf("swap header: version %d, last page %d, magic %q", binary.LittleEndian.Uint32(page[1024:]), binary.LittleEndian.Uint32(page[1028:]), page[4096-10:])
	}

	// Varied data: never-written, zero, text, random and repeated regions.
	d, err := vhdx.Open(vms[1].Disks[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	alloc := d.Allocated()
	d.Close()
	var allocated int64
	for _, e := range alloc {
		allocated += e.Length
	}
	if allocated == 0 || allocated > 256<<20/2 {
		t.Fatalf("allocated %d bytes of 256 MiB: want data with never-written regions", allocated)
	}
	kinds := map[string]int{}
	for _, e := range alloc {
		for off := e.Offset; off < e.End(); off += 1 << 20 {
			kinds[classify(disk[off:off+1<<20])]++
		}
	}
	for _, k := range []string{"zero", "text", "random", "repeated"} {
		if kinds[k] == 0 {
			t.Errorf("no allocated 1 MiB block of %s data on the seeded disk (%v)", k, kinds)
		}
	}

	// Seeding again keeps the VMs as they are.
	if err := h.Write(ctx, "web01", 0, 1, 5); err != nil {
		t.Fatal(err)
	}
	before := readVHDX(t, vms[1].Disks[0].Path)
	if err := Seed(ctx, dir); err != nil {
		t.Fatal(err)
	}
	again, _ := h.VMs(ctx)
	if again[1].ID != vms[1].ID || !bytes.Equal(readVHDX(t, again[1].Disks[0].Path), before) {
		t.Fatal("a second seed changed an existing VM")
	}
}

// classify names the kind of data of a region.
func classify(b []byte) string {
	if bytes.Count(b, []byte{0}) == len(b) {
		return "zero"
	}
	printable := 0
	for _, c := range b {
		if c == '\n' || (c >= 32 && c < 127) {
			printable++
		}
	}
	if printable == len(b) {
		return "text"
	}
	if bytes.Equal(b[512+16:1024], b[1024+16:1536]) {
		return "repeated"
	}
	var seen [256]bool
	distinct := 0
	for _, c := range b[:4096] {
		if !seen[c] {
			seen[c] = true
			distinct++
		}
	}
	if distinct > 200 {
		return "random"
	}
	return "other"
}

func TestSwapHeaderMatchesMkswap(t *testing.T) {
	mkswap := testkit.RequireTool(t, "mkswap")
	const size = 8 << 20
	const uuid = "0e4b8a1c-2d3f-4a5b-8c6d-7e8f90a1b2c3"
	f := filepath.Join(t.TempDir(), "swap")
	if err := os.WriteFile(f, make([]byte, size), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkswap, "-U", uuid, "-L", "swap", f).CombinedOutput(); err != nil {
		t.Fatalf("mkswap: %v\n%s", err, out)
	}
	want, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	got, err := swapHeader(size, uuid, "swap")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want[:4096]) {
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("swap header differs from mkswap's at byte %d: %#x, mkswap %#x", i, got[i], want[i])
			}
		}
	}
}

func TestGPTRejectsBadLayouts(t *testing.T) {
	ok := gptPartition{Type: gptTypeLinuxData, ID: "11111111-2222-3333-4444-555555555555", FirstLBA: 2048, LastLBA: 4095}
	if _, err := buildGPT(4<<20, "11111111-2222-3333-4444-555555555555", []gptPartition{ok}); err != nil {
		t.Fatal(err)
	}
	past := ok
	past.LastLBA = 4 << 20 / 512
	bad := ok
	bad.Type = "not-a-guid"
	for name, p := range map[string]gptPartition{"past the end": past, "bad type": bad} {
		if _, err := buildGPT(4<<20, "11111111-2222-3333-4444-555555555555", []gptPartition{p}); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func BenchmarkSeed(b *testing.B) {
	for b.Loop() {
		if err := Seed(context.Background(), filepath.Join(b.TempDir(), "lab")); err != nil {
			b.Fatal(err)
		}
	}
}
