package replica

import (
	"context"
	"encoding/binary"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/replicator/replicator/internal/digest"
	"github.com/replicator/replicator/internal/testkit"
)

// commitPoints writes n points with random plans over the points of from
// (the model of what the replica holds so far) and returns the model of the
// new points.
func commitPoints(t *testing.T, w *Writer, vm VMInfo, rng *rand.Rand, n int, from ...modelPoint) []modelPoint {
	t.Helper()
	ctx := context.Background()
	pts := from
	for i := range n {
		bs := int64(64 << 10)
		ses, err := w.Begin(SessionSpec{CheckpointID: "c" + string(rune('a'+i)), ChangeTracking: "full", BlockSize: bs})
		if err != nil {
			t.Fatal(err)
		}
		mp := modelPoint{checkpoint: "c" + string(rune('a'+i)), disks: map[string][]byte{}}
		for _, d := range vm.Disks {
			dw, err := ses.Disk(d.ID)
			if err != nil {
				t.Fatal(err)
			}
			plan := randomPlan(rng, d.Size, bs, 6)
			for _, pw := range plan {
				if _, err := dw.WriteAt(pw.data, pw.off); err != nil {
					t.Fatal(err)
				}
			}
			if err := dw.Complete(); err != nil {
				t.Fatal(err)
			}
			dw.Close()
			base := make([]byte, d.Size)
			if len(pts) > 0 && pts[len(pts)-1].disks[d.ID] != nil {
				base = pts[len(pts)-1].disks[d.ID]
			}
			mp.disks[d.ID] = applyPlan(base, plan)
		}
		if _, err := ses.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		pts = append(pts, mp)
	}
	return pts[len(from):]
}

func newTestReplica(t *testing.T) (string, *Replica, *Writer) {
	t.Helper()
	dir := fastTempDir(t)
	st, err := Open(filepath.Join(dir, "ds"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := st.Replica("job1", "vm-1")
	if err != nil {
		t.Fatal(err)
	}
	w, err := r.Lock(context.Background(), "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	if err := w.Prepare(testVM()); err != nil {
		t.Fatal(err)
	}
	return dir, r, w
}

// TestMaterializeMatchesQemu compares every materialized VHDX and raw disk
// with the model's bytes through qemu-img.
func TestMaterializeMatchesQemu(t *testing.T) {
	qemu := testkit.RequireTool(t, "qemu-img")
	dir, r, w := newTestReplica(t)
	rng := rand.New(rand.NewPCG(testSeed(t), 1))
	model := commitPoints(t, w, testVM(), rng, 4)
	if err := w.ApplyRetention(context.Background(), 3); err != nil {
		t.Fatal(err)
	}
	model = model[1:]
	pts, err := r.Points()
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range pts {
		for _, d := range testVM().Disks {
			want := filepath.Join(dir, p.ID+d.ID+".model")
			if err := os.WriteFile(want, model[i].disks[d.ID], 0o644); err != nil {
				t.Fatal(err)
			}
			for _, format := range []string{FormatVHDX, FormatRaw} {
				out := filepath.Join(dir, p.ID+d.ID+"."+format)
				if err := r.Materialize(context.Background(), p.ID, d.ID, out, format); err != nil {
					t.Fatal(err)
				}
				if format == FormatVHDX {
					if b, err := exec.Command(qemu, "check", "-f", "vhdx", out).CombinedOutput(); err != nil {
						t.Fatalf("qemu-img check %s: %v\n%s", out, err, b)
					}
				}
				b, err := exec.Command(qemu, "compare", "-f", format, "-F", "raw", out, want).CombinedOutput()
				if err != nil {
					t.Fatalf("qemu-img compare point %s disk %s (%s): %v\n%s", p.ID, d.ID, format, err, b)
				}
			}
		}
	}
	// The tool tells a difference: a model with one byte changed must not compare equal.
	p, d := pts[0], testVM().Disks[0]
	bad := append([]byte(nil), model[0].disks[d.ID]...)
	bad[12345] ^= 0xff
	badPath := filepath.Join(dir, "bad.model")
	os.WriteFile(badPath, bad, 0o644)
	if b, err := exec.Command(qemu, "compare", "-f", "vhdx", "-F", "raw", filepath.Join(dir, p.ID+d.ID+".vhdx"), badPath).CombinedOutput(); err == nil {
		t.Fatalf("qemu-img compare found no difference with a changed byte: %s", b)
	}
}

func TestMaterializeRefusesExistingFileAndBadFormat(t *testing.T) {
	dir, r, w := newTestReplica(t)
	commitPoints(t, w, testVM(), rand.New(rand.NewPCG(1, 2)), 1)
	out := filepath.Join(dir, "exists.raw")
	os.WriteFile(out, []byte("keep me"), 0o644)
	err := r.Materialize(context.Background(), "", "disk0", out, FormatRaw)
	if err == nil || !strings.Contains(err.Error(), out) {
		t.Fatalf("materialize over an existing file: %v", err)
	}
	if b, _ := os.ReadFile(out); string(b) != "keep me" {
		t.Fatalf("existing file changed")
	}
	if err := r.Materialize(context.Background(), "", "disk0", filepath.Join(dir, "x.qcow2"), "qcow2"); err == nil {
		t.Fatal("format qcow2 accepted")
	}
	if err := r.Materialize(context.Background(), "", "nodisk", filepath.Join(dir, "y.raw"), FormatRaw); err == nil || !strings.Contains(err.Error(), "nodisk") {
		t.Fatalf("unknown disk: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "y.raw")); err == nil {
		t.Fatal("output left behind after a failed materialize")
	}
}

func TestDamagedMetadata(t *testing.T) {
	_, r, w := newTestReplica(t)
	commitPoints(t, w, testVM(), rand.New(rand.NewPCG(1, 3)), 1)
	w.Close()
	meta := filepath.Join(r.store.root, "job1", "vm-1", metaFile)
	good, _ := os.ReadFile(meta)
	for name, content := range map[string]string{
		"truncated":   string(good[:len(good)/2]),
		"garbage":     "\x00\x01not json",
		"future":      `{"version": 99, "vm": {"id": "vm-1"}}`,
		"no version":  `{"vm": {"id": "vm-1"}}`,
		"escape path": strings.Replace(string(good), `"chain": [`, `"chain": ["../../../etc/passwd", `, 1),
	} {
		t.Run(name, func(t *testing.T) {
			os.WriteFile(meta, []byte(content), 0o644)
			_, err := r.Points()
			var me *MetadataError
			if !errors.As(err, &me) || !strings.Contains(err.Error(), meta) {
				t.Fatalf("points on damaged metadata: %v (want an error naming %s)", err, meta)
			}
			if _, err := r.Lock(context.Background(), "x"); err == nil || !strings.Contains(err.Error(), meta) {
				t.Fatalf("lock on damaged metadata: %v", err)
			}
		})
	}
}

func TestMissingChainMember(t *testing.T) {
	dir, r, w := newTestReplica(t)
	commitPoints(t, w, testVM(), rand.New(rand.NewPCG(1, 4)), 3)
	pts, _ := r.Points()
	base := filepath.Join(r.store.root, "job1", "vm-1", "disks", "disk1", pts[0].ID+".vhdx")
	if err := os.Rename(base, base+".moved"); err != nil {
		t.Fatal(err)
	}
	_, err := r.OpenPoint(pts[2].ID, "disk1")
	if err == nil || !strings.Contains(err.Error(), base) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("open with a missing base: %v", err)
	}
	rep, err := r.Verify(context.Background(), pts[2].ID)
	if err == nil || rep.OK || !strings.Contains(err.Error(), base) {
		t.Fatalf("verify with a missing base: %v %+v", err, rep)
	}
	out := filepath.Join(dir, "fail.raw")
	if err := r.Materialize(context.Background(), pts[1].ID, "disk1", out, FormatRaw); err == nil {
		t.Fatal("materialize with a missing base succeeded")
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("materialize left an output")
	}
	// The other disk still reads.
	if _, err := r.OpenPoint(pts[2].ID, "disk0"); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyNamesTheBadBlock(t *testing.T) {
	_, r, w := newTestReplica(t)
	commitPoints(t, w, testVM(), rand.New(rand.NewPCG(1, 5)), 2)
	pts, _ := r.Points()
	if rep, err := r.Verify(context.Background(), ""); err != nil || !rep.OK || rep.Point != pts[1].ID {
		t.Fatalf("verify of an intact replica: %v %+v", err, rep)
	}
	sums := filepath.Join(r.store.root, "job1", "vm-1", "digests", "disk0", pts[1].ID+".sum")
	f, err := os.OpenFile(sums, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []int64{9, 4} {
		var s [16]byte
		f.ReadAt(s[:], digestHeaderSize+b*16)
		s[3] ^= 0x55
		f.WriteAt(s[:], digestHeaderSize+b*16)
	}
	f.Close()
	rep, err := r.Verify(context.Background(), pts[1].ID)
	var ve *VerifyError
	if !errors.As(err, &ve) || ve.Disk != "disk0" || ve.Block.Index != 4 || ve.Block.Offset != 4*(64<<10) || ve.Count != 2 {
		t.Fatalf("verify after damaging blocks 4 and 9: %v", err)
	}
	if !strings.Contains(err.Error(), "block 4 at offset 262144") || rep.OK || rep.Disks[0].FirstBad == nil || rep.Disks[1].Mismatches != 0 {
		t.Fatalf("report: %v %+v", err, rep)
	}
	// The older point is untouched.
	if _, err := r.Verify(context.Background(), pts[0].ID); err != nil {
		t.Fatal(err)
	}
}

func TestDigestFileChecks(t *testing.T) {
	tab := zeroTable(1<<20+512, 64<<10)
	path := filepath.Join(t.TempDir(), "x.sum")
	if err := writeDigestFile(path, tab); err != nil {
		t.Fatal(err)
	}
	got, err := readDigestFile(path, 1<<20+512)
	if err != nil || got.Len() != 17 || got.Sum(16) != digest.Zero(512) || got.Sum(0) != digest.Zero(64<<10) {
		t.Fatalf("round trip: %v", err)
	}
	if _, err := readDigestFile(path, 2<<20); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("size mismatch: %v", err)
	}
	b, _ := os.ReadFile(path)
	binary.LittleEndian.PutUint64(b[16:], 3)
	os.WriteFile(path, b, 0o644)
	if _, err := readDigestFile(path, 1<<20+512); err == nil || !strings.Contains(err.Error(), "at byte 16") {
		t.Fatalf("bad count: %v", err)
	}
	os.WriteFile(path, b[:20], 0o644)
	if _, err := readDigestFile(path, 1<<20+512); err == nil {
		t.Fatal("short file accepted")
	}
}

// tree lists every path under dir except under skip.
func tree(t *testing.T, dir, skip string) []string {
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if p == skip {
			return filepath.SkipDir
		}
		out = append(out, p)
		return nil
	})
	sort.Strings(out)
	return out
}

func TestBadNames(t *testing.T) {
	outer := fastTempDir(t)
	root := filepath.Join(outer, "ds")
	st, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(outer, "elsewhere"), 0o755)
	if err := os.Symlink(filepath.Join(outer, "elsewhere"), filepath.Join(root, "linked")); err != nil {
		t.Fatal(err)
	}
	before := tree(t, outer, root)
	bad := []string{"", ".", "..", "../x", "a/b", `a\b`, "a\x00b", "/abs", `C:\x`, "c:", "x/..", "con", "trail.", "tab\t"}
	ctx := context.Background()
	for _, name := range bad {
		for _, pair := range [][2]string{{name, "vm"}, {"job", name}} {
			if _, err := st.Replica(pair[0], pair[1]); !errors.Is(err, ErrBadName) {
				t.Errorf("Replica(%q, %q): %v, want ErrBadName", pair[0], pair[1], err)
			}
		}
		r, _ := st.Replica("job", "vm-1")
		w, err := r.Lock(ctx, "t")
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Prepare(VMInfo{ID: "vm-1", Disks: []DiskInfo{{ID: name, Size: 1 << 20}}}); !errors.Is(err, ErrBadName) {
			t.Errorf("Prepare with disk %q: %v, want ErrBadName", name, err)
		}
		w.Close()
	}
	if after := tree(t, outer, root); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Fatalf("bad names created files outside the datastore:\nbefore %v\nafter  %v", before, after)
	}
	// A folder of the datastore that links outside it is not followed.
	r, err := st.Replica("linked", "vm-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Lock(ctx, "t"); !errors.Is(err, ErrBadName) {
		t.Fatalf("lock through a link leaving the datastore: %v", err)
	}
	if _, err := r.Points(); err == nil {
		t.Fatal("points through a link leaving the datastore")
	}
	// A lock file planted as a link to a file outside is not opened.
	victim := filepath.Join(outer, "elsewhere", "victim")
	os.WriteFile(victim, []byte("precious"), 0o644)
	before = tree(t, outer, root)
	os.MkdirAll(filepath.Join(root, "job", "vm-2"), 0o755)
	os.Symlink(victim, filepath.Join(root, "job", "vm-2", "lock"))
	r2, _ := st.Replica("job", "vm-2")
	if w, err := r2.Lock(ctx, "t"); err == nil {
		w.Close()
		t.Fatal("lock through a planted link succeeded")
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious" {
		t.Fatalf("file outside the datastore changed: %q", b)
	}
	if after := tree(t, outer, root); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Fatalf("files created outside the datastore:\nbefore %v\nafter  %v", before, after)
	}
}

func TestLockIsExclusive(t *testing.T) {
	_, r, w := newTestReplica(t)
	_, err := r.Lock(context.Background(), "second")
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "locked by owner=test") {
		t.Fatalf("second lock: %v", err)
	}
	w.Close()
	w2, err := r.Lock(context.Background(), "third")
	if err != nil {
		t.Fatalf("lock after close: %v", err)
	}
	w2.Close()
}

func TestWriterChecks(t *testing.T) {
	_, r, w := newTestReplica(t)
	ctx := context.Background()
	ses, err := w.Begin(SessionSpec{CheckpointID: "c1", BlockSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	dw, err := ses.Disk("disk1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dw.WriteAt(make([]byte, 1024), 768<<10-512); err == nil {
		t.Fatal("write past the end accepted")
	}
	blk := make([]byte, 64<<10)
	blk[7] = 1
	dw.WriteAt(blk, 64<<10)
	if err := dw.SetDigest(1, digest.Of(make([]byte, 64<<10))); err == nil || !strings.Contains(err.Error(), "block 1") {
		t.Fatalf("wrong digest from the source: %v", err)
	}
	if err := dw.SetDigest(99, digest.Sum{}); err == nil {
		t.Fatal("digest of a block past the end accepted")
	}
	// A refused digest keeps the position from being acknowledged.
	if err := dw.Persist(128 << 10); err == nil || !strings.Contains(err.Error(), "block 1") {
		t.Fatalf("persist after a refused digest: %v", err)
	}
	if err := dw.Complete(); err == nil {
		t.Fatal("complete after a refused digest")
	}
	dw.Close()
	if dw, err = ses.Disk("disk1"); err != nil {
		t.Fatal(err)
	}
	if dw.Position() != 0 {
		t.Fatalf("position %d after a refused digest", dw.Position())
	}
	if _, err := ses.Commit(ctx); err == nil || !strings.Contains(err.Error(), "disk0") {
		t.Fatalf("commit with incomplete disks: %v", err)
	}
	if err := dw.Complete(); err != nil {
		t.Fatal(err)
	}
	if _, err := dw.WriteAt(blk, 0); err == nil {
		t.Fatal("write to a complete disk accepted")
	}
	dw.Close()
	// A retried Done reopens the complete disk, persists and completes again.
	if dw, err = ses.Disk("disk1"); err != nil {
		t.Fatal(err)
	}
	if dw.Position() != 768<<10 || dw.Persist(768<<10) != nil || dw.Complete() != nil {
		t.Fatalf("a complete disk reopened: position %d", dw.Position())
	}
	dw.Close()
	if pts, _ := r.Points(); len(pts) != 0 {
		t.Fatalf("an incomplete point is listed: %v", pts)
	}
	// A disk that changes size cannot continue the replica.
	vm := testVM()
	vm.Disks[1].Size += 1 << 20
	if err := w.Prepare(vm); err == nil || !strings.Contains(err.Error(), "disk1") {
		t.Fatalf("prepare with a resized disk: %v", err)
	}
	vm = testVM()
	vm.ID = "other"
	if err := w.Prepare(vm); err == nil {
		t.Fatal("prepare with another VM id accepted")
	}
	if err := w.ApplyRetention(ctx, 0); err == nil {
		t.Fatal("retention 0 accepted")
	}
}

// TestReadersDuringRetention reads and verifies while the writer commits and
// merges: a reader sees every listed point whole, never a chain changing
// under it.
func TestReadersDuringRetention(t *testing.T) {
	_, r, w := newTestReplica(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(testSeed(t), 9))
	done := make(chan struct{})
	errs := make(chan error, 1)
	reads := 0
	go func() {
		defer close(errs)
		for {
			select {
			case <-done:
				return
			default:
			}
			pts, err := r.Points()
			if err != nil {
				errs <- err
				return
			}
			for _, p := range pts {
				if _, err := r.Verify(ctx, p.ID); err != nil && !errors.Is(err, ErrNoPoint) {
					errs <- err
					return
				}
				reads++
			}
		}
	}()
	vm := testVM()
	for i := range 8 {
		commitPoints(t, w, vm, rng, 1)
		if err := w.ApplyRetention(ctx, 2); err != nil {
			t.Fatalf("retention %d: %v", i, err)
		}
	}
	close(done)
	if err := <-errs; err != nil {
		t.Fatalf("reader during retention: %v", err)
	}
	t.Logf("%d point verifies ran beside the merges", reads)
	// A reader holding a point keeps a merge waiting until its context ends.
	img, err := r.OpenPoint("", "disk0")
	if err != nil {
		t.Fatal(err)
	}
	commitPoints(t, w, vm, rng, 1)
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := w.ApplyRetention(short, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("retention while a reader holds a point: %v", err)
	}
	img.Close()
	if err := w.ApplyRetention(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if pts, _ := r.Points(); len(pts) != 1 {
		t.Fatalf("%d points after retention 1", len(pts))
	}
}

// TestDisksAddedAndRemoved: a disk added to the VM starts its own base; a
// disk removed leaves the points that have it readable, and retention
// removes its files with the last point holding it.
func TestDisksAddedAndRemoved(t *testing.T) {
	_, r, w := newTestReplica(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(testSeed(t), 11))
	vm := testVM()
	p1 := commitPoints(t, w, vm, rng, 1)[0]

	vm2 := testVM()
	vm2.Disks = []DiskInfo{vm.Disks[0], {ID: "disk2", Size: 512 << 10, SectorSize: 4096}}
	if err := w.Prepare(vm2); err != nil {
		t.Fatal(err)
	}
	p2 := commitPoints(t, w, vm2, rng, 1, p1)[0]
	pts, _ := r.Points()
	img, err := r.OpenPoint(pts[1].ID, "disk0")
	if err != nil {
		t.Fatal(err)
	}
	if d := firstDiff(readAllImage(t, img, img.Size()), p2.disks["disk0"]); d >= 0 {
		t.Fatalf("disk0 of the second point differs at %d", d)
	}
	img.Close()
	if _, err := r.OpenPoint(pts[1].ID, "disk1"); err == nil {
		t.Fatal("a removed disk is in the newer point")
	}
	img, err = r.OpenPoint(pts[0].ID, "disk1")
	if err != nil {
		t.Fatal(err)
	}
	if d := firstDiff(readAllImage(t, img, img.Size()), p1.disks["disk1"]); d >= 0 {
		t.Fatalf("removed disk differs at %d in the older point", d)
	}
	img.Close()
	img, err = r.OpenPoint(pts[1].ID, "disk2")
	if err != nil {
		t.Fatal(err)
	}
	if img.SectorSize() != 4096 || firstDiff(readAllImage(t, img, img.Size()), p2.disks["disk2"]) >= 0 {
		t.Fatal("added disk reads wrong")
	}
	img.Close()
	for _, p := range pts {
		if _, err := r.Verify(ctx, p.ID); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.ApplyRetention(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Verify(ctx, ""); err != nil {
		t.Fatal(err)
	}
	left, _ := filepath.Glob(filepath.Join(w.Dir(), "*", "disk1", "*"))
	if len(left) != 0 {
		t.Fatalf("files of the removed disk remain after its last point went: %v", left)
	}
}

func TestReferencePoints(t *testing.T) {
	_, r, w := newTestReplica(t)
	rng := rand.New(rand.NewPCG(1, 12))
	commitPoints(t, w, testVM(), rng, 2)
	pts, _ := r.Points()
	if err := w.SetReferencePoint(pts[0].ID, "ref-a"); err != nil {
		t.Fatal(err)
	}
	if err := w.SetReferencePoint(pts[1].ID, "ref-b"); err != nil {
		t.Fatal(err)
	}
	if err := w.SetReferencePoint("nope", "x"); !errors.Is(err, ErrNoPoint) {
		t.Fatalf("reference of an unlisted point: %v", err)
	}
	if ref, err := r.ReferencePoint(""); err != nil || ref != "ref-b" {
		t.Fatalf("newest reference: %q %v", ref, err)
	}
	if ref, err := r.ReferencePoint(pts[0].ID); err != nil || ref != "ref-a" {
		t.Fatalf("oldest reference: %q %v", ref, err)
	}
}

func TestSessionRecovery(t *testing.T) {
	_, r, w := newTestReplica(t)
	ctx := context.Background()
	p1 := commitPoints(t, w, testVM(), rand.New(rand.NewPCG(1, 13)), 1)
	ses, err := w.Begin(SessionSpec{CheckpointID: "c2", BlockSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	dw, _ := ses.Disk("disk0")
	blk := make([]byte, 64<<10)
	blk[0] = 9
	dw.WriteAt(blk, 0)
	if err := dw.Persist(64 << 10); err != nil {
		t.Fatal(err)
	}
	dw.Close()
	w.Close()

	// The same checkpoint with another block size cannot reuse the positions.
	w, err = r.Lock(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	ses, err = w.Begin(SessionSpec{CheckpointID: "c2", BlockSize: 128 << 10})
	if err != nil || ses.Resumed() {
		t.Fatalf("begin with another block size: resumed %v, %v", ses != nil && ses.Resumed(), err)
	}
	dw, _ = ses.Disk("disk0")
	if dw.Position() != 0 {
		t.Fatalf("position %d in a restarted session", dw.Position())
	}
	dw.WriteAt(blk, 0)
	dw.Persist(64 << 10)
	dw.Close()
	open, _ := w.OpenSession()
	w.Close()

	// A session whose file went missing is dropped; the next run starts anew.
	os.Remove(filepath.Join(r.store.root, "job1", "vm-1", "disks", "disk0", open.PointID+".vhdx"))
	w, err = r.Lock(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, ok := w.OpenSession(); ok {
		t.Fatal("a session without its disk file is still open")
	}
	if left, _ := filepath.Glob(filepath.Join(w.Dir(), "*", "*", open.PointID+"*")); len(left) != 0 {
		t.Fatalf("files of the dropped session remain: %v", left)
	}
	checkAgainstModel(t, r, p1, "")
}

// TestParallelDisks writes and persists every disk from its own goroutine,
// as the agent does, then commits.
func TestParallelDisks(t *testing.T) {
	_, r, w := newTestReplica(t)
	ctx := context.Background()
	ses, err := w.Begin(SessionSpec{CheckpointID: "p", BlockSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	vm := testVM()
	want := modelPoint{checkpoint: "p", disks: map[string][]byte{}}
	plans := map[string][]planWrite{}
	for i, d := range vm.Disks {
		plans[d.ID] = randomPlan(rand.New(rand.NewPCG(3, uint64(i))), d.Size, 64<<10, 12)
		want.disks[d.ID] = applyPlan(make([]byte, d.Size), plans[d.ID])
	}
	errs := make(chan error, len(vm.Disks))
	for _, d := range vm.Disks {
		go func() {
			dw, err := ses.Disk(d.ID)
			if err != nil {
				errs <- err
				return
			}
			defer dw.Close()
			for _, pw := range plans[d.ID] {
				if _, err := dw.WriteAt(pw.data, pw.off); err != nil {
					errs <- err
					return
				}
				if err := dw.Persist(pw.off + int64(len(pw.data))); err != nil {
					errs <- err
					return
				}
			}
			errs <- dw.Complete()
		}()
	}
	for range vm.Disks {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ses.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	checkAgainstModel(t, r, []modelPoint{want}, "")
}

// WriteBlock records the digest its caller checked over the block, as
// WriteAt would have computed it, and refuses what is not one whole block.
func TestWriteBlockRecordsTheGivenDigest(t *testing.T) {
	_, r, w := newTestReplica(t)
	ctx := context.Background()
	const bs = 64 << 10
	ses, err := w.Begin(SessionSpec{CheckpointID: "c1", BlockSize: bs})
	if err != nil {
		t.Fatal(err)
	}
	dw, err := ses.Disk("disk1")
	if err != nil {
		t.Fatal(err)
	}
	blk := make([]byte, bs)
	for i := range blk {
		blk[i] = byte(i * 7)
	}
	for _, bad := range []struct {
		i int64
		p []byte
	}{{1, blk[:bs-512]}, {-1, blk}, {dw.Size() / bs, blk}} {
		if err := dw.WriteBlock(bad.i, bad.p, digest.Of(bad.p)); err == nil {
			t.Fatalf("block %d of %d bytes accepted", bad.i, len(bad.p))
		}
	}
	if err := dw.WriteBlock(1, blk, digest.Of(blk)); err != nil {
		t.Fatal(err)
	}
	// The source's digest agrees; another one is refused as for WriteAt.
	if err := dw.SetDigest(1, digest.Of(blk)); err != nil {
		t.Fatal(err)
	}
	if err := dw.SetDigest(1, digest.Of(make([]byte, bs))); err == nil {
		t.Fatal("a digest other than the written block's accepted")
	}
	dw.Close()
	if dw, err = ses.Disk("disk1"); err != nil {
		t.Fatal(err)
	}
	if err := dw.WriteBlock(1, blk, digest.Of(blk)); err != nil {
		t.Fatal(err)
	}
	if err := dw.Complete(); err != nil {
		t.Fatal(err)
	}
	dw.Close()
	dw0, err := ses.Disk("disk0")
	if err != nil {
		t.Fatal(err)
	}
	if err := dw0.Complete(); err != nil {
		t.Fatal(err)
	}
	dw0.Close()
	if _, err := ses.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	table, err := r.Digests("", "disk1")
	if err != nil {
		t.Fatal(err)
	}
	if table.Sums[1] != digest.Of(blk) {
		t.Fatalf("digest of block 1 recorded as %s, want %s", table.Sums[1], digest.Of(blk))
	}
	if rep, err := r.Verify(ctx, ""); err != nil || !rep.OK {
		t.Fatalf("the point does not verify against its digests: %v", err)
	}
}
