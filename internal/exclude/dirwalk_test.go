package exclude

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/replicator/replicator/internal/testkit"
)

// mountNTFS mounts vol with ntfs-3g (FUSE) at a new folder, runs fill on it,
// unmounts and waits for ntfs-3g to finish writing. Where FUSE mounts are
// not possible (no /dev/fuse, no privilege) the test is skipped.
func mountNTFS(t *testing.T, vol string, fill func(root string)) {
	t.Helper()
	ntfs3g := testkit.RequireTool(t, "ntfs-3g")
	fusermount := testkit.RequireTool(t, "fusermount")
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(ntfs3g, "-o", "no_detach", vol, mnt)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	for mounted := false; !mounted; {
		select {
		case err := <-exited:
			testkit.Precondition(t, "ntfs-3g cannot mount here (FUSE unavailable?): %v\n%s", err, out.String())
		case <-time.After(20 * time.Millisecond):
			b, _ := os.ReadFile("/proc/mounts")
			mounted = strings.Contains(string(b), " "+mnt+" ")
		}
	}
	unmounted := false
	defer func() {
		if !unmounted {
			exec.Command(fusermount, "-u", mnt).Run()
			<-exited
		}
	}()
	fill(mnt)
	if o, err := exec.Command(fusermount, "-u", mnt).CombinedOutput(); err != nil {
		t.Fatalf("fusermount -u: %v\n%s", err, o)
	}
	unmounted = true
	if err := <-exited; err != nil {
		t.Fatalf("ntfs-3g: %v\n%s", err, out.String())
	}
}

func writeRandom(t *testing.T, path string, n int, rng *rand.Rand) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, n)
	rng.Read(b)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestPathPatternsWalkDirectories excludes files by guest path patterns in a
// volume whose folders ntfs-3g made, one of them large enough for a
// multi-level directory index, and compares with ntfscluster.
func TestPathPatternsWalkDirectories(t *testing.T) {
	dir := t.TempDir()
	vol := makeNTFS(t, dir, 48*mib, nil)
	rng := rand.New(rand.NewSource(7))
	var wantFiles, keepFiles []string
	mountNTFS(t, vol, func(root string) {
		add := func(list *[]string, p string, n int) {
			writeRandom(t, filepath.Join(root, p), n, rng)
			*list = append(*list, p)
		}
		add(&wantFiles, "Users/alice/AppData/Local/Temp/x.bin", 300<<10)
		add(&wantFiles, "Users/Bob/appdata/local/TEMP/z.bin", 70<<10)
		add(&keepFiles, "Users/alice/AppData/Local/Temp/sub/deeper.bin", 50<<10)
		add(&keepFiles, "Users/alice/AppData/Local/keep.bin", 50<<10)
		add(&keepFiles, "Users/Bob/Documents/keep.bin", 50<<10)
		// Many long names: the index of Many spans several blocks and levels.
		for i := 0; i < 600; i++ {
			name := fmt.Sprintf("Many/%s-%04d.bin", strings.Repeat("long-file-name", 6), i)
			if i%50 == 7 {
				add(&wantFiles, name, 5000)
			} else {
				add(&keepFiles, name, 5000)
			}
		}
		writeRandom(t, filepath.Join(root, "Users/alice/AppData/Local/Temp/tiny.txt"), 10, rng) // resident
	})
	cs := clusterSize(t, vol)
	var want []Range
	for _, f := range wantFiles {
		runs := ntfsclusterRuns(t, vol, "/"+f)
		if len(runs) == 0 {
			t.Fatalf("ntfscluster found no runs for /%s", f)
		}
		want = append(want, runsToRanges(runs, 0, cs, ReasonPath)...)
	}
	want = Merge(want)
	_, got, err := analyzeFile(t, vol, Options{Paths: []string{
		"/Users/*/AppData/Local/Temp/*",
		`C:\many\*-??07.bin`,
		`\Many\*-??57.BIN`,
		"/Users/nobody/*",
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("excluded:\n got %+v\nwant %+v", got, want)
	}
	for _, f := range keepFiles {
		for _, r := range ntfsclusterRuns(t, vol, "/"+f) {
			assertNoOverlap(t, got, r.lcn*cs, r.length*cs, f)
		}
	}
	assertMetadataKept(t, vol, 0, 48*mib, got)
}

// TestFragmentedFileWithAttributeList excludes a page file so fragmented that
// its runs continue in extension MFT records named by an attribute list.
func TestFragmentedFileWithAttributeList(t *testing.T) {
	dir := t.TempDir()
	vol := makeNTFS(t, dir, 32*mib, nil)
	rng := rand.New(rand.NewSource(9))
	mountNTFS(t, vol, func(root string) {
		var files []*os.File
		for _, name := range []string{"pagefile.sys", "other.dat"} {
			f, err := os.Create(filepath.Join(root, name))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			files = append(files, f)
		}
		chunk := make([]byte, 4096)
		// Alternate single-cluster appends so that each file gets every
		// other cluster.
		for i := 0; i < 1200; i++ {
			rng.Read(chunk)
			f := files[i%2]
			if _, err := f.Write(chunk); err != nil {
				t.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
		}
	})
	runs := ntfsclusterRuns(t, vol, "/pagefile.sys")
	info := run(t, "", "ntfsinfo", "-F", "/pagefile.sys", vol)
	if !strings.Contains(info, "$ATTRIBUTE_LIST") {
		testkit.Precondition(t, "pagefile.sys has %d runs but no attribute list; the volume did not fragment as the test needs", len(runs))
	}
	t.Logf("pagefile.sys: %d runs, with an attribute list", len(runs))
	cs := clusterSize(t, vol)
	want := Merge(runsToRanges(runs, 0, cs, ReasonPagefile))
	_, got, err := analyzeFile(t, vol, Options{Swap: true})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("excluded %d ranges, want %d:\n got %+v\nwant %+v", len(got), len(want), got, want)
	}
	for _, r := range ntfsclusterRuns(t, vol, "/other.dat") {
		assertNoOverlap(t, got, r.lcn*cs, r.length*cs, "other.dat")
	}
}

// inodeOf returns the MFT record number and sequence number of path.
func inodeOf(t *testing.T, vol, path string) (num, seq int64) {
	t.Helper()
	num, seq = -1, -1
	for _, line := range strings.Split(run(t, "", "ntfsinfo", "-F", path, vol), "\n") {
		if v, ok := strings.CutPrefix(line, "Dumping Inode "); ok && num < 0 {
			num, _ = strconv.ParseInt(strings.Fields(v)[0], 10, 64)
		}
		if v, ok := strings.CutPrefix(line, "MFT Record Seq. Numb.:"); ok && seq < 0 {
			seq, _ = strconv.ParseInt(strings.Fields(v)[0], 10, 64)
		}
	}
	if num < 0 || seq < 0 {
		t.Fatalf("ntfsinfo -F %s: no inode", path)
	}
	return num, seq
}

// TestDirectoryLoopIsAnError points a folder's entry for its subfolder back
// at the folder itself: the walk must stop with an error, not go round.
func TestDirectoryLoopIsAnError(t *testing.T) {
	dir := t.TempDir()
	vol := makeNTFS(t, dir, 16*mib, nil)
	mountNTFS(t, vol, func(root string) {
		writeRandom(t, filepath.Join(root, "a", "b", "x.bin"), 64<<10, rand.New(rand.NewSource(3)))
	})
	aNum, aSeq := inodeOf(t, vol, "/a")
	bNum, bSeq := inodeOf(t, vol, "/a/b")
	rec := mftRecordOffset(t, vol, aNum)
	b := make([]byte, 1024)
	f, err := os.Open(vol)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.ReadAt(b, rec)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	ref := binary.LittleEndian.AppendUint64(nil, uint64(bNum)|uint64(bSeq)<<48)
	at := bytes.Index(b, ref)
	if at < 0 || bytes.Count(b, ref) != 1 || at%512 > 502 {
		t.Fatalf("the entry for /a/b in record %d: found at %d, %d times", aNum, at, bytes.Count(b, ref))
	}
	patchFile(t, vol, rec+int64(at), binary.LittleEndian.AppendUint64(nil, uint64(aNum)|uint64(aSeq)<<48))
	_, ex, err := analyzeFile(t, vol, Options{Paths: []string{"/a/*/*/*/*.bin"}})
	if err == nil || ex != nil || !strings.Contains(err.Error(), "already reached") {
		t.Errorf("%+v %v; want an error about the directory reached twice", ex, err)
	}
}
