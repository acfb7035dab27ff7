package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/replicator/replicator/internal/disk"
	"github.com/replicator/replicator/internal/provider"
	"github.com/replicator/replicator/internal/testkit"
	"github.com/replicator/replicator/internal/vhdx"
)

// Environment of the child process that stands in for `starter lab write`.
const (
	envWriteLab = "LAB_TEST_WRITE_LAB"
	envWriteVM  = "LAB_TEST_WRITE_VM"
	envWritePct = "LAB_TEST_WRITE_PERCENT"
	envWriteSd  = "LAB_TEST_WRITE_SEED"
)

func TestMain(m *testing.M) {
	if lab := os.Getenv(envWriteLab); lab != "" {
		pct, _ := strconv.ParseFloat(os.Getenv(envWritePct), 64)
		seed, _ := strconv.ParseInt(os.Getenv(envWriteSd), 10, 64)
		if err := New("lab", lab).Write(context.Background(), os.Getenv(envWriteVM), 0, pct, seed); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const testDiskSize = 16 << 20

// guestWrite is one write a test makes, kept to replay on a raw model.
type guestWrite struct {
	off  int64
	data []byte
}

func newGuestWrite(rng *rand.Rand, size int64) guestWrite {
	n := int64(4096 * (1 + rng.IntN(64)))
	off := rng.Int64N((size-n)/4096+1) * 4096
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	return guestWrite{off: off, data: data}
}

// writer keeps writing to disk 0 of a VM until stopped, logging every write.
type writer struct {
	h       *Host
	vm      string
	size    int64
	started atomic.Int64
	done    atomic.Int64
	mu      sync.Mutex
	log     []guestWrite
	stop    chan struct{}
	wg      sync.WaitGroup
	err     error
}

func startWriter(t *testing.T, h *Host, vm string, size int64, seed uint64) *writer {
	w := &writer{h: h, vm: vm, size: size, stop: make(chan struct{})}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		rng := rand.New(rand.NewPCG(seed, 1))
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			gw := newGuestWrite(rng, size)
			w.mu.Lock()
			w.log = append(w.log, gw)
			w.mu.Unlock()
			w.started.Add(1)
			if err := h.WriteAt(context.Background(), vm, 0, gw.data, gw.off); err != nil {
				w.mu.Lock()
				w.err = err
				w.mu.Unlock()
				return
			}
			w.done.Add(1)
		}
	}()
	return w
}

// waitWrites waits until n more writes completed.
func (w *writer) waitWrites(t *testing.T, n int64) {
	t.Helper()
	target := w.done.Load() + n
	testkit.Eventually(t, time.Minute, time.Millisecond, func() error {
		w.mu.Lock()
		err := w.err
		w.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		if done := w.done.Load(); done < target {
			return fmt.Errorf("the guest writer completed %d writes, want %d", done, target)
		}
		return nil
	})
}

func (w *writer) finish(t *testing.T) []guestWrite {
	t.Helper()
	close(w.stop)
	w.wg.Wait()
	if w.err != nil {
		t.Fatal(w.err)
	}
	return w.log
}

// model replays writes on a raw disk.
func model(size int64, writes []guestWrite) []byte {
	b := make([]byte, size)
	for _, w := range writes {
		copy(b[w.off:], w.data)
	}
	return b
}

func readImage(t *testing.T, img disk.Image) []byte {
	t.Helper()
	b := make([]byte, img.Size())
	if _, err := img.ReadAt(b, 0); err != nil {
		t.Fatalf("read image: %v", err)
	}
	return b
}

func readVHDX(t *testing.T, path string) []byte {
	t.Helper()
	d, err := vhdx.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	return readImage(t, d)
}

func readCheckpoint(t *testing.T, h *Host, vmID, cpID string) []byte {
	t.Helper()
	img, err := h.OpenDisk(context.Background(), vmID, cpID, "0")
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	return readImage(t, img)
}

// checkpointMoment finds how many writes of the log the frozen disk holds:
// exactly one count between lo and hi must give its bytes.
func checkpointMoment(t *testing.T, frozen []byte, log []guestWrite, lo, hi int64) int64 {
	t.Helper()
	m := model(int64(len(frozen)), log[:lo])
	found := int64(-1)
	for k := lo; k <= hi; k++ {
		if k > lo {
			w := log[k-1]
			copy(m[w.off:], w.data)
		}
		if bytes.Equal(m, frozen) {
			if found >= 0 {
				t.Fatalf("frozen disk matches the model after %d and after %d writes", found, k)
			}
			found = k
		}
	}
	if found < 0 {
		t.Fatalf("frozen disk matches the model after no number of writes from %d to %d", lo, hi)
	}
	return found
}

// checkpointDuring takes a checkpoint while the writer writes and returns it
// with the number of writes it holds.
func checkpointDuring(t *testing.T, h *Host, w *writer, vmID string) (provider.Checkpoint, int64) {
	t.Helper()
	w.waitWrites(t, 5)
	lo := w.done.Load()
	cp, err := h.CreateCheckpoint(context.Background(), vmID, provider.CheckpointOptions{})
	if err != nil {
		t.Fatal(err)
	}
	hi := w.started.Load()
	w.waitWrites(t, 3) // the writer goes on into the child
	frozen := readCheckpoint(t, h, vmID, cp.ID)
	w.mu.Lock()
	log := append([]guestWrite(nil), w.log...)
	w.mu.Unlock()
	return cp, checkpointMoment(t, frozen, log, lo, hi)
}

func newLabVM(t *testing.T, sizes ...int64) (*Host, provider.VM) {
	t.Helper()
	dir := t.TempDir()
	vm, err := CreateVM(dir, "vm1", sizes)
	if err != nil {
		t.Fatal(err)
	}
	return New("lab", dir), vm
}

func activePath(t *testing.T, h *Host, vmID string) string {
	t.Helper()
	vms, err := h.VMs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, vm := range vms {
		if vm.ID == vmID {
			return vm.Disks[0].Path
		}
	}
	t.Fatalf("VM %s not listed", vmID)
	return ""
}

func TestCheckpointWhileWritingAndRelease(t *testing.T) {
	h, vm := newLabVM(t, testDiskSize)
	w := startWriter(t, h, vm.Name, testDiskSize, 1)
	cp, k := checkpointDuring(t, h, w, vm.ID)
	w.waitWrites(t, 5)
	log := w.finish(t)
	if int64(len(log)) <= k {
		t.Fatalf("no write after the checkpoint (%d writes, checkpoint after %d)", len(log), k)
	}
	// The checkpoint still holds exactly the bytes of its moment.
	if !bytes.Equal(readCheckpoint(t, h, vm.ID, cp.ID), model(testDiskSize, log[:k])) {
		t.Fatal("frozen disk changed after later writes")
	}
	child := activePath(t, h, vm.ID)
	if filepath.Base(child) != "disk0_"+cp.ID+".avhdx" || filepath.Base(cp.Disks[0].Path) != "disk0.vhdx" {
		t.Fatalf("VM writes to %s, checkpoint froze %s", child, cp.Disks[0].Path)
	}
	want := model(testDiskSize, log)
	if !bytes.Equal(readVHDX(t, child), want) {
		t.Fatal("the child chain does not hold what the writer wrote")
	}
	if err := h.ReleaseCheckpoint(context.Background(), vm.ID, cp.ID); err != nil {
		t.Fatal(err)
	}
	base := activePath(t, h, vm.ID)
	if base != cp.Disks[0].Path {
		t.Fatalf("after release the VM writes to %s, want %s", base, cp.Disks[0].Path)
	}
	if !bytes.Equal(readVHDX(t, base), want) {
		t.Fatal("after release the disk differs from what the writer wrote")
	}
	if _, err := os.Stat(child); !os.IsNotExist(err) {
		t.Fatalf("child %s still there after release: %v", child, err)
	}
	if _, err := h.Checkpoint(context.Background(), vm.ID, cp.ID); !errors.Is(err, provider.ErrCheckpointNotFound) {
		t.Fatalf("released checkpoint: got %v, want ErrCheckpointNotFound", err)
	}
	if err := h.ReleaseCheckpoint(context.Background(), vm.ID, cp.ID); err != nil {
		t.Fatalf("releasing a released checkpoint: %v", err)
	}
}

// blocksOf is the set of 64 KiB blocks that writes touch.
func blocksOf(writes []guestWrite) map[int64]bool {
	s := map[int64]bool{}
	for _, w := range writes {
		for b := w.off / ChangeBlockSize; b <= (w.off+int64(len(w.data))-1)/ChangeBlockSize; b++ {
			s[b] = true
		}
	}
	return s
}

// checkChanged asserts that the ranges cover exactly the blocks written.
func checkChanged(t *testing.T, ranges []disk.Extent, written []guestWrite) {
	t.Helper()
	want := blocksOf(written)
	got := map[int64]bool{}
	for i, e := range ranges {
		if e.Offset%ChangeBlockSize != 0 || (i > 0 && e.Offset <= ranges[i-1].End()) {
			t.Fatalf("range %d %+v: unaligned or not sorted and merged", i, e)
		}
		for b := e.Offset / ChangeBlockSize; b <= (e.End()-1)/ChangeBlockSize; b++ {
			got[b] = true
		}
	}
	for b := range want {
		if !got[b] {
			t.Errorf("block %d (offset %d) was written but is not in the changed ranges", b, b*ChangeBlockSize)
		}
	}
	for b := range got {
		if !want[b] {
			t.Errorf("block %d (offset %d) is in the changed ranges but was not written", b, b*ChangeBlockSize)
		}
	}
}

func TestChangedRangesBetweenReferencePoints(t *testing.T) {
	ctx := context.Background()
	h, vm := newLabVM(t, testDiskSize)
	w := startWriter(t, h, vm.Name, testDiskSize, 2)

	cp1, k1 := checkpointDuring(t, h, w, vm.ID)
	if _, err := h.ChangedRanges(ctx, vm.ID, cp1.ID, "0", ""); !errors.Is(err, provider.ErrNoChangeTracking) {
		t.Fatalf("no reference point: got %v, want ErrNoChangeTracking", err)
	}
	if _, err := h.ChangedRanges(ctx, vm.ID, cp1.ID, "0", "no-such-reference-point"); !errors.Is(err, provider.ErrNoChangeTracking) {
		t.Fatalf("unknown reference point: got %v, want ErrNoChangeTracking", err)
	}
	r1, err := h.ConvertToReferencePoint(ctx, vm.ID, cp1.ID, "")
	if err != nil {
		t.Fatal(err)
	}

	cp2, k2 := checkpointDuring(t, h, w, vm.ID)
	ranges, err := h.ChangedRanges(ctx, vm.ID, cp2.ID, "0", r1)
	if err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	log := append([]guestWrite(nil), w.log...)
	w.mu.Unlock()
	checkChanged(t, ranges, log[k1:k2])

	// A released checkpoint keeps the intervals: the next checkpoint's changes
	// against r1 still cover everything since r1.
	if err := h.ReleaseCheckpoint(ctx, vm.ID, cp2.ID); err != nil {
		t.Fatal(err)
	}
	cp3, k3 := checkpointDuring(t, h, w, vm.ID)
	ranges, err = h.ChangedRanges(ctx, vm.ID, cp3.ID, "0", r1)
	if err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	log = append([]guestWrite(nil), w.log...)
	w.mu.Unlock()
	checkChanged(t, ranges, log[k1:k3])

	r3, err := h.ConvertToReferencePoint(ctx, vm.ID, cp3.ID, r1)
	if err != nil {
		t.Fatal(err)
	}
	cp4, k4 := checkpointDuring(t, h, w, vm.ID)
	if _, err := h.ChangedRanges(ctx, vm.ID, cp4.ID, "0", r1); !errors.Is(err, provider.ErrNoChangeTracking) {
		t.Fatalf("destroyed reference point: got %v, want ErrNoChangeTracking", err)
	}
	ranges, err = h.ChangedRanges(ctx, vm.ID, cp4.ID, "0", r3)
	if err != nil {
		t.Fatal(err)
	}
	log = w.finish(t)
	checkChanged(t, ranges, log[k3:k4])
	if _, err := h.ConvertToReferencePoint(ctx, vm.ID, cp4.ID, r3); err != nil {
		t.Fatal(err)
	}
	if got := readVHDX(t, activePath(t, h, vm.ID)); !bytes.Equal(got, model(testDiskSize, log)) {
		t.Fatal("after converting to a reference point the disk differs from what the writer wrote")
	}
	// Only the interval being written remains: no reference point needs more.
	maps, _ := filepath.Glob(filepath.Join(h.Path(), vm.Name, "*.cbt"))
	if len(maps) != 1 {
		t.Fatalf("change maps left: %v", maps)
	}
}

func TestTwoCheckpointsReleasedOldestFirst(t *testing.T) {
	ctx := context.Background()
	h, vm := newLabVM(t, testDiskSize)
	w := startWriter(t, h, vm.Name, testDiskSize, 3)
	cp1, _ := checkpointDuring(t, h, w, vm.ID)
	cp2, k2 := checkpointDuring(t, h, w, vm.ID)
	if err := h.ReleaseCheckpoint(ctx, vm.ID, cp1.ID); err != nil {
		t.Fatal(err)
	}
	w.waitWrites(t, 3)
	log := w.finish(t)
	got, err := h.Checkpoint(ctx, vm.ID, cp2.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Disks[0].Path != cp1.Disks[0].Path {
		t.Fatalf("after releasing the first checkpoint the second one freezes %s, want %s", got.Disks[0].Path, cp1.Disks[0].Path)
	}
	if !bytes.Equal(readCheckpoint(t, h, vm.ID, cp2.ID), model(testDiskSize, log[:k2])) {
		t.Fatal("the second checkpoint changed when the first was released")
	}
	if err := h.ReleaseCheckpoint(ctx, vm.ID, cp2.ID); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readVHDX(t, activePath(t, h, vm.ID)), model(testDiskSize, log)) {
		t.Fatal("after releasing both checkpoints the disk differs from what the writer wrote")
	}
	files, _ := filepath.Glob(filepath.Join(h.Path(), vm.Name, "*.avhdx"))
	if len(files) != 0 {
		t.Fatalf("children left: %v", files)
	}
}

func TestWriteFromAnotherProcessGoesToTheChild(t *testing.T) {
	ctx := context.Background()
	h, vm := newLabVM(t, testDiskSize)
	if err := h.Write(ctx, vm.Name, 0, 10, 1); err != nil {
		t.Fatal(err)
	}
	cp1, err := h.CreateCheckpoint(ctx, vm.ID, provider.CheckpointOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ref, err := h.ConvertToReferencePoint(ctx, vm.ID, cp1.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	before := readVHDX(t, activePath(t, h, vm.ID))
	cp, err := h.CreateCheckpoint(ctx, vm.ID, provider.CheckpointOptions{})
	if err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envWriteLab+"="+h.Path(), envWriteVM+"="+vm.Name, envWritePct+"=20", envWriteSd+"=42")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("write from another process: %v\n%s", err, out)
	}

	if !bytes.Equal(readCheckpoint(t, h, vm.ID, cp.ID), before) {
		t.Fatal("a write from another process reached the frozen disk")
	}
	var writes []guestWrite
	for i, r := range planWrites(testDiskSize, 20, 42) {
		writes = append(writes, guestWrite{off: r.off, data: runData(42, i, r.length)})
	}
	want := before
	for _, w := range writes {
		copy(want[w.off:], w.data)
	}
	child := activePath(t, h, vm.ID)
	if filepath.Ext(child) != ".avhdx" || !bytes.Equal(readVHDX(t, child), want) {
		t.Fatalf("the child %s does not hold the other process's writes", child)
	}
	cp2, err := h.CreateCheckpoint(ctx, vm.ID, provider.CheckpointOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ranges, err := h.ChangedRanges(ctx, vm.ID, cp2.ID, "0", ref)
	if err != nil {
		t.Fatal(err)
	}
	checkChanged(t, ranges, writes)
	for _, id := range []string{cp.ID, cp2.ID} {
		if err := h.ReleaseCheckpoint(ctx, vm.ID, id); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(readVHDX(t, activePath(t, h, vm.ID)), want) {
		t.Fatal("after release the disk lost the other process's writes")
	}
}

func TestPlanWritesCoversThePercent(t *testing.T) {
	for _, pct := range []float64{0.5, 10, 100} {
		total := int64(0)
		for _, r := range planWrites(testDiskSize, pct, 7) {
			if r.off%writeAlign != 0 || r.off+int64(r.length) > testDiskSize || r.length < writeAlign || r.length > maxWriteRun {
				t.Fatalf("percent %v: bad run %+v", pct, r)
			}
			total += int64(r.length)
		}
		want := int64(testDiskSize * pct / 100)
		if total < want || total >= want+writeAlign {
			t.Fatalf("percent %v: %d bytes written, want %d", pct, total, want)
		}
	}
}

func TestErrors(t *testing.T) {
	ctx := context.Background()
	h, vm := newLabVM(t, testDiskSize)
	missing := "no-such-vm"
	checks := map[string]error{}
	_, checks["CreateCheckpoint"] = h.CreateCheckpoint(ctx, missing, provider.CheckpointOptions{})
	_, checks["Checkpoint"] = h.Checkpoint(ctx, missing, "x")
	_, checks["OpenDisk"] = h.OpenDisk(ctx, missing, "x", "0")
	_, checks["ChangedRanges"] = h.ChangedRanges(ctx, missing, "x", "0", "r")
	_, checks["ConvertToReferencePoint"] = h.ConvertToReferencePoint(ctx, missing, "x", "")
	checks["ReleaseCheckpoint"] = h.ReleaseCheckpoint(ctx, missing, "x")
	checks["Write"] = h.Write(ctx, missing, 0, 1, 1)
	for op, err := range checks {
		if !errors.Is(err, provider.ErrVMNotFound) || !bytes.Contains([]byte(err.Error()), []byte(missing)) {
			t.Errorf("%s of a missing VM: got %v, want ErrVMNotFound naming it", op, err)
		}
	}
	checks = map[string]error{}
	_, checks["Checkpoint"] = h.Checkpoint(ctx, vm.ID, "no-such-checkpoint")
	_, checks["OpenDisk"] = h.OpenDisk(ctx, vm.ID, "no-such-checkpoint", "0")
	_, checks["ChangedRanges"] = h.ChangedRanges(ctx, vm.ID, "no-such-checkpoint", "0", "r")
	_, checks["ConvertToReferencePoint"] = h.ConvertToReferencePoint(ctx, vm.ID, "no-such-checkpoint", "")
	for op, err := range checks {
		if !errors.Is(err, provider.ErrCheckpointNotFound) {
			t.Errorf("%s of a missing checkpoint: got %v, want ErrCheckpointNotFound", op, err)
		}
	}
	if err := h.Write(ctx, vm.Name, 1, 1, 1); err == nil {
		t.Error("write to a disk the VM does not have: no error")
	}
	if err := h.Write(ctx, vm.Name, 0, 0, 1); err == nil {
		t.Error("write of 0 percent: no error")
	}
	if _, err := CreateVM(h.Path(), "vm1", []int64{testDiskSize}); err == nil {
		t.Error("creating an existing VM: no error")
	}
	for _, name := range []string{"../evil", "a/b", "", ".hidden"} {
		if _, err := CreateVM(h.Path(), name, []int64{testDiskSize}); err == nil {
			t.Errorf("VM name %q accepted", name)
		}
	}
	if _, err := New("lab", filepath.Join(h.Path(), "missing")).Host(ctx); !errors.Is(err, provider.ErrHostUnreachable) {
		t.Errorf("missing lab folder: got %v, want ErrHostUnreachable", err)
	}
}

func TestVMsAndCheckpointDescribeTheHost(t *testing.T) {
	ctx := context.Background()
	h, vm := newLabVM(t, testDiskSize, 8<<20)
	vms, err := h.VMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(vms) != 1 || vms[0].ID != vm.ID || vms[0].Generation != 2 || vms[0].ConfigurationVersion != "lab-1" || len(vms[0].Disks) != 2 {
		t.Fatalf("VMs: %+v", vms)
	}
	if d := vms[0].Disks[1]; d.ID != "1" || d.VirtualSize != 8<<20 || d.Format != "vhdx" || filepath.Base(d.Path) != "disk1.vhdx" {
		t.Fatalf("second disk: %+v", d)
	}
	cp, err := h.CreateCheckpoint(ctx, vm.Name, provider.CheckpointOptions{Consistency: provider.ApplicationConsistent})
	if err != nil {
		t.Fatal(err)
	}
	got, err := h.Checkpoint(ctx, vm.ID, cp.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.VMID != vm.ID || len(got.Disks) != 2 || got.Disks[1].VirtualSize != 8<<20 || got.Disks[1].DiskID != "1" {
		t.Fatalf("checkpoint: %+v", got)
	}
	vms, _ = h.VMs(ctx)
	if filepath.Base(vms[0].Disks[1].Path) != "disk1_"+cp.ID+".avhdx" {
		t.Fatalf("during the checkpoint disk 1 is %s", vms[0].Disks[1].Path)
	}
}

func TestReleaseWithCancelledContextStillMerges(t *testing.T) {
	ctx := context.Background()
	h, vm := newLabVM(t, testDiskSize)
	cp, err := h.CreateCheckpoint(ctx, vm.ID, provider.CheckpointOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Write(ctx, vm.Name, 0, 30, 4); err != nil {
		t.Fatal(err)
	}
	want := readVHDX(t, activePath(t, h, vm.ID))
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := h.ReleaseCheckpoint(cancelled, vm.ID, cp.ID); err != nil {
		t.Fatal(err)
	}
	if p := activePath(t, h, vm.ID); p != cp.Disks[0].Path || !bytes.Equal(readVHDX(t, p), want) {
		t.Fatalf("after a release with a cancelled context the VM writes to %s, or its data differs", p)
	}
}

// A crash between the merge and the vm.json update leaves the VM on its
// child over a parent that holds the child's data already: writes go on,
// and the retried release gives the same disk.
func TestWritesAfterInterruptedMerge(t *testing.T) {
	ctx := context.Background()
	h, vm := newLabVM(t, testDiskSize)
	cp, err := h.CreateCheckpoint(ctx, vm.ID, provider.CheckpointOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Write(ctx, vm.Name, 0, 30, 5); err != nil {
		t.Fatal(err)
	}
	child := activePath(t, h, vm.ID)
	if err := vhdx.Merge(ctx, child, cp.Disks[0].Path); err != nil { // the crash comes after this
		t.Fatal(err)
	}
	if err := h.Write(ctx, vm.Name, 0, 10, 6); err != nil {
		t.Fatalf("write after an interrupted merge: %v", err)
	}
	want := make([]byte, testDiskSize)
	for _, seed := range []int64{5, 6} {
		pct := map[int64]float64{5: 30, 6: 10}[seed]
		for i, r := range planWrites(testDiskSize, pct, seed) {
			copy(want[r.off:], runData(seed, i, r.length))
		}
	}
	d, err := vhdx.OpenWith(child, vhdx.OpenOptions{IgnoreParentLinkage: true})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readImage(t, d), want) {
		t.Fatal("the child over the partly merged parent lost data")
	}
	d.Close()
	if err := h.ReleaseCheckpoint(ctx, vm.ID, cp.ID); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readVHDX(t, activePath(t, h, vm.ID)), want) {
		t.Fatal("the retried release lost data")
	}
}

// A checkpoint taken while another process writes holds the writes of a
// whole number of that process's batches, and the child the rest.
func TestCheckpointWhileAnotherProcessWrites(t *testing.T) {
	ctx := context.Background()
	const size = 64 << 20
	h, vm := newLabVM(t, size)
	base := activePath(t, h, vm.ID)
	before, err := os.Stat(base)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envWriteLab+"="+h.Path(), envWriteVM+"="+vm.Name, envWritePct+"=100", envWriteSd+"=77")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait for the writer to start writing, then freeze the disk.
	testkit.Eventually(t, time.Minute, time.Millisecond, func() error {
		fi, err := os.Stat(base)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() <= before.Size() {
			return fmt.Errorf("the writer process has not grown %s past %d bytes", base, before.Size())
		}
		return nil
	})
	cp, err := h.CreateCheckpoint(ctx, vm.ID, provider.CheckpointOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("writer process: %v\n%s", err, out.String())
	}
	runs := planWrites(size, 100, 77)
	batches := batchRuns(runs)
	frozen := readCheckpoint(t, h, vm.ID, cp.ID)
	m := make([]byte, size)
	found := -1
	for k := 0; k <= len(batches); k++ {
		if k > 0 {
			for _, i := range batches[k-1] {
				copy(m[runs[i].off:], runData(77, i, runs[i].length))
			}
		}
		if bytes.Equal(m, frozen) {
			found = k
			break
		}
	}
	t.Logf("the checkpoint came after %d of %d batches", found, len(batches))
	if found < 0 {
		t.Fatalf("the frozen disk holds no whole number of the other process's %d batches", len(batches))
	}
	want := make([]byte, size)
	for i, r := range runs {
		copy(want[r.off:], runData(77, i, r.length))
	}
	if !bytes.Equal(readVHDX(t, activePath(t, h, vm.ID)), want) {
		t.Fatal("the child chain does not hold every write of the other process")
	}
	if err := h.ReleaseCheckpoint(ctx, vm.ID, cp.ID); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readVHDX(t, activePath(t, h, vm.ID)), want) {
		t.Fatal("after release the disk lost writes of the other process")
	}
}

func TestReferencePointsAreBounded(t *testing.T) {
	ctx := context.Background()
	h, vm := newLabVM(t, 1<<20)
	var refs []string
	for i := 0; i < maxReferencePoints+2; i++ {
		cp, err := h.CreateCheckpoint(ctx, vm.ID, provider.CheckpointOptions{})
		if err != nil {
			t.Fatal(err)
		}
		r, err := h.ConvertToReferencePoint(ctx, vm.ID, cp.ID, "")
		if err != nil {
			t.Fatal(err)
		}
		refs = append(refs, r)
	}
	cp, err := h.CreateCheckpoint(ctx, vm.ID, provider.CheckpointOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.ChangedRanges(ctx, vm.ID, cp.ID, "0", refs[0]); !errors.Is(err, provider.ErrNoChangeTracking) {
		t.Fatalf("oldest reference point beyond the bound: got %v, want ErrNoChangeTracking", err)
	}
	if r, err := h.ChangedRanges(ctx, vm.ID, cp.ID, "0", refs[2]); err != nil || len(r) != 0 {
		t.Fatalf("kept reference point without writes since: %v, %v", r, err)
	}
	maps, _ := filepath.Glob(filepath.Join(h.Path(), vm.Name, "*.cbt"))
	if len(maps) > maxReferencePoints+2 {
		t.Fatalf("%d change maps kept for %d reference points", len(maps), maxReferencePoints)
	}
}

func FuzzParseRecord(f *testing.F) {
	f.Add([]byte(`{"id":"a","name":"b","disks":[{"id":"0","file":"disk0.vhdx","virtualSize":1048576}]}`))
	f.Add([]byte(`{"id":"a","name":"b","disks":[{"id":"0","file":"../x","virtualSize":1}]}`))
	f.Add([]byte(`{"id":"a","name":"b","disks":[{"id":"/../../x","file":"d","virtualSize":1}]}`))
	f.Add([]byte(`{"id":"a","name":"b","checkpoints":[{"disks":[{"frozen":"/etc/passwd","child":"c"}]}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := "/lab/vm"
		rec, err := parseRecord(b)
		if err != nil {
			return
		}
		names := []string{}
		for _, d := range rec.Disks {
			names = append(names, d.File, changeMapName(d.ID, 1))
		}
		for _, c := range rec.Checkpoints {
			for _, d := range c.Disks {
				names = append(names, d.Frozen, d.Child)
			}
		}
		for _, n := range names {
			if filepath.Dir(filepath.Join(dir, n)) != dir {
				t.Fatalf("accepted file name %q leaves the VM folder", n)
			}
		}
	})
}
