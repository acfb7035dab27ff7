//go:build unix

package replica

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"github.com/replicator/replicator/internal/testkit"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The crash test runs a writer in a child process (this test binary, re-run
// for TestMain) and kills it with SIGKILL at random moments of its
// writes, commits and retention merges. After every kill the replica must
// read correctly as the crash left it, open (finishing any merge), and list
// only points that equal the model and verify.

const (
	crashEnvDir  = "REPLICA_CRASH_DIR"
	crashEnvSeed = "REPLICA_CRASH_SEED"
)

func crashVM() VMInfo {
	return VMInfo{ID: "vm-crash", Name: "db01", Generation: 1, Disks: []DiskInfo{
		{ID: "sys", Size: 5<<20 + 5*512, SectorSize: 512},
		{ID: "data", Size: 3 << 20, SectorSize: 512},
	}}
}

// crashCheckpoint names attempt a of point k; crashPointNumber reads k back.
func crashCheckpoint(k, a int) string { return fmt.Sprintf("ck-%d-%d", k, a) }

func crashPointNumber(ckpt string) (int, error) {
	parts := strings.Split(ckpt, "-")
	if len(parts) != 3 || parts[0] != "ck" {
		return 0, fmt.Errorf("checkpoint %q is not one of the crash test's", ckpt)
	}
	return strconv.Atoi(parts[1])
}

// crashPlan is what the run for point k writes: the same for every attempt,
// so that a resumed, restarted or discarded-and-redone run ends equal.
func crashPlan(seed uint64, k int, d DiskInfo) (int64, []planWrite) {
	bs := int64(64 << 10)
	if k%3 == 0 {
		bs = 128 << 10
	}
	rng := rand.New(rand.NewPCG(seed, uint64(k)*1000+uint64(len(d.ID))))
	return bs, randomPlan(rng, d.Size, bs, 4+rng.IntN(20))
}

// crashModel returns the bytes of every disk at point k (memoized).
type crashModel struct {
	seed uint64
	vm   VMInfo
	at   map[int]map[string][]byte
}

func (m *crashModel) point(k int) map[string][]byte {
	if k == 0 {
		z := map[string][]byte{}
		for _, d := range m.vm.Disks {
			z[d.ID] = make([]byte, d.Size)
		}
		return z
	}
	if c, ok := m.at[k]; ok {
		return c
	}
	prev := m.point(k - 1)
	c := map[string][]byte{}
	for _, d := range m.vm.Disks {
		_, plan := crashPlan(m.seed, k, d)
		c[d.ID] = applyPlan(prev[d.ID], plan)
	}
	m.at[k] = c
	// Listed points are the newest few: older contents are not needed again.
	for old := range m.at {
		if old < k-4 {
			delete(m.at, old)
		}
	}
	return c
}

// TestMain runs the writer that TestCrashSIGKILL kills when the test binary
// is started as its child; otherwise the tests.
func TestMain(m *testing.M) {
	if dir := os.Getenv(crashEnvDir); dir != "" {
		seed, _ := strconv.ParseUint(os.Getenv(crashEnvSeed), 10, 64)
		if err := crashWriter(dir, seed); err != nil {
			fmt.Fprintln(os.Stderr, "crash writer:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// crashWriter writes points forever, journaling what it was told is durable.
func crashWriter(dir string, seed uint64) error {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(seed, uint64(time.Now().UnixNano())))
	journal, err := os.OpenFile(filepath.Join(dir, "journal"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	note := func(format string, args ...any) error {
		if _, err := fmt.Fprintf(journal, format+"\n", args...); err != nil {
			return err
		}
		return journal.Sync()
	}
	st, err := Open(filepath.Join(dir, "ds"))
	if err != nil {
		return err
	}
	r, err := st.Replica("job", crashVM().ID)
	if err != nil {
		return err
	}
	w, err := r.Lock(ctx, "crash-writer")
	if err != nil {
		return err
	}
	vm := crashVM()
	if err := w.Prepare(vm); err != nil {
		return err
	}
	for {
		pts, err := r.Points()
		if err != nil && !errors.Is(err, ErrNoReplica) {
			return err
		}
		k := 1
		if len(pts) > 0 {
			last, err := crashPointNumber(pts[len(pts)-1].CheckpointID)
			if err != nil {
				return err
			}
			k = last + 1
		}
		ckpt := crashCheckpoint(k, rng.IntN(1000))
		if open, ok := w.OpenSession(); ok && rng.IntN(4) > 0 {
			if n, err := crashPointNumber(open.CheckpointID); err == nil && n == k {
				ckpt = open.CheckpointID
			}
		}
		bs, _ := crashPlan(seed, k, vm.Disks[0])
		ses, err := w.Begin(SessionSpec{RunID: "crash", CheckpointID: ckpt, ChangeTracking: "digest", BlockSize: bs})
		if err != nil {
			return err
		}
		for _, d := range vm.Disks {
			dw, err := ses.Disk(d.ID)
			if err != nil {
				return err
			}
			_, plan := crashPlan(seed, k, d)
			pos := dw.Position()
			for i, pw := range plan {
				if pw.off < pos || dw.IsComplete() {
					continue
				}
				if _, err := dw.WriteAt(pw.data, pw.off); err != nil {
					return err
				}
				if i%3 == 2 {
					end := pw.off + int64(len(pw.data))
					if err := dw.Persist(end); err != nil {
						return err
					}
					if err := note("persist %s %s %d", ckpt, d.ID, end); err != nil {
						return err
					}
				}
			}
			if err := dw.Complete(); err != nil {
				return err
			}
			dw.Close()
		}
		if _, err := ses.Commit(ctx); err != nil {
			return err
		}
		if err := note("commit %d", k); err != nil {
			return err
		}
		if err := w.ApplyRetention(ctx, 1+rng.IntN(3)); err != nil {
			return err
		}
	}
}

// crashJournal is what the killed writer was told was durable.
type crashJournal struct {
	lastCommit int
	persisted  map[string]int64 // "<ckpt> <disk>" → position
}

func readCrashJournal(t *testing.T, path string) crashJournal {
	j := crashJournal{persisted: map[string]int64{}}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return j
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		switch {
		case len(fs) == 2 && fs[0] == "commit":
			j.lastCommit, _ = strconv.Atoi(fs[1])
		case len(fs) == 4 && fs[0] == "persist":
			p, _ := strconv.ParseInt(fs[3], 10, 64)
			j.persisted[fs[1]+" "+fs[2]] = p
		}
		// A torn last line (killed mid-write) matches neither form.
	}
	return j
}

func TestCrashSIGKILL(t *testing.T) {
	testkit.Long(t, "kills a writer process 50 times")
	seed := testSeed(t)
	dir := fastTempDir(t)
	model := &crashModel{seed: seed, vm: crashVM(), at: map[int]map[string][]byte{}}
	rng := rand.New(rand.NewPCG(seed, 7))
	ctx := context.Background()
	st, err := Open(filepath.Join(dir, "ds"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := st.Replica("job", crashVM().ID)
	if err != nil {
		t.Fatal(err)
	}
	merges := 0
	for kill := range 50 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashEnvDir+"="+dir, crashEnvSeed+"="+strconv.FormatUint(seed, 10))
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(20+rng.IntN(250)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("kill %d: the writer ended before it was killed (%v): %s", kill, err, stderr.String())
		}
		j := readCrashJournal(t, filepath.Join(dir, "journal"))

		// As the crash left it, before any recovery.
		if _, err := os.Stat(filepath.Join(dir, "ds", "job", crashVM().ID, metaFile)); err != nil {
			continue // killed before the replica was prepared
		}
		_, m, err := r.load()
		if err != nil {
			t.Fatalf("kill %d: %v", kill, err)
		}
		if m.Merge != nil {
			merges++
		}
		// (Recovery never touches the digests of listed points: they are
		// verified once, after it.)
		checkCrashReplica(t, kill, r, model, j, "as left", false)

		// Recovery by the next writer, then again.
		w, err := r.Lock(ctx, "check")
		if err != nil {
			t.Fatalf("kill %d: take over the lock of the killed writer: %v", kill, err)
		}
		if _, m, _ := r.load(); m.Merge != nil {
			t.Fatalf("kill %d: merge still pending after the next writer opened", kill)
		}
		if open, ok := w.OpenSession(); ok {
			for key, pos := range j.persisted {
				fs := strings.Fields(key)
				if fs[0] == open.CheckpointID && open.Positions[fs[1]] < pos {
					t.Fatalf("kill %d: session %s disk %s resumes at %d, below the acknowledged %d", kill, fs[0], fs[1], open.Positions[fs[1]], pos)
				}
			}
		}
		checkCrashReplica(t, kill, r, model, j, "recovered", true)
		w.Close()
	}
	pts, _ := r.Points()
	last := 0
	if len(pts) > 0 {
		last, _ = crashPointNumber(pts[len(pts)-1].CheckpointID)
	}
	t.Logf("50 kills: newest point %d, %d kills left a merge pending", last, merges)
	if last < 3 {
		t.Fatalf("the writer committed only %d points in 50 runs: the test did not exercise commits and merges", last)
	}
}

func checkCrashReplica(t *testing.T, kill int, r *Replica, model *crashModel, j crashJournal, when string, verify bool) {
	t.Helper()
	pts, err := r.Points()
	if err != nil {
		t.Fatalf("kill %d (%s): points: %v", kill, when, err)
	}
	var want []modelPoint
	prevK := 0
	for _, p := range pts {
		k, err := crashPointNumber(p.CheckpointID)
		if err != nil {
			t.Fatalf("kill %d (%s): %v", kill, when, err)
		}
		if prevK != 0 && k != prevK+1 {
			t.Fatalf("kill %d (%s): points %d and %d listed without %d between", kill, when, prevK, k, prevK+1)
		}
		prevK = k
		want = append(want, modelPoint{checkpoint: p.CheckpointID, disks: model.point(k)})
	}
	if prevK < j.lastCommit {
		t.Fatalf("kill %d (%s): point %d was committed but the newest listed is %d", kill, when, j.lastCommit, prevK)
	}
	if prevK > j.lastCommit+1 {
		t.Fatalf("kill %d (%s): point %d listed, only %d were ever committed", kill, when, prevK, j.lastCommit+1)
	}
	checkPoints(t, r, want, "", verify)
}
