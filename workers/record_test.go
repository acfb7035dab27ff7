//go:build record

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/provider/lab"
)

// historiesDir is where the workflows package's replay tests read histories.
const historiesDir = "../workflows/testdata"

// scenarios are the names TestRecordHistories records under.
var scenarios = []string{"full", "incremental", "unknown-vm", "window-expired", "window-resumed"}

// recordedRun is one job run whose histories are kept under a scenario name.
type recordedRun struct {
	scenario string
	id       string
	runID    string
	result   contract.ReplicationResult
}

// startAndWait runs a job like harness.run, and also returns the workflow's ids.
func startAndWait(h *harness, scenario string, in contract.ReplicationInput) recordedRun {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	id := fmt.Sprintf("%s-%s-%d", in.Job, scenario, time.Now().UnixNano())
	run, err := h.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: "replication"},
		contract.ReplicationWorkflow, in)
	if err != nil {
		h.t.Fatal(err)
	}
	rec := recordedRun{scenario: scenario, id: id, runID: run.GetRunID()}
	if err := run.Get(ctx, &rec.result); err != nil {
		h.t.Fatalf("%s: run: %v", scenario, err)
	}
	return rec
}

// fetchHistory reads the whole history of one workflow execution.
func fetchHistory(ctx context.Context, c client.Client, id, runID string) (*historypb.History, error) {
	it := c.GetWorkflowHistory(ctx, id, runID, false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	hist := &historypb.History{}
	for it.HasNext() {
		ev, err := it.Next()
		if err != nil {
			return nil, fmt.Errorf("history of %s/%s after event %d: %w", id, runID, len(hist.Events), err)
		}
		hist.Events = append(hist.Events, ev)
	}
	if len(hist.Events) == 0 {
		return nil, fmt.Errorf("history of %s/%s is empty", id, runID)
	}
	return hist, nil
}

// saveHistories writes the history of the run and of every child it started,
// in start order, as <scenario>-<n>.json (n from 1, the run itself first) in
// the format of `temporal workflow show --output json`.
func saveHistories(t *testing.T, c client.Client, dir string, rec recordedRun) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	parent, err := fetchHistory(ctx, c, rec.id, rec.runID)
	if err != nil {
		t.Fatal(err)
	}
	histories := []*historypb.History{parent}
	for _, ev := range parent.Events {
		started := ev.GetChildWorkflowExecutionStartedEventAttributes()
		if started == nil {
			continue
		}
		child, err := fetchHistory(ctx, c, started.WorkflowExecution.GetWorkflowId(), started.WorkflowExecution.GetRunId())
		if err != nil {
			t.Fatal(err)
		}
		histories = append(histories, child)
	}
	marshal := protojson.MarshalOptions{Multiline: true, Indent: "  "}
	for i, hist := range histories {
		b, err := marshal.Marshal(hist)
		if err != nil {
			t.Fatalf("%s: encoding history %d: %v", rec.scenario, i+1, err)
		}
		name := filepath.Join(dir, fmt.Sprintf("%s-%d.json", rec.scenario, i+1))
		if err := os.WriteFile(name, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d events, %d bytes", filepath.Base(name), len(hist.Events), len(b)+1)
	}
}

// TestRecordHistories records the histories that the workflows package
// replays: it runs the scenarios below against the embedded Temporal server
// and, when all of them behaved as named, replaces workflows/testdata/*.json.
// Recording is a maintenance step, run after a deliberate change of the
// workflows' commands (guarded by workflow.GetVersion) or to add scenarios:
//
//	go test -tags record ./workers -run TestRecordHistories
func TestRecordHistories(t *testing.T) {
	out := t.TempDir()

	t.Run("full, incremental and unknown VM", func(t *testing.T) {
		h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, false, nil)
		full := startAndWait(h, "full", contract.ReplicationInput{Job: "demo"})
		requireSuccess(t, full.result)
		for _, vm := range full.result.VMs {
			for _, d := range vm.Disks {
				if d.ChangeTracking != contract.TrackingFull {
					t.Fatalf("full: %s disk %s tracked by %q, want full", vm.Name, d.ID, d.ChangeTracking)
				}
			}
		}
		saveHistories(t, h.c, out, full)

		host := lab.New("hv01", h.cfg.Hosts[0].Path)
		if err := host.Write(context.Background(), "web01", 0, 2, 42); err != nil {
			t.Fatal(err)
		}
		incr := startAndWait(h, "incremental", contract.ReplicationInput{Job: "demo"})
		requireSuccess(t, incr.result)
		for _, vm := range incr.result.VMs {
			for _, d := range vm.Disks {
				if d.ChangeTracking == contract.TrackingFull {
					t.Fatalf("incremental: %s disk %s was sent in full", vm.Name, d.ID)
				}
			}
		}
		saveHistories(t, h.c, out, incr)

		unknown := startAndWait(h, "unknown-vm", contract.ReplicationInput{Job: "demo", VMs: []string{"no-such-vm"}})
		if unknown.result.Status != contract.StatusFailed || len(unknown.result.VMs) != 1 || unknown.result.VMs[0].Error == "" {
			t.Fatalf("unknown-vm: want one failed VM naming what is missing, got %+v", unknown.result)
		}
		saveHistories(t, h.c, out, unknown)
	})
	if t.Failed() {
		return
	}

	t.Run("window expiry and resume", func(t *testing.T) {
		h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, true, func(c *config.Config) {
			c.Jobs[0].Window = 3 * time.Second
		})
		h.proxy.setRate(2 << 20) // web01's full transfer cannot finish in 3 s at 2 MiB/s
		expired := startAndWait(h, "window-expired", contract.ReplicationInput{Job: "demo", VMs: []string{"web01"}})
		if expired.result.Status != contract.StatusPartial || expired.result.VMs[0].Disks[0].Status != contract.StatusPartial {
			t.Fatalf("window-expired: want partial, got %+v", expired.result)
		}
		saveHistories(t, h.c, out, expired)

		h.proxy.setRate(0)
		h.cfg.Jobs[0].Window = 0
		h.writeConfig()
		resumed := startAndWait(h, "window-resumed", contract.ReplicationInput{Job: "demo", VMs: []string{"web01"}})
		requireSuccess(t, resumed.result)
		if d := resumed.result.VMs[0].Disks[0]; d.ResumedFromByte <= 0 {
			t.Fatalf("window-resumed: the run did not continue where the window stopped: %+v", d)
		}
		saveHistories(t, h.c, out, resumed)
	})
	if t.Failed() {
		return
	}

	// Every scenario behaved: replace the histories of these scenarios. Other
	// files (an old history kept under another name) stay.
	if err := os.MkdirAll(historiesDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, scenario := range scenarios {
		old, err := filepath.Glob(filepath.Join(historiesDir, scenario+"-[0-9]*.json"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range old {
			if err := os.Remove(f); err != nil {
				t.Fatal(err)
			}
		}
	}
	recorded, err := filepath.Glob(filepath.Join(out, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range recorded {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(historiesDir, filepath.Base(f)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d histories written to %s", len(recorded), historiesDir)
}
