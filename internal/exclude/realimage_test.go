package exclude

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/replicator/replicator/internal/testkit"
)

const mib = 1 << 20

// run runs an outside tool and fails the test with its output on error.
func run(t testing.TB, stdin string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(testkit.RequireTool(t, name), args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %v: %v\n%s%s", name, args, err, out.String(), errb.String())
	}
	return out.String()
}

// sfdiskPartition is a partition as `sfdisk --json` reports it.
type sfdiskPartition struct {
	Node  string `json:"node"`
	Start int64  `json:"start"`
	Size  int64  `json:"size"`
	Type  string `json:"type"`
}

func sfdiskLayout(t *testing.T, disk, script string) (sectorSize int64, parts []sfdiskPartition) {
	t.Helper()
	run(t, script, "sfdisk", "-q", disk)
	var out struct {
		PartitionTable struct {
			SectorSize int64             `json:"sectorsize"`
			Partitions []sfdiskPartition `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal([]byte(run(t, "", "sfdisk", "--json", disk)), &out); err != nil {
		t.Fatalf("sfdisk --json: %v", err)
	}
	return out.PartitionTable.SectorSize, out.PartitionTable.Partitions
}

// randomFile writes n random bytes to a new file in dir.
func randomFile(t testing.TB, dir, name string, n int, seed int64) string {
	t.Helper()
	p := filepath.Join(dir, name)
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// ntfsFile is a file to copy into a test NTFS volume, in order.
type ntfsFile struct {
	path string // in the volume
	size int
}

// makeNTFS formats a separate file of size bytes with mkntfs and copies the
// files in with ntfscp, in order (a file copied twice is rewritten larger,
// which fragments it).
func makeNTFS(t *testing.T, dir string, size int64, files []ntfsFile) string {
	return makeNTFSTB(t, dir, size, files)
}

func makeNTFSTB(t testing.TB, dir string, size int64, files []ntfsFile) string {
	return makeNTFSWith(t, dir, size, files, "-c", "4096")
}

// makeNTFSWith is makeNTFS with mkntfs options (cluster and sector sizes).
func makeNTFSWith(t testing.TB, dir string, size int64, files []ntfsFile, mkntfsArgs ...string) string {
	t.Helper()
	vol := filepath.Join(dir, "ntfs.img")
	if err := os.WriteFile(vol, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(vol, size); err != nil {
		t.Fatal(err)
	}
	run(t, "", "mkntfs", append([]string{"-F", "-Q", "-q"}, append(mkntfsArgs, vol)...)...)
	for i, f := range files {
		src := randomFile(t, dir, fmt.Sprintf("src%d", i), f.size, int64(i+1))
		run(t, "", "ntfscp", "-f", vol, src, f.path)
	}
	return vol
}

// splice copies file src into disk at offset off.
func splice(t *testing.T, disk, src string, off int64) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(disk, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := io.Copy(io.NewOffsetWriter(out, off), in); err != nil {
		t.Fatal(err)
	}
}

func newDisk(t *testing.T, dir string, size int64) string {
	t.Helper()
	p := filepath.Join(dir, "disk.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return p
}

// makeSwap formats a separate file of size bytes with mkswap.
func makeSwap(t *testing.T, dir string, size int64, pageSize int) string {
	t.Helper()
	p := filepath.Join(dir, fmt.Sprintf("swap%d.img", pageSize))
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	run(t, "", "mkswap", "-q", "-p", strconv.Itoa(pageSize), p)
	return p
}

// clusterRun is one line of ntfscluster's or ntfsinfo's run list.
type clusterRun struct{ vcn, lcn, length int64 }

// ntfsclusterRuns parses `ntfscluster -F PATH`: the non-resident $DATA runs
// of a file (lines "VCN LCN Length" after the 0x80 line).
func ntfsclusterRuns(t *testing.T, vol, path string) []clusterRun {
	t.Helper()
	out := run(t, "", "ntfscluster", "-F", path, vol)
	var runs []clusterRun
	inData := false
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && strings.HasPrefix(f[0], "0x") {
			inData = f[0] == "0x80" && f[2] == "non-resident"
			continue
		}
		if !inData || len(f) != 3 {
			continue
		}
		var r [3]int64
		ok := true
		for i := range f {
			n, err := strconv.ParseInt(f[i], 10, 64)
			if err != nil {
				ok = false
				break
			}
			r[i] = n
		}
		if ok {
			runs = append(runs, clusterRun{r[0], r[1], r[2]})
		}
	}
	return runs
}

// ntfsinfoRuns parses the run lists `ntfsinfo -v -i N` prints for every
// non-resident attribute of MFT record N (hex VCN, LCN, length).
func ntfsinfoRuns(t *testing.T, vol string, inode int) []clusterRun {
	t.Helper()
	out := run(t, "", "ntfsinfo", "-v", "-i", strconv.Itoa(inode), vol)
	var runs []clusterRun
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "Runlist:"))
		if len(f) != 3 || !strings.HasPrefix(f[0], "0x") {
			continue
		}
		var r [3]int64
		ok := true
		for i := range f {
			n, err := strconv.ParseInt(f[i], 0, 64)
			if err != nil {
				ok = false
				break
			}
			r[i] = n
		}
		if ok && r[1] >= 0 {
			runs = append(runs, clusterRun{r[0], r[1], r[2]})
		}
	}
	return runs
}

// clusterSize parses `ntfsinfo -m`.
func clusterSize(t *testing.T, vol string) int64 {
	t.Helper()
	for _, line := range strings.Split(run(t, "", "ntfsinfo", "-m", vol), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Cluster Size:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err == nil {
				return n
			}
		}
	}
	t.Fatal("ntfsinfo -m: no cluster size")
	return 0
}

func runsToRanges(runs []clusterRun, base, cs int64, reason string) []Range {
	var out []Range
	for _, r := range runs {
		out = append(out, Range{Offset: base + r.lcn*cs, Length: r.length * cs, Reason: reason})
	}
	return out
}

func analyzeFile(t *testing.T, disk string, o Options) ([]Partition, []Range, error) {
	t.Helper()
	f, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return Analyze(context.Background(), f, st.Size(), 512, o)
}

// assertNoOverlap fails if any byte of [off, off+n) is excluded.
func assertNoOverlap(t *testing.T, rs []Range, off, n int64, what string) {
	t.Helper()
	for _, r := range rs {
		if r.Offset < off+n && off < r.End() {
			t.Errorf("%s [%d, %d) overlaps excluded range %+v", what, off, off+n, r)
		}
	}
}

// assertMetadataKept checks that no run of NTFS metadata records 0–15 nor
// the boot sectors of the volume at base lie in an excluded range.
func assertMetadataKept(t *testing.T, vol string, base, volSize int64, rs []Range) {
	t.Helper()
	cs := clusterSize(t, vol)
	for inode := 0; inode < 16; inode++ {
		runs := ntfsinfoRuns(t, vol, inode)
		if inode == 0 && len(runs) == 0 {
			t.Fatal("ntfsinfo found no runs for $MFT: the parser of its output is wrong")
		}
		for _, r := range runs {
			assertNoOverlap(t, rs, base+r.lcn*cs, r.length*cs, fmt.Sprintf("metadata record %d", inode))
		}
	}
	assertNoOverlap(t, rs, base, 512, "NTFS boot sector")
	assertNoOverlap(t, rs, base+volSize-512, 512, "NTFS backup boot sector")
}

func TestGPTSwapAndNTFSFiles(t *testing.T) {
	dir := t.TempDir()
	disk := newDisk(t, dir, 64*mib)
	ss, layout := sfdiskLayout(t, disk, "label: gpt\n"+
		"start=2048, size=16384, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F\n"+
		"start=18432, size=90112, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n")
	if len(layout) != 2 {
		t.Fatalf("sfdisk made %d partitions", len(layout))
	}
	swapOff, swapLen := layout[0].Start*ss, layout[0].Size*ss
	ntfsOff, ntfsLen := layout[1].Start*ss, layout[1].Size*ss
	splice(t, disk, makeSwap(t, dir, swapLen, 4096), swapOff)
	vol := makeNTFS(t, dir, ntfsLen, []ntfsFile{
		{"/pagefile.sys", 3 * mib},
		{"/HIBERFIL.SYS", 2 * mib},
		{"/swapfile.sys", 1 * mib},
		{"/pagefile.sys", 5 * mib},     // rewritten larger: a second run after the others
		{"/small.tmp", 100},            // resident: nothing to exclude
		{"/under-a-cluster.tmp", 2000}, // non-resident in one cluster: not worth a range
		{"/big.TMP", 300 * 1024},
		{"/keep.dat", 200 * 1024},
	})
	splice(t, disk, vol, ntfsOff)

	pageRuns := ntfsclusterRuns(t, vol, "/pagefile.sys")
	if len(pageRuns) < 2 {
		t.Fatalf("pagefile.sys has %d runs; the test wants a fragmented one", len(pageRuns))
	}
	cs := clusterSize(t, vol)
	want := []Range{{Offset: swapOff + 4096, Length: swapLen - 4096, Reason: ReasonSwap}}
	want = append(want, runsToRanges(pageRuns, ntfsOff, cs, ReasonPagefile)...)
	want = append(want, runsToRanges(ntfsclusterRuns(t, vol, "/HIBERFIL.SYS"), ntfsOff, cs, ReasonHiberfil)...)
	want = append(want, runsToRanges(ntfsclusterRuns(t, vol, "/swapfile.sys"), ntfsOff, cs, ReasonSwapfile)...)
	want = append(want, runsToRanges(ntfsclusterRuns(t, vol, "/big.TMP"), ntfsOff, cs, ReasonPath)...)
	if n := len(ntfsclusterRuns(t, vol, "/small.tmp")); n != 0 {
		t.Fatalf("small.tmp has %d runs; it should be resident", n)
	}
	if n := len(ntfsclusterRuns(t, vol, "/under-a-cluster.tmp")); n != 1 {
		t.Fatalf("under-a-cluster.tmp has %d runs; it should be non-resident in one", n)
	}
	want = Merge(want)

	parts, got, err := analyzeFile(t, disk, Options{Swap: true, Paths: []string{`C:\*.tmp`}})
	if err != nil {
		t.Fatal(err)
	}
	wantParts := []Partition{
		{Index: 1, Offset: swapOff, Length: swapLen, Type: "linux-swap", Filesystem: "swap"},
		{Index: 2, Offset: ntfsOff, Length: ntfsLen, Type: "microsoft-basic-data", Filesystem: "ntfs"},
	}
	if !reflect.DeepEqual(parts, wantParts) {
		t.Errorf("partitions:\n got %+v\nwant %+v", parts, wantParts)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("excluded:\n got %+v\nwant %+v", got, want)
	}
	assertNoOverlap(t, got, swapOff, 4096, "swap header page")
	assertNoOverlap(t, got, 0, 34*512, "GPT")
	assertNoOverlap(t, got, 64*mib-33*512, 33*512, "backup GPT")
	assertMetadataKept(t, vol, ntfsOff, ntfsLen, got)
	for _, r := range ntfsclusterRuns(t, vol, "/keep.dat") {
		assertNoOverlap(t, got, ntfsOff+r.lcn*cs, r.length*cs, "keep.dat")
	}

	// Nothing asked, nothing excluded; the partitions are the same.
	parts2, got2, err := analyzeFile(t, disk, Options{})
	if err != nil || len(got2) != 0 || !reflect.DeepEqual(parts2, wantParts) {
		t.Errorf("Analyze with no options: %+v, %+v, %v", parts2, got2, err)
	}
	// Paths alone exclude only the matching files.
	_, got3, err := analyzeFile(t, disk, Options{Paths: []string{"/BIG.tmp", "/nothere/*"}})
	wantPath := Merge(runsToRanges(ntfsclusterRuns(t, vol, "/big.TMP"), ntfsOff, cs, ReasonPath))
	if err != nil || !reflect.DeepEqual(got3, wantPath) {
		t.Errorf("Analyze with paths only:\n got %+v, %v\nwant %+v", got3, err, wantPath)
	}
}

func TestMBRExtendedSwapAndNTFS(t *testing.T) {
	dir := t.TempDir()
	disk := newDisk(t, dir, 64*mib)
	ss, layout := sfdiskLayout(t, disk, "label: dos\n"+
		"start=2048, size=8192, type=83\n"+
		"start=10240, type=5\n"+
		"start=12288, size=16384, type=82\n"+
		"start=30720, size=81920, type=7\n")
	if len(layout) != 4 {
		t.Fatalf("sfdisk made %d partitions", len(layout))
	}
	swap, ntfs := layout[2], layout[3]
	splice(t, disk, makeSwap(t, dir, swap.Size*ss, 65536), swap.Start*ss)
	vol := makeNTFS(t, dir, ntfs.Size*ss, []ntfsFile{{"/pagefile.sys", 2 * mib}})
	splice(t, disk, vol, ntfs.Start*ss)

	parts, got, err := analyzeFile(t, disk, Options{Swap: true})
	if err != nil {
		t.Fatal(err)
	}
	wantParts := []Partition{
		{Index: 1, Offset: layout[0].Start * ss, Length: layout[0].Size * ss, Type: "linux-data"},
		{Index: 5, Offset: swap.Start * ss, Length: swap.Size * ss, Type: "linux-swap", Filesystem: "swap"},
		{Index: 6, Offset: ntfs.Start * ss, Length: ntfs.Size * ss, Type: "ntfs", Filesystem: "ntfs"},
	}
	if !reflect.DeepEqual(parts, wantParts) {
		t.Errorf("partitions:\n got %+v\nwant %+v", parts, wantParts)
	}
	want := []Range{{Offset: swap.Start*ss + 65536, Length: swap.Size*ss - 65536, Reason: ReasonSwap}}
	want = append(want, runsToRanges(ntfsclusterRuns(t, vol, "/pagefile.sys"), ntfs.Start*ss, clusterSize(t, vol), ReasonPagefile)...)
	want = Merge(want)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("excluded:\n got %+v\nwant %+v", got, want)
	}
	assertNoOverlap(t, got, swap.Start*ss, 65536, "swap header page (64 KiB pages)")
	assertMetadataKept(t, vol, ntfs.Start*ss, ntfs.Size*ss, got)
}

func TestSwapTypedPartitionWithoutSignatureIsKept(t *testing.T) {
	dir := t.TempDir()
	disk := newDisk(t, dir, 16*mib)
	ss, layout := sfdiskLayout(t, disk, "label: gpt\nstart=2048, size=8192, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F\n")
	parts, got, err := analyzeFile(t, disk, Options{Swap: true})
	if err != nil {
		t.Fatal(err)
	}
	want := []Partition{{Index: 1, Offset: layout[0].Start * ss, Length: layout[0].Size * ss, Type: "linux-swap"}}
	if !reflect.DeepEqual(parts, want) || len(got) != 0 {
		t.Errorf("got %+v, excluded %+v; want %+v and nothing excluded", parts, got, want)
	}
}

func TestDamagedGPTFallsBackToBackup(t *testing.T) {
	dir := t.TempDir()
	disk := newDisk(t, dir, 16*mib)
	ss, layout := sfdiskLayout(t, disk, "label: gpt\nstart=2048, size=8192, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F\n")
	splice(t, disk, makeSwap(t, dir, layout[0].Size*ss, 4096), layout[0].Start*ss)
	wantParts, wantEx, err := analyzeFile(t, disk, Options{Swap: true})
	if err != nil || len(wantEx) != 1 {
		t.Fatalf("intact disk: %+v %v", wantEx, err)
	}
	corrupt := func(off int64) {
		f, err := os.OpenFile(disk, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b := []byte{0}
		f.ReadAt(b, off)
		b[0] ^= 0xFF
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	corrupt(512 + 40)      // first usable LBA in the primary header, covered by its CRC
	corrupt(1024 + 32 + 3) // the primary entry array
	parts, ex, err := analyzeFile(t, disk, Options{Swap: true})
	if err != nil || !reflect.DeepEqual(parts, wantParts) || !reflect.DeepEqual(ex, wantEx) {
		t.Errorf("primary damaged: %+v %+v %v; want the backup's %+v %+v", parts, ex, err, wantParts, wantEx)
	}
	corrupt(16*mib - 512 + 40) // the backup header too
	parts, ex, err = analyzeFile(t, disk, Options{Swap: true})
	if err == nil || len(ex) != 0 || !strings.Contains(err.Error(), "offset 512") || !strings.Contains(err.Error(), "CRC32") {
		t.Errorf("both GPTs damaged: %+v %+v %v; want a CRC error naming offset 512 and no exclusions", parts, ex, err)
	}
}

func TestTruncatedDiskIsAnErrorNotARead(t *testing.T) {
	dir := t.TempDir()
	disk := newDisk(t, dir, 64*mib)
	ss, layout := sfdiskLayout(t, disk, "label: dos\nstart=2048, size=81920, type=7\n")
	vol := makeNTFS(t, dir, layout[0].Size*ss, []ntfsFile{{"/pagefile.sys", 2 * mib}})
	splice(t, disk, vol, layout[0].Start*ss)
	// The image ends inside the NTFS partition, before its MFT.
	if err := os.Truncate(disk, layout[0].Start*ss+8192); err != nil {
		t.Fatal(err)
	}
	_, ex, err := analyzeFile(t, disk, Options{Swap: true})
	if err == nil || len(ex) != 0 || !strings.Contains(err.Error(), "outside the disk") {
		t.Errorf("truncated disk: %+v %v; want an error about the partition outside the disk", ex, err)
	}
}

func TestWholeDiskFilesystems(t *testing.T) {
	dir := t.TempDir()
	swap := makeSwap(t, dir, 4*mib, 4096)
	parts, ex, err := analyzeFile(t, swap, Options{Swap: true})
	want := []Range{{Offset: 4096, Length: 4*mib - 4096, Reason: ReasonSwap}}
	if err != nil || len(parts) != 1 || parts[0].Index != 0 || parts[0].Filesystem != "swap" || !reflect.DeepEqual(ex, want) {
		t.Errorf("whole-disk swap: %+v %+v %v", parts, ex, err)
	}
	vol := makeNTFS(t, dir, 16*mib, []ntfsFile{{"/hiberfil.sys", mib}})
	parts, ex, err = analyzeFile(t, vol, Options{Swap: true})
	wantEx := Merge(runsToRanges(ntfsclusterRuns(t, vol, "/hiberfil.sys"), 0, clusterSize(t, vol), ReasonHiberfil))
	if err != nil || len(parts) != 1 || parts[0].Filesystem != "ntfs" || !reflect.DeepEqual(ex, wantEx) {
		t.Errorf("whole-disk NTFS: %+v %+v %v; want %+v", parts, ex, err, wantEx)
	}
}

// TestNTFSGeometries covers cluster sizes below, equal to and above the MFT
// record and index block sizes, and 4096-byte sectors: the arithmetic of
// records spanning clusters and of index block numbers differs for each.
func TestNTFSGeometries(t *testing.T) {
	for _, g := range [][]string{{"-c", "512"}, {"-c", "65536"}, {"-s", "4096", "-c", "8192"}} {
		t.Run(strings.Join(g, ""), func(t *testing.T) {
			dir := t.TempDir()
			files := []ntfsFile{{"/pagefile.sys", 256 << 10}, {"/hiberfil.sys", 200 << 10}}
			for i := 0; i < 40; i++ {
				files = append(files, ntfsFile{fmt.Sprintf("/file-with-a-longer-name-%02d.tmp", i), 130 << 10})
			}
			files = append(files, ntfsFile{"/pagefile.sys", 600 << 10})
			vol := makeNTFSWith(t, dir, 32*mib, files, g...)
			cs := clusterSize(t, vol)
			want := runsToRanges(ntfsclusterRuns(t, vol, "/pagefile.sys"), 0, cs, ReasonPagefile)
			want = append(want, runsToRanges(ntfsclusterRuns(t, vol, "/hiberfil.sys"), 0, cs, ReasonHiberfil)...)
			for i := 10; i < 20; i++ {
				want = append(want, runsToRanges(ntfsclusterRuns(t, vol, fmt.Sprintf("/file-with-a-longer-name-%02d.tmp", i)), 0, cs, ReasonPath)...)
			}
			want = Merge(want)
			_, got, err := analyzeFile(t, vol, Options{Swap: true, Paths: []string{"/*-1?.tmp"}})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("cluster size %d: excluded\n got %+v\nwant %+v", cs, got, want)
			}
			assertMetadataKept(t, vol, 0, 32*mib, got)
		})
	}
}

func TestExtFilesystemsAreRecognized(t *testing.T) {
	for _, fs := range []string{"ext2", "ext3", "ext4"} {
		dir := t.TempDir()
		disk := newDisk(t, dir, 16*mib)
		ss, layout := sfdiskLayout(t, disk, "label: gpt\nstart=2048, size=16384, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n")
		part := filepath.Join(dir, "part.img")
		if err := os.WriteFile(part, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(part, layout[0].Size*ss); err != nil {
			t.Fatal(err)
		}
		run(t, "", "mke2fs", "-q", "-F", "-t", fs, part)
		splice(t, disk, part, layout[0].Start*ss)
		parts, ex, err := analyzeFile(t, disk, Options{Swap: true, Paths: []string{"/*"}})
		want := []Partition{{Index: 1, Offset: layout[0].Start * ss, Length: layout[0].Size * ss, Type: "linux-data", Filesystem: fs}}
		if err != nil || !reflect.DeepEqual(parts, want) || len(ex) != 0 {
			t.Errorf("%s: %+v %+v %v; want %+v and nothing excluded", fs, parts, ex, err, want)
		}
	}
}

// pagefileRecord returns the disk offset of pagefile.sys's MFT record in a
// fresh volume made by makeNTFS (whose MFT is contiguous), from ntfsinfo.
func pagefileRecord(t *testing.T, vol string) int64 {
	t.Helper()
	var inode int64 = -1
	for _, line := range strings.Split(run(t, "", "ntfsinfo", "-F", "/pagefile.sys", vol), "\n") {
		if v, ok := strings.CutPrefix(line, "Dumping Inode "); ok {
			inode, _ = strconv.ParseInt(strings.Fields(v)[0], 10, 64)
		}
	}
	if inode < 24 {
		t.Fatalf("ntfsinfo: inode %d", inode)
	}
	return mftRecordOffset(t, vol, inode)
}

// mftRecordOffset returns the disk offset of MFT record inode in a
// fresh volume made by makeNTFS (whose MFT is contiguous, 1 KiB records).
func mftRecordOffset(t *testing.T, vol string, inode int64) int64 {
	t.Helper()
	var mftLCN int64 = -1
	for _, line := range strings.Split(run(t, "", "ntfsinfo", "-m", vol), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "LCN of Data Attribute for FILE_MFT:"); ok {
			mftLCN, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	if mftLCN <= 0 {
		t.Fatalf("ntfsinfo -m: MFT at cluster %d", mftLCN)
	}
	return mftLCN*clusterSize(t, vol) + inode*1024
}

func patchFile(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestDamagedNTFSIsAnErrorNamingWhere(t *testing.T) {
	dir := t.TempDir()
	vol := makeNTFS(t, dir, 16*mib, []ntfsFile{{"/pagefile.sys", mib}})
	rec := pagefileRecord(t, vol)
	b := make([]byte, 1024)
	f, err := os.Open(vol)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadAt(b, rec); err != nil {
		t.Fatal(err)
	}
	f.Close()

	// A torn write: the update sequence number at the end of the first
	// 512-byte block no longer matches.
	torn := filepath.Join(dir, "torn.img")
	run(t, "", "cp", vol, torn)
	patchFile(t, torn, rec+510, []byte{b[510] ^ 0xFF})
	_, ex, err := analyzeFile(t, torn, Options{Swap: true})
	if err == nil || ex != nil || !strings.Contains(err.Error(), fmt.Sprintf("at offset %d", rec)) || !strings.Contains(err.Error(), "update sequence") {
		t.Errorf("torn record: %+v %v; want an update sequence error naming offset %d", ex, err, rec)
	}

	// The page file's run moved onto the MFT: excluding it would drop
	// metadata, so it is an error.
	off := int(binary.LittleEndian.Uint16(b[0x14:]))
	for binary.LittleEndian.Uint32(b[off:]) != 0x80 {
		off += int(binary.LittleEndian.Uint32(b[off+4:]))
	}
	runs := off + int(binary.LittleEndian.Uint16(b[off+0x20:]))
	h := b[runs]
	lcnAt := runs + 1 + int(h&0x0F)
	lcn := make([]byte, h>>4)
	lcn[0] = 4 // the MFT of a volume made by mkntfs starts at cluster 4 with 4 KiB clusters
	cross := filepath.Join(dir, "cross.img")
	run(t, "", "cp", vol, cross)
	patchFile(t, cross, rec+int64(lcnAt), lcn)
	if got := ntfsclusterRuns(t, cross, "/pagefile.sys"); len(got) != 1 || got[0].lcn != 4 {
		t.Fatalf("patched page file runs %+v; want one at cluster 4", got)
	}
	_, ex, err = analyzeFile(t, cross, Options{Swap: true})
	if err == nil || ex != nil || !strings.Contains(err.Error(), "overlaps NTFS metadata") || !strings.Contains(err.Error(), "pagefile.sys") {
		t.Errorf("page file over the MFT: %+v %v; want an error naming the file and the overlap", ex, err)
	}
}

func TestGPTTypeNames(t *testing.T) {
	dir := t.TempDir()
	disk := newDisk(t, dir, 16*mib)
	types := []string{
		"C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "E3C9E316-0B5C-4DB8-817D-F92DF00215AE",
		"EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC",
		"0FC63DAF-8483-4772-8E79-3D69D8477DE4", "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F",
		"6A898CC3-1DD2-11B2-99A6-080020736631", // ZFS on Solaris: no name, reported as its GUID
	}
	script := "label: gpt\n"
	for i, typ := range types {
		script += fmt.Sprintf("start=%d, size=2048, type=%s\n", 2048+i*2048, typ)
	}
	ss, layout := sfdiskLayout(t, disk, script)
	parts, ex, err := analyzeFile(t, disk, Options{Swap: true})
	if err != nil || len(ex) != 0 || len(parts) != len(layout) {
		t.Fatalf("%+v %+v %v", parts, ex, err)
	}
	names := []string{"efi-system", "microsoft-reserved", "microsoft-basic-data", "windows-recovery", "linux-data", "linux-swap", layout[6].Type}
	for i, p := range parts {
		if p.Type != names[i] || p.Offset != layout[i].Start*ss || p.Length != layout[i].Size*ss {
			t.Errorf("partition %d: %+v; want type %q at %d+%d (sfdisk type %s)", i+1, p, names[i], layout[i].Start*ss, layout[i].Size*ss, layout[i].Type)
		}
	}
}
