//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/trace"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/provider/lab"
	"github.com/replicator/replicator/internal/synth"
	"github.com/replicator/replicator/internal/testkit"
	"github.com/replicator/replicator/internal/zeros"
)

// Settings of TestFullCopyAgainstRsync (`make bench` sets them; the defaults
// keep `go test ./...` short).
const (
	fullCopySizeEnv = "REPLICATOR_FULLCOPY_MIB"  // disk size in MiB (default 16)
	fullCopyRunsEnv = "REPLICATOR_FULLCOPY_RUNS" // measured runs of each (default 1)
	// fullCopyTraceEnv names a folder for an execution trace of every run
	// (go tool trace): where the time off the CPU goes.
	fullCopyTraceEnv = "REPLICATOR_FULLCOPY_TRACE"
	// fullCopyRawEnv names a folder to keep the raw file of each content
	// in (random.raw, mixed.raw): the bytes rsync copied, for commands run
	// by hand on them afterwards.
	fullCopyRawEnv = "REPLICATOR_FULLCOPY_RAW"
	// fullCopyWarmEnv=0 starts each command on whatever memory the last
	// one left (see warmMemory).
	fullCopyWarmEnv = "REPLICATOR_FULLCOPY_WARM"
)

// TestFullCopyAgainstRsync replicates lab VMs whose one disk holds random
// bytes (what encrypted volumes and compressed files look like) or mixed
// content, each once through the whole stack (a ReplicationWorkflow run on
// the embedded Temporal server: prepare, checkpoint, begin, the transfer over
// mutual TLS, commit, reference point), and copies the same bytes with
// `rsync -z --whole-file` over rsync's protocol through a pipe, runs of the
// two interleaved, each command first in turn, each started on memory the
// machine holds (warmMemory). Every run must succeed and
// the replica must equal the source; the figures (medians) are logged, not
// held to a limit: machines differ.
func TestFullCopyAgainstRsync(t *testing.T) {
	testkit.Long(t, "full copies against rsync")
	if _, err := exec.LookPath("rsync"); err != nil {
		testkit.Precondition(t, "rsync is needed: %v", err)
		return
	}
	sizeMiB, runs := 16, 1
	if v := os.Getenv(fullCopySizeEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 8 {
			t.Fatalf("%s=%q: want a size in MiB of at least 8", fullCopySizeEnv, v)
		}
		sizeMiB = n
	}
	if v := os.Getenv(fullCopyRunsEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive number of runs", fullCopyRunsEnv, v)
		}
		runs = n
	}
	// Whichever command runs first after the disk is written pays for
	// memory the host took back (BENCHMARKS.md), unless warmMemory evens
	// that out: with an odd number of runs one command goes first once more
	// than the other.
	if runs > 1 && runs%2 != 0 {
		t.Logf("%d runs: rsync goes first in %d, the replicator in %d; an even number of runs is fair to both", runs, (runs+1)/2, runs/2)
	}
	size := int64(sizeMiB) << 20
	kinds := []string{"random", "mixed"}
	h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, false, func(c *config.Config) {
		c.Jobs[0].VMs = []string{"random00"}
		c.Jobs[0].Exclude.Swap = false
	})
	warm := func() {}
	if os.Getenv(fullCopyWarmEnv) != "0" {
		warm = func() { warmMemory(t, size+size/2) }
	}
	ctx := context.Background()
	labPath := h.cfg.Hosts[0].Path
	host := lab.New("hv01", labPath)
	// Each run replicates a VM of its own, so that every run is a full
	// copy; its lab disk is written before and removed after the run.
	createVM := func(name string, content []byte) {
		if _, err := lab.CreateVM(labPath, name, []int64{size}); err != nil {
			t.Fatal(err)
		}
		const chunk = 4 << 20
		for off := int64(0); off < size; off += chunk {
			p := content[off:min(off+chunk, size)]
			if zeros.All(p) {
				continue // never written: the lab disk leaves it unallocated
			}
			if err := host.WriteAt(ctx, name, 0, p, off); err != nil {
				t.Fatal(err)
			}
		}
	}

	// replicate runs the job over one VM: the warm-up run's replica is
	// compared with its source, the first measured run's time broken down.
	replicate := func(name string, i int) time.Duration {
		h.cfg.Jobs[0].VMs = []string{name}
		h.writeConfig()
		syscall.Sync()
		warm()
		id := fmt.Sprintf("full-%s-%d", name, time.Now().UnixNano())
		stopTrace := traceRun(t, name)
		began := time.Now()
		run, err := h.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: "replication"},
			contract.ReplicationWorkflow, contract.ReplicationInput{Job: "demo"})
		if err != nil {
			t.Fatal(err)
		}
		var res contract.ReplicationResult
		if err := run.Get(ctx, &res); err != nil {
			t.Fatalf("run: %v", err)
		}
		wall := time.Since(began)
		stopTrace()
		requireSuccess(t, res)
		if i == 0 {
			h.checkReplicaMatchesSource(res)
		}
		if i == 1 {
			t.Logf("%s, where the time of the run went:", name)
			logActivityTimes(t, h.c, id, run.GetRunID(), wall)
		}
		return wall
	}
	rsyncZ := func(raw string) time.Duration {
		dst := filepath.Join(h.dir, "rsync-out")
		os.RemoveAll(dst)
		if err := os.MkdirAll(dst, 0o700); err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dst)
		syscall.Sync()
		warm()
		began := time.Now()
		out, err := exec.Command("rsync", "-z", "--whole-file", "-e", `sh -c 'shift; exec "$@"' sh`, raw, "localhost:"+dst+"/").CombinedOutput()
		wall := time.Since(began)
		if err != nil {
			t.Fatalf("rsync -z: %v: %s", err, out)
		}
		got, err := os.ReadFile(filepath.Join(dst, filepath.Base(raw)))
		if err != nil {
			t.Fatal(err)
		}
		want, _ := os.ReadFile(raw)
		if !bytes.Equal(got, want) {
			t.Fatal("rsync's copy differs from its source")
		}
		return wall
	}

	t.Logf("| content (%d MiB disk) | replicator full run through Temporal (median of %d) | rsync -z --whole-file (median) | ratio | runs (s): replicator; rsync -z |", sizeMiB, runs)
	t.Logf("|---|---|---|---|---|")
	for _, kind := range kinds {
		rawDir, keepRaw := os.LookupEnv(fullCopyRawEnv)
		if !keepRaw {
			rawDir = h.dir
		}
		raw := filepath.Join(rawDir, kind+".raw")
		content := fullCopyContent(kind, size)
		if err := os.WriteFile(raw, content, 0o600); err != nil {
			t.Fatal(err)
		}
		var ours, theirs []time.Duration
		for i := range runs + 1 {
			name := fmt.Sprintf("%s%02d", kind, i)
			createVM(name, content)
			var o, r time.Duration
			if i%2 == 0 {
				o = replicate(name, i)
				r = rsyncZ(raw)
			} else {
				r = rsyncZ(raw)
				o = replicate(name, i)
			}
			if err := os.RemoveAll(filepath.Join(labPath, name)); err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				continue // warm-up
			}
			ours, theirs = append(ours, o), append(theirs, r)
		}
		if !keepRaw {
			os.Remove(raw)
		}
		mo, mr := medianDuration(ours), medianDuration(theirs)
		t.Logf("| %s | %.2f s | %.2f s | %.2f | %s; %s |", kind, mo.Seconds(), mr.Seconds(), mo.Seconds()/mr.Seconds(), secondsList(ours), secondsList(theirs))
	}
}

// fullCopyContent returns the bytes of a disk of a kind, in 4 MiB runs:
// random, 80% random and 20% never written; mixed, text-like 30%, random
// 20%, a repeated 4 KiB page 20%, never written 30% (like the mixed disk of
// `make bench`, whose zero-filled runs are never written here).
func fullCopyContent(kind string, size int64) []byte {
	const run = 4 << 20
	rng := rand.New(rand.NewPCG(uint64(size), 19))
	words := strings.Fields("the of and replica block disk checkpoint server error info warning request " +
		"user time value config status 200 404 GET POST /api/v1/items id name data table index log")
	b := make([]byte, size)
	for off, i := int64(0), 0; off < size; off, i = off+run, i+1 {
		p := b[off:min(off+run, size)]
		kindOf := i % 10
		if kind == "random" && kindOf < 8 {
			kindOf = 3
		}
		switch kindOf {
		case 0, 1, 2: // text-like
			synth.Text(rng, words, p)
		case 3, 4: // random
			synth.Random(rng, p)
		case 5, 6: // a repeated 4 KiB page
			synth.RepeatedPage(rng, p)
		}
	}
	return b
}

// logActivityTimes logs where the wall time of one run went, from the
// timestamps of its histories (the job run's and its VM child's): for each
// activity how long it waited in its task queue and how long it ran, and what
// is left for workflow tasks and the server's round trips.
func logActivityTimes(t *testing.T, c client.Client, id, runID string, wall time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	hists := []*historypb.History{readHistory(t, ctx, c, id, runID)}
	for _, ev := range hists[0].Events {
		if st := ev.GetChildWorkflowExecutionStartedEventAttributes(); st != nil {
			hists = append(hists, readHistory(t, ctx, c, st.WorkflowExecution.GetWorkflowId(), st.WorkflowExecution.GetRunId()))
		}
	}
	var ran time.Duration
	for _, hist := range hists {
		scheduled := map[int64]*historypb.HistoryEvent{}
		started := map[int64]*historypb.HistoryEvent{}
		for _, ev := range hist.Events {
			switch {
			case ev.GetActivityTaskScheduledEventAttributes() != nil:
				scheduled[ev.GetEventId()] = ev
			case ev.GetActivityTaskStartedEventAttributes() != nil:
				started[ev.GetActivityTaskStartedEventAttributes().GetScheduledEventId()] = ev
			case ev.GetActivityTaskCompletedEventAttributes() != nil:
				a := ev.GetActivityTaskCompletedEventAttributes()
				sch, st := scheduled[a.GetScheduledEventId()], started[a.GetScheduledEventId()]
				if sch == nil || st == nil {
					continue
				}
				queued := st.GetEventTime().AsTime().Sub(sch.GetEventTime().AsTime())
				run := ev.GetEventTime().AsTime().Sub(st.GetEventTime().AsTime())
				ran += run
				t.Logf("  activity %-24s queued %6.0f ms, ran %6.0f ms", sch.GetActivityTaskScheduledEventAttributes().GetActivityType().GetName(),
					float64(queued.Microseconds())/1000, float64(run.Microseconds())/1000)
			}
		}
	}
	t.Logf("  run of %.0f ms: activities ran %.0f ms, the rest (queues, workflow tasks, the server's writes) %.0f ms",
		float64(wall.Microseconds())/1000, float64(ran.Microseconds())/1000, float64((wall-ran).Microseconds())/1000)
}

func medianDuration(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2 // the mean of the middle two
	}
	return s[len(s)/2]
}

func secondsList(ds []time.Duration) string {
	var parts []string
	for _, d := range ds {
		parts = append(parts, fmt.Sprintf("%.2f", d.Seconds()))
	}
	return strings.Join(parts, ", ")
}

// traceRun starts an execution trace of the run name into the folder of
// REPLICATOR_FULLCOPY_TRACE, if set, and returns what stops it.
// warmMemory writes n bytes into a file on the memory file system
// (/dev/shm) and removes it, so that the command timed next finds n bytes
// of free memory the machine holds. On a virtual machine whose host takes
// back free memory (virtio-balloon free page reporting, as on the machines
// these figures come from), memory freed a few seconds ago costs the next
// writer a fault into the host for every page: 2 to 2.7 s of CPU per GiB.
// Without this, the command that runs right after the other has deleted its
// copy writes into the memory that copy freed and is fast, and one that
// follows a command that freed little (the replicator writes its replica
// past the page cache) is slow: single runs of either tool swing 2 to 3
// times.
func warmMemory(t *testing.T, n int64) {
	t.Helper()
	f, err := os.CreateTemp("/dev/shm", "replicator-warm-*")
	if err != nil {
		t.Logf("memory not warmed before the run (%v): figures may swing with what the last run freed", err)
		return
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 4<<20)
	for i := range buf {
		buf[i] = byte(i) | 1 // not zero: every page is written
	}
	for w := int64(0); w < n; w += int64(len(buf)) {
		if _, err := f.Write(buf); err != nil {
			t.Logf("memory warmed to %d MiB only (%v)", w>>20, err)
			return
		}
	}
}

func traceRun(t *testing.T, name string) func() {
	dir := os.Getenv(fullCopyTraceEnv)
	if dir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(dir, name+".trace"))
	if err != nil {
		t.Fatal(err)
	}
	if err := trace.Start(f); err != nil {
		t.Fatal(err)
	}
	return func() {
		trace.Stop()
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
