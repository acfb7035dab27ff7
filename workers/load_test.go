//go:build unix

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	"google.golang.org/protobuf/proto"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/provider/lab"
	"github.com/replicator/replicator/internal/replica"
	"github.com/replicator/replicator/internal/runresult"
)

// warningCounter counts the log lines that hold match.
type warningCounter struct {
	mu     sync.Mutex
	match  string
	n      int
	line   string
	buffer []byte
}

func (w *warningCounter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buffer = append(w.buffer, p...)
	for {
		i := bytes.IndexByte(w.buffer, '\n')
		if i < 0 {
			break
		}
		line := string(w.buffer[:i])
		w.buffer = w.buffer[i+1:]
		if strings.Contains(line, w.match) {
			if w.n == 0 {
				w.line = line
			}
			w.n++
		}
	}
	return len(p), nil
}

func (w *warningCounter) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

func (w *warningCounter) first() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.line
}

// loadVMsEnv sets the number of VMs of TestLoadManyVMs (`make load` asks 200).
const loadVMsEnv = "REPLICATOR_LOAD_VMS"

// maxHistoryEvents is the most events any one workflow history may hold,
// whatever the number of VMs of the job.
const maxHistoryEvents = 2000

// loadHistory is the size of one workflow run's history.
type loadHistory struct {
	workflowID, runID string
	events            int
	bytes             int
}

// TestLoadManyVMs runs one job over many small lab VMs (two disks each) at
// parallelism 8 on the whole in-process stack: every VM and disk must succeed
// with a verified, byte-identical restore point, and no workflow history (the
// run's or any VM's) may grow past maxHistoryEvents. It logs the wall time,
// the CPU time and peak RSS of this process (Temporal server, worker, proxy
// and agent together) and the largest history.
//
//	REPLICATOR_LOAD_VMS=200 go test ./workers -run TestLoadManyVMs -v
func TestLoadManyVMs(t *testing.T) {
	n := 20
	if v := os.Getenv(loadVMsEnv); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive number of VMs", loadVMsEnv, v)
		}
	}
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("load%04d", i+1)
	}
	// Past a few hundred VMs the job names its VMs by pattern (a
	// configuration naming thousands would be its own payload), and the
	// disks are one of 1 MiB: the run measures orchestration, not data.
	diskSizes := []int64{4 << 20, 2 << 20}
	patterns := names
	if n > 500 {
		diskSizes, patterns = []int64{1 << 20}, []string{"load*"}
	}
	payloadWarnings := &warningCounter{match: "TMPRL1103"}
	harnessLogWriter = payloadWarnings
	defer func() { harnessLogWriter = nil }()
	h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, false, func(c *config.Config) {
		c.Jobs[0].VMs = patterns // only these, not the seeded demo VMs
		c.Jobs[0].Parallelism = 8
	})

	ctx := context.Background()
	labPath := h.cfg.Hosts[0].Path
	host := lab.New("hv01", labPath)
	for i, name := range names {
		if _, err := lab.CreateVM(labPath, name, diskSizes); err != nil {
			t.Fatal(err)
		}
		for d := range diskSizes {
			if err := host.Write(ctx, name, d, 10, int64(i*len(diskSizes)+d+1)); err != nil {
				t.Fatal(err)
			}
		}
	}

	before := processUsage(t)
	began := time.Now()
	runCtx, cancel := context.WithTimeout(ctx, 60*time.Minute)
	defer cancel()
	id := fmt.Sprintf("load-%d", time.Now().UnixNano())
	run, err := h.c.ExecuteWorkflow(runCtx, client.StartWorkflowOptions{ID: id, TaskQueue: "replication"},
		contract.ReplicationWorkflow, contract.ReplicationInput{Job: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	// Get follows the run into its continuations and GetRunID then names the
	// last: keep the first to read the whole chain of histories.
	firstRunID := run.GetRunID()
	var res contract.ReplicationResult
	if err := run.Get(runCtx, &res); err != nil {
		t.Fatalf("run %s: %v", id, err)
	}
	wall := time.Since(began)
	after := processUsage(t)

	// No history grows with the number of VMs past the bound.
	histories := jobHistories(t, h.c, id, firstRunID)
	if want := n + 1; len(histories) < want {
		t.Fatalf("want at least %d histories (the run and one per VM), got %d", want, len(histories))
	}
	largest, parentEvents := histories[0], 0
	for _, hist := range histories {
		if hist.workflowID == id {
			parentEvents += hist.events
		}
		if hist.events > largest.events {
			largest = hist
		}
		if hist.events > maxHistoryEvents {
			t.Errorf("history of %s (run %s) has %d events, more than %d", hist.workflowID, hist.runID, hist.events, maxHistoryEvents)
		}
	}

	t.Logf("%d VMs x %d disks (%v bytes, 10%% written) at parallelism 8", n, len(diskSizes), diskSizes)
	t.Logf("wall time %s (%.2f s per VM)", wall.Round(time.Millisecond), wall.Seconds()/float64(n))
	t.Logf("CPU time of the run %s (user %s, system %s); peak RSS of the test process %d MiB",
		(after.user + after.system - before.user - before.system).Round(time.Millisecond),
		(after.user - before.user).Round(time.Millisecond), (after.system - before.system).Round(time.Millisecond),
		after.maxRSS>>20)
	t.Logf("%d histories; the job run's: %d events over its runs; largest: %s, %d events, %d bytes",
		len(histories), parentEvents, largest.workflowID, largest.events, largest.bytes)

	// No payload passed Temporal's warning; the result lists every VM once
	// its omitted VMs are read back from their workflows.
	if w := payloadWarnings.count(); w > 0 {
		t.Errorf("the worker logged %d payload size warnings (TMPRL1103), the first: %s", w, payloadWarnings.first())
	}
	resultJSON, _ := json.Marshal(res)
	t.Logf("result: %d bytes, lists %d VMs, omits %d", len(resultJSON), len(res.VMs), res.VMsOmitted)
	if err := runresult.Complete(ctx, h.c, id, &res); err != nil {
		t.Fatal(err)
	}
	if res.VMsOmitted != 0 || res.Omitted != nil {
		t.Fatalf("after reading the VM workflows the result still omits %d VMs: %+v", res.VMsOmitted, res.Omitted)
	}

	// Every VM and every disk succeeded, each VM once.
	requireSuccess(t, res)
	if len(res.VMs) != n {
		t.Fatalf("want %d VMs in the result, got %d", n, len(res.VMs))
	}
	seen := map[string]bool{}
	for _, vm := range res.VMs {
		if seen[vm.Name] {
			t.Fatalf("VM %s appears twice in the result", vm.Name)
		}
		seen[vm.Name] = true
		if len(vm.Disks) != len(diskSizes) {
			t.Fatalf("VM %s: want %d disks, got %+v", vm.Name, len(diskSizes), vm.Disks)
		}
		for _, d := range vm.Disks {
			if d.Status != contract.StatusSuccess || d.BytesSent == 0 {
				t.Fatalf("VM %s disk %s: %+v", vm.Name, d.ID, d)
			}
		}
	}

	// Every restore point is intact and identical to its source.
	store, err := replica.Open(h.cfg.Agent.Datastore)
	if err != nil {
		t.Fatal(err)
	}
	for _, vm := range res.VMs {
		r, err := store.Replica(res.Job, vm.ID)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Verify(ctx, vm.RestorePoint); err != nil {
			t.Fatalf("VM %s: verify restore point %s: %v", vm.Name, vm.RestorePoint, err)
		}
	}
	h.checkReplicaMatchesSource(res)
}

// jobHistories reads the history of the job run (every run of it, following
// continue-as-new) and of every child workflow it started.
func jobHistories(t *testing.T, c client.Client, id, runID string) []loadHistory {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var out []loadHistory
	var children [][2]string
	for runID != "" {
		hist := readHistory(t, ctx, c, id, runID)
		out = append(out, sizeOf(id, runID, hist))
		next := ""
		for _, ev := range hist.Events {
			if started := ev.GetChildWorkflowExecutionStartedEventAttributes(); started != nil {
				children = append(children, [2]string{started.WorkflowExecution.GetWorkflowId(), started.WorkflowExecution.GetRunId()})
			}
			if can := ev.GetWorkflowExecutionContinuedAsNewEventAttributes(); can != nil {
				next = can.GetNewExecutionRunId()
			}
		}
		t.Logf("job run %s: %d events, ends with %s", runID, len(hist.Events), hist.Events[len(hist.Events)-1].GetEventType())
		runID = next
	}
	for _, ch := range children {
		for childRun := ch[1]; childRun != ""; {
			hist := readHistory(t, ctx, c, ch[0], childRun)
			out = append(out, sizeOf(ch[0], childRun, hist))
			childRun = ""
			if last := hist.Events[len(hist.Events)-1]; last.GetWorkflowExecutionContinuedAsNewEventAttributes() != nil {
				childRun = last.GetWorkflowExecutionContinuedAsNewEventAttributes().GetNewExecutionRunId()
			}
		}
	}
	return out
}

func readHistory(t *testing.T, ctx context.Context, c client.Client, id, runID string) *historypb.History {
	t.Helper()
	it := c.GetWorkflowHistory(ctx, id, runID, false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	hist := &historypb.History{}
	for it.HasNext() {
		ev, err := it.Next()
		if err != nil {
			t.Fatalf("history of %s (run %s) after event %d: %v", id, runID, len(hist.Events), err)
		}
		hist.Events = append(hist.Events, ev)
	}
	if len(hist.Events) == 0 {
		t.Fatalf("history of %s (run %s) is empty", id, runID)
	}
	return hist
}

func sizeOf(id, runID string, hist *historypb.History) loadHistory {
	return loadHistory{workflowID: id, runID: runID, events: len(hist.Events), bytes: proto.Size(hist)}
}

// usage is the CPU time and peak resident memory of this process so far.
type usage struct {
	user, system time.Duration
	maxRSS       int64 // bytes
}

func processUsage(t *testing.T) usage {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return usage{
		user:   time.Duration(ru.Utime.Nano()),
		system: time.Duration(ru.Stime.Nano()),
		maxRSS: maxRSSBytes(ru.Maxrss),
	}
}

// maxRSSBytes converts ru_maxrss, which is in kilobytes on Linux and the BSDs
// and in bytes on macOS.
func maxRSSBytes(v int64) int64 {
	if runtime.GOOS == "darwin" {
		return v
	}
	return v << 10
}
