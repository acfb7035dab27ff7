//go:build unix

package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/diskimage"
	"github.com/replicator/replicator/internal/exclude"
	"github.com/replicator/replicator/internal/provider/lab"
	"github.com/replicator/replicator/internal/replica"
	"github.com/replicator/replicator/internal/replica/replicatest"
	"github.com/replicator/replicator/internal/testkit"
)

// The reliability suite: whole-stack runs under the faults a DR link and its
// hosts see — processes killed with SIGKILL, a slow and distant network,
// half-open connections, backup windows that close run after run, a guest
// that keeps writing — each ending with every replica compared byte for
// byte with its source and every restore point verified against its
// digests. `make reliability` repeats them; `go test ./...` runs each once.

// startRun starts one run of the job and returns it.
func (h *harness) startRun(ctx context.Context, in contract.ReplicationInput) client.WorkflowRun {
	h.t.Helper()
	run, err := h.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: fmt.Sprintf("%s-%d", in.Job, time.Now().UnixNano()), TaskQueue: "replication"},
		contract.ReplicationWorkflow, in)
	if err != nil {
		h.t.Fatal(err)
	}
	return run
}

// waitFor is testkit.Eventually for a condition that only holds or not.
func waitFor(t *testing.T, what string, limit, pause time.Duration, cond func() bool) {
	t.Helper()
	testkit.Eventually(t, limit, pause, func() error {
		if cond() {
			return nil
		}
		return fmt.Errorf("%s did not happen", what)
	})
}

// verifyAllPoints checks every restore point of every VM of the result
// against the digests it recorded.
func (h *harness) verifyAllPoints(res contract.ReplicationResult) {
	h.t.Helper()
	store, err := replica.Open(h.cfg.Agent.Datastore)
	if err != nil {
		h.t.Fatal(err)
	}
	replicatest.RequirePointsVerify(h.t, store, res)
}

// TestReliabilityWorkerKilledFiveTimes kills the worker that runs the
// workflows and reads the source (roles jobs and proxy, in a child process)
// with SIGKILL five times while disks are being sent, starting a new one
// each time. The run finishes from its durable history, every transfer
// continuing from the agent's acknowledged position.
func TestReliabilityWorkerKilledFiveTimes(t *testing.T) {
	h := newHarness(t, roleSet{target: true}, true, nil)
	h.proxy.setRate(2 << 20)
	worker := startChild(t, h, "jobs,proxy")
	defer func() { kill(t, worker) }()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	watch := replicatest.WatchPositions(h.cfg.Agent.Datastore, "demo")
	run := h.startRun(ctx, contract.ReplicationInput{Job: "demo"})
	for kills := 0; kills < 5; kills++ {
		// Each worker gets some of its sends durable, then dies.
		from := replicatest.Total(replicatest.Durable(h.cfg.Agent.Datastore, "demo"))
		waitFor(t, fmt.Sprintf("durable progress before kill %d", kills+1), 3*time.Minute, 5*time.Millisecond, func() bool {
			return replicatest.Total(replicatest.Durable(h.cfg.Agent.Datastore, "demo")) > from
		})
		kill(t, worker)
		worker = startChild(t, h, "jobs,proxy")
	}
	h.proxy.setRate(0)
	var res contract.ReplicationResult
	if err := run.Get(ctx, &res); err != nil {
		t.Fatal(err)
	}
	watch.Check(t)
	requireSuccess(t, res)
	if !replicatest.AnyResumed(res) {
		t.Fatalf("no disk resumed from an acknowledged position: %+v", res)
	}
	h.checkReplicaMatchesSource(res)
	h.verifyAllPoints(res)
}

// TestReliabilityAgentKilledThreeTimes kills the agent (role target, in a
// child process) with SIGKILL twice while it writes a disk and once while it
// commits a restore point (in the middle of the retention merge that commit
// does), starting a new one each time on the same datastore.
func TestReliabilityAgentKilledThreeTimes(t *testing.T) {
	h := newHarness(t, roleSet{jobs: true, proxy: true}, true, func(c *config.Config) { c.Jobs[0].Retention = 1 })
	startAgent := func() *exec.Cmd {
		cmd := startChild(t, h, "target")
		waitForPort(t, h.cfg.Agent.Listen, time.Minute)
		return cmd
	}
	agentProc := startAgent()
	defer func() { kill(t, agentProc) }()
	web01 := contract.ReplicationInput{Job: "demo", VMs: []string{"web01"}}
	first := h.run(web01)
	requireSuccess(t, first)

	// Change 40% of the disk, so that the transfer and the commit's merge
	// of the new point into the base last long enough to be interrupted.
	host := lab.New("hv01", h.cfg.Hosts[0].Path)
	if err := host.Write(context.Background(), "web01", 0, 40, 7); err != nil {
		t.Fatal(err)
	}
	h.proxy.setRate(20 << 20)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	watch := replicatest.WatchPositions(h.cfg.Agent.Datastore, "demo")
	run := h.startRun(ctx, web01)
	for kills := 0; kills < 2; kills++ {
		// Each agent makes some of the disk durable, then dies while writing.
		from := replicatest.Total(replicatest.Durable(h.cfg.Agent.Datastore, "demo"))
		waitFor(t, fmt.Sprintf("durable writes before kill %d", kills+1), 3*time.Minute, 5*time.Millisecond, func() bool {
			return replicatest.Total(replicatest.Durable(h.cfg.Agent.Datastore, "demo")) > from
		})
		kill(t, agentProc)
		agentProc = startAgent()
	}
	h.proxy.setRate(0)
	meta := filepath.Join(h.cfg.Agent.Datastore, "demo", first.VMs[0].ID, "replica.json")
	waitFor(t, "the retention merge of the commit", 3*time.Minute, 5*time.Millisecond, func() bool {
		b, err := os.ReadFile(meta)
		return err == nil && bytes.Contains(b, []byte(`"merge"`))
	})
	kill(t, agentProc)
	agentProc = startAgent()

	var res contract.ReplicationResult
	if err := run.Get(ctx, &res); err != nil {
		t.Fatal(err)
	}
	watch.Check(t)
	requireSuccess(t, res)
	h.checkReplicaMatchesSource(res)
	h.verifyAllPoints(res)
	store, _ := replica.Open(h.cfg.Agent.Datastore)
	r, _ := store.Replica("demo", res.VMs[0].ID)
	if points, err := r.Points(); err != nil || len(points) != 1 || points[0].ID != res.VMs[0].RestorePoint {
		t.Fatalf("retention 1: want only the new point %s, got %+v (%v)", res.VMs[0].RestorePoint, points, err)
	}
}

// TestReliabilityLatencyAndBandwidth replicates the demo job over a link of
// 8 MiB/s per connection with 60 ms of latency each way.
func TestReliabilityLatencyAndBandwidth(t *testing.T) {
	h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, true, nil)
	h.proxy.setRate(8 << 20)
	h.proxy.setLatency(60 * time.Millisecond)
	res := h.run(contract.ReplicationInput{Job: "demo"})
	requireSuccess(t, res)
	h.checkReplicaMatchesSource(res)
	h.verifyAllPoints(res)
}

// TestReliabilityHalfOpenConnections makes two data connections half-open
// mid-transfer (bytes stop flowing both ways, neither end is told): the
// proxy gives each up after the target's stallTimeout and resumes.
func TestReliabilityHalfOpenConnections(t *testing.T) {
	h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, true, func(c *config.Config) {
		c.Targets[0].StallTimeout = 5 * time.Second
	})
	h.proxy.setRate(4 << 20)
	h.proxy.stallNext(2, 2<<20)
	res := h.run(contract.ReplicationInput{Job: "demo", VMs: []string{"web01"}})
	requireSuccess(t, res)
	if n := h.proxy.stalled.Load(); n != 2 {
		t.Fatalf("%d connections went half-open, want 2", n)
	}
	h.checkReplicaMatchesSource(res)
	h.verifyAllPoints(res)
}

// TestReliabilityWindowsCloseRunAfterRun gives the job a backup window too
// short for its disks over a slow link: run after run ends partial, each
// continuing where the last stopped, until one finishes.
func TestReliabilityWindowsCloseRunAfterRun(t *testing.T) {
	h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, true, func(c *config.Config) {
		// The window runs from the start of the run, so it also holds the
		// checks before any transfer (source, target, data channel, VM
		// inventory, datastore space, checkpoint sweep); the agent makes
		// received data durable every 2 s, and what a window cut off after
		// the last of those is sent again by the next run. The window must
		// therefore leave the transfers more than 2 s past the checks, even
		// on a loaded machine, for a run to move the durable position on.
		c.Jobs[0].Window = 6 * time.Second
	})
	h.proxy.setRate(1 << 19) // 512 KiB/s per disk: several windows for web01 and db01
	in := contract.ReplicationInput{Job: "demo"}
	positions := map[string]int64{} // vm/disk → position after the last run
	partial := 0
	var res contract.ReplicationResult
	for runs := 1; ; runs++ {
		if runs > 25 {
			t.Fatalf("no run finished after %d runs", runs-1)
		}
		res = h.run(in)
		t.Logf("run %d: %s", runs, res.Status)
		if res.Status == contract.StatusSuccess {
			break
		}
		if res.Status != contract.StatusPartial {
			t.Fatalf("run %d ended %s: %+v", runs, res.Status, res)
		}
		partial++
		progressed := false
		for _, vm := range res.VMs {
			for _, d := range vm.Disks {
				key := vm.ID + "/" + d.ID
				pos := d.Position
				if d.Status == contract.StatusSuccess {
					pos = d.Size
				}
				if pos < positions[key] {
					t.Fatalf("run %d: %s disk %s went back from %d to %d", runs, vm.Name, d.ID, positions[key], pos)
				}
				if pos > positions[key] {
					progressed = true
				}
				positions[key] = pos
			}
		}
		if !progressed {
			t.Fatalf("run %d made no progress: %+v", runs, res)
		}
	}
	if partial < 3 {
		t.Fatalf("only %d runs ended partial: the windows did not interrupt the disks", partial)
	}
	t.Logf("%d partial runs before the one that finished", partial)
	requireSuccess(t, res)
	h.checkReplicaMatchesSource(res)
	h.verifyAllPoints(res)
}

// guestWriter writes 64 KiB chunks at random places of a lab disk, one
// after another, each carrying its sequence number, so that the content of
// the disk after any write k is known.
type guestWriter struct {
	host    *lab.Host
	vm      string
	size    int64
	chunks  []int64 // offsets that may be written (none in excluded ranges or partition tables)
	mu      sync.Mutex
	journal []int64 // journal[k-1] is the offset write k went to
	stop    chan struct{}
	done    chan error
}

const chunkSize = 64 << 10

func chunkData(seq int64, off int64) []byte {
	b := make([]byte, chunkSize)
	r := rand.New(rand.NewPCG(uint64(seq), uint64(off)))
	for i := 16; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	copy(b, "RPLW")
	binary.LittleEndian.PutUint64(b[4:], uint64(seq))
	binary.LittleEndian.PutUint32(b[12:], uint32(off/chunkSize))
	return b
}

// chunkSeq returns the sequence number a chunk read back carries, 0 for
// none.
func chunkSeq(b []byte, off int64) int64 {
	if string(b[:4]) != "RPLW" || binary.LittleEndian.Uint32(b[12:]) != uint32(off/chunkSize) {
		return 0
	}
	return int64(binary.LittleEndian.Uint64(b[4:]))
}

func (g *guestWriter) start() {
	g.stop, g.done = make(chan struct{}), make(chan error, 1)
	r := rand.New(rand.NewPCG(1, 2))
	go func() {
		for seq := int64(1); ; seq++ {
			select {
			case <-g.stop:
				g.done <- nil
				return
			case <-time.After(10 * time.Millisecond):
			}
			off := g.chunks[r.IntN(len(g.chunks))]
			g.mu.Lock()
			g.journal = append(g.journal, off)
			g.mu.Unlock()
			if err := g.host.WriteAt(context.Background(), g.vm, 0, chunkData(seq, off), off); err != nil {
				g.done <- fmt.Errorf("guest write %d at %d: %w", seq, off, err)
				return
			}
		}
	}()
}

func (g *guestWriter) writes() int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return int64(len(g.journal))
}

// TestReliabilitySourceWrittenDuringRuns keeps writing to web01's disk
// during three runs (a full copy, then change tracking, then digests): each
// restore point must hold the disk exactly as it was after some write k —
// every chunk written up to k with its last such write, none after, the rest
// of the disk as it was — and k must lie between the writes done before the
// run started and those done when it ended. That is what a point-in-time
// checkpoint promises.
func TestReliabilitySourceWrittenDuringRuns(t *testing.T) {
	h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, false, nil)
	ctx := context.Background()
	host := lab.New("hv01", h.cfg.Hosts[0].Path)
	vms, err := host.VMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var diskPath string
	for _, vm := range vms {
		if vm.Name == "web01" {
			diskPath = vm.Disks[0].Path
		}
	}
	src, err := diskimage.Open(diskPath)
	if err != nil {
		t.Fatal(err)
	}
	size := src.Size()
	_, excluded, err := exclude.Analyze(ctx, src, size, src.SectorSize(), exclude.Options{Swap: true})
	if err != nil {
		t.Fatal(err)
	}
	original := make([]byte, size)
	if _, err := src.ReadAt(original, 0); err != nil {
		t.Fatal(err)
	}
	src.Close()
	g := &guestWriter{host: host, vm: "web01", size: size}
	for off := int64(1 << 20); off+chunkSize <= size-1<<20; off += chunkSize {
		free := true
		for _, e := range excluded {
			if e.Offset < off+chunkSize && e.Offset+e.Length > off {
				free = false
			}
		}
		if free {
			g.chunks = append(g.chunks, off)
		}
	}
	g.start()

	for i, mode := range []string{"auto", "auto", "digest"} {
		h.cfg.Jobs[0].ChangeTracking = mode
		h.writeConfig()
		before := g.writes()
		res := h.run(contract.ReplicationInput{Job: "demo", VMs: []string{"web01"}})
		after := g.writes()
		requireSuccess(t, res)
		want := []string{contract.TrackingFull, contract.TrackingRCT, contract.TrackingDigest}[i]
		if got := res.VMs[0].Disks[0].ChangeTracking; got != want {
			t.Fatalf("run %d: change tracking %s, want %s", i+1, got, want)
		}
		k := h.checkPointInTime(res, g, original, excluded)
		// The write being made when the run started may land either side.
		if k < before-1 || k > after {
			t.Fatalf("run %d: the point holds the disk after write %d, but %d writes were done before the run and %d when it ended", i+1, k, before, after)
		}
		t.Logf("run %d (%s): the point is the disk after write %d (writes %d..%d during the run)", i+1, want, k, before, after)
	}
	close(g.stop)
	if err := <-g.done; err != nil {
		t.Fatal(err)
	}
	h.verifyAllPoints(contract.ReplicationResult{Job: "demo", VMs: []contract.VMResult{{ID: vmID(t, host, "web01"), Name: "web01"}}})
}

func vmID(t *testing.T, host *lab.Host, name string) string {
	t.Helper()
	vms, err := host.VMs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, vm := range vms {
		if vm.Name == name {
			return vm.ID
		}
	}
	t.Fatalf("no lab VM %s", name)
	return ""
}

// checkPointInTime finds the write k the restore point of res reflects and
// checks the whole disk against the model of the disk after write k.
func (h *harness) checkPointInTime(res contract.ReplicationResult, g *guestWriter, original []byte, excluded []exclude.Range) int64 {
	h.t.Helper()
	store, err := replica.Open(h.cfg.Agent.Datastore)
	if err != nil {
		h.t.Fatal(err)
	}
	r, err := store.Replica(res.Job, res.VMs[0].ID)
	if err != nil {
		h.t.Fatal(err)
	}
	img, err := r.OpenPoint(res.VMs[0].RestorePoint, "0")
	if err != nil {
		h.t.Fatal(err)
	}
	defer img.Close()
	got := make([]byte, g.size)
	if _, err := img.ReadAt(got, 0); err != nil {
		h.t.Fatal(err)
	}
	g.mu.Lock()
	journal := append([]int64(nil), g.journal...)
	g.mu.Unlock()
	written := map[int64]bool{}
	for _, off := range journal {
		written[off] = true
	}
	var k int64
	for off := range written {
		k = max(k, chunkSeq(got[off:off+chunkSize], off))
	}
	if k > int64(len(journal)) {
		h.t.Fatalf("the point holds write %d, which was never made", k)
	}
	// The model: the original disk, then writes 1..k.
	want := append([]byte(nil), original...)
	for seq := int64(1); seq <= k; seq++ {
		off := journal[seq-1]
		copy(want[off:], chunkData(seq, off))
	}
	for _, e := range excluded {
		clear(want[e.Offset : e.Offset+e.Length])
		clear(got[e.Offset : e.Offset+e.Length])
	}
	if !bytes.Equal(got, want) {
		var bad []int64
		for off := int64(0); off < g.size; off += chunkSize {
			if !bytes.Equal(got[off:off+chunkSize], want[off:off+chunkSize]) {
				bad = append(bad, off)
			}
		}
		sort.Slice(bad, func(i, j int) bool { return bad[i] < bad[j] })
		h.t.Fatalf("point %s is not the disk after write %d: %d chunks differ, first at byte %d (holds write %d)",
			res.VMs[0].RestorePoint, k, len(bad), bad[0], chunkSeq(got[bad[0]:bad[0]+chunkSize], bad[0]))
	}
	return k
}
