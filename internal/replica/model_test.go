package replica

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// TestModelRandomSequences drives a replica through random runs: writes,
// interruptions (session dropped, writer reopened), resumes, lost checkpoints,
// commits and retention merges, and after every step compares every listed
// point with an in-memory model.
func TestModelRandomSequences(t *testing.T) {
	seed := testSeed(t)
	for round := range 2 {
		t.Run(fmt.Sprint("round", round), func(t *testing.T) {
			runModel(t, rand.New(rand.NewPCG(seed, uint64(round))), 40, nil)
		})
	}
}

// TestModelEncryptedAtRest runs the same sequences over a datastore
// encrypted at rest: every point reads, materializes and verifies as the
// model says (resumes, partial writes and retention merges included), and
// no file of the datastore holds a block of the plaintext.
func TestModelEncryptedAtRest(t *testing.T) {
	seed := testSeed(t)
	key, err := NewKey(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	runModel(t, rand.New(rand.NewPCG(seed, 99)), 40, key)
}

// openRun is the model of the session the replica holds open.
type openRun struct {
	checkpoint string
	blockSize  int64
	plans      map[string][]planWrite
	positions  map[string]int64
	complete   map[string]bool
	begun      bool
}

func runModel(t *testing.T, rng *rand.Rand, steps int, key *Key) {
	ctx := context.Background()
	dir := fastTempDir(t)
	st, err := OpenEncrypted(dir+"/ds", true, key)
	if err != nil {
		t.Fatal(err)
	}
	r, err := st.Replica("job1", "vm-1")
	if err != nil {
		t.Fatal(err)
	}
	vm := testVM()
	w, err := r.Lock(ctx, "model")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { w.Close() }()
	if err := w.Prepare(vm); err != nil {
		t.Fatal(err)
	}
	var points []modelPoint
	var run *openRun
	ckptSeq := 0
	newRun := func() *openRun {
		ckptSeq++
		bs := []int64{64 << 10, 128 << 10}[rng.IntN(2)]
		o := &openRun{checkpoint: fmt.Sprintf("ckpt-%d", ckptSeq), blockSize: bs,
			plans: map[string][]planWrite{}, positions: map[string]int64{}, complete: map[string]bool{}}
		for _, d := range vm.Disks {
			o.plans[d.ID] = randomPlan(rng, d.Size, bs, 1+rng.IntN(8))
		}
		return o
	}
	lastContent := func(id string, size int64) []byte {
		if len(points) == 0 {
			return make([]byte, size)
		}
		return points[len(points)-1].disks[id]
	}

	for step := range steps {
		switch a := rng.IntN(10); {
		case a < 7: // a run
			if run == nil || rng.IntN(4) == 0 {
				if run != nil {
					t.Logf("step %d: checkpoint %s lost, new run", step, run.checkpoint)
				}
				run = newRun()
			}
			ses, err := w.Begin(SessionSpec{RunID: fmt.Sprint("run", step), CheckpointID: run.checkpoint, ChangeTracking: "digest", BlockSize: run.blockSize})
			if err != nil {
				t.Fatalf("step %d: begin: %v", step, err)
			}
			if ses.Resumed() != run.begun {
				t.Fatalf("step %d: resumed %v, model expects %v", step, ses.Resumed(), run.begun)
			}
			run.begun = true
			interrupted := false
			for _, d := range vm.Disks {
				dw, err := ses.Disk(d.ID)
				if err != nil {
					t.Fatalf("step %d: disk: %v", step, err)
				}
				if dw.Position() != run.positions[d.ID] {
					t.Fatalf("step %d: disk %s resumes at %d, model says %d", step, d.ID, dw.Position(), run.positions[d.ID])
				}
				if run.complete[d.ID] {
					dw.Close()
					continue
				}
				stopAt := -1
				if rng.IntN(3) == 0 {
					stopAt = rng.IntN(len(run.plans[d.ID]) + 1)
				}
				for i, pw := range run.plans[d.ID] {
					if pw.off < run.positions[d.ID] {
						continue
					}
					if i == stopAt {
						break
					}
					if _, err := dw.WriteAt(pw.data, pw.off); err != nil {
						t.Fatalf("step %d: write: %v", step, err)
					}
					if rng.IntN(2) == 0 {
						setDigestOf(t, dw, pw)
					}
					if rng.IntN(3) == 0 {
						end := pw.off + int64(len(pw.data))
						if err := dw.Persist(end); err != nil {
							t.Fatalf("step %d: persist: %v", step, err)
						}
						run.positions[d.ID] = end
					}
				}
				if stopAt >= 0 {
					interrupted = true
					dw.Close()
					break
				}
				if err := dw.Complete(); err != nil {
					t.Fatalf("step %d: complete: %v", step, err)
				}
				run.complete[d.ID] = true
				run.positions[d.ID] = d.Size
				dw.Close()
			}
			if interrupted {
				t.Logf("step %d: run of %s interrupted; writer reopened", step, run.checkpoint)
				if err := w.Close(); err != nil {
					t.Fatal(err)
				}
				if w, err = r.Lock(ctx, "model"); err != nil {
					t.Fatal(err)
				}
				break
			}
			if rng.IntN(8) == 0 {
				t.Logf("step %d: all disks complete, commit deferred", step)
				break
			}
			if _, err := ses.Commit(ctx); err != nil {
				t.Fatalf("step %d: commit: %v", step, err)
			}
			mp := modelPoint{checkpoint: run.checkpoint, disks: map[string][]byte{}}
			for _, d := range vm.Disks {
				mp.disks[d.ID] = applyPlan(lastContent(d.ID, d.Size), run.plans[d.ID])
			}
			points = append(points, mp)
			t.Logf("step %d: committed %s (%d points)", step, run.checkpoint, len(points))
			run = nil
		case a < 9: // retention
			keep := 1 + rng.IntN(3)
			if err := w.ApplyRetention(ctx, keep); err != nil {
				t.Fatalf("step %d: retention %d: %v", step, keep, err)
			}
			if len(points) > keep {
				points = points[len(points)-keep:]
			}
			t.Logf("step %d: retention keeps %d (%d points)", step, keep, len(points))
		default: // the writer goes away without a word
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if w, err = r.Lock(ctx, "model"); err != nil {
				t.Fatal(err)
			}
		}
		checkAgainstModel(t, r, points, dir)
	}
	if key != nil {
		checkNoPlaintext(t, dir+"/ds", points)
	}
}

// checkNoPlaintext fails if any file under root holds a 512-byte run of a
// point's non-zero data.
func checkNoPlaintext(t *testing.T, root string, points []modelPoint) {
	t.Helper()
	var files [][]byte
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if b, err := os.ReadFile(p); err == nil {
				files = append(files, b)
			}
		}
		return nil
	})
	probes := 0
	for _, p := range points {
		for id, data := range p.disks {
			for off := 0; off+512 <= len(data); off += 32 << 10 {
				run := data[off : off+512]
				if bytes.Count(run, []byte{0}) > 256 {
					continue
				}
				probes++
				for _, f := range files {
					if bytes.Contains(f, run) {
						t.Fatalf("plaintext of disk %s at byte %d is in the datastore", id, off)
					}
				}
			}
		}
	}
	if probes == 0 && len(points) > 0 {
		t.Fatal("no plaintext to look for: the model wrote only zeros")
	}
	t.Logf("%d plaintext runs looked for in %d files", probes, len(files))
}
