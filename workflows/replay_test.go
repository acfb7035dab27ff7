package workflows_test

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/workflows"
)

// maxHistoryEvents is the bound every run's history must stay under, whatever
// the job (the product's acceptance: no workflow history over 2,000 events).
const maxHistoryEvents = 2000

// recordedHistory is one history recorded from a real run (see
// TestRecordHistories in the workers package).
type recordedHistory struct {
	file    string
	history *historypb.History
}

func (r recordedHistory) workflowType() string {
	return r.history.Events[0].GetWorkflowExecutionStartedEventAttributes().GetWorkflowType().GetName()
}

// loadHistories reads every testdata/*.json history. It fails when there are
// none: a replay test that replays nothing checks nothing.
func loadHistories(t *testing.T) []recordedHistory {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no recorded histories in workflows/testdata; record them with " +
			"go test -tags record ./workers -run TestRecordHistories")
	}
	var out []recordedHistory
	for _, f := range files {
		// client.HistoryFromJSON is the reader of
		// WorkflowReplayer.ReplayWorkflowHistoryFromJSONFile and of
		// `temporal workflow show --output json` files.
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		hist, err := client.HistoryFromJSON(fh, client.HistoryJSONOptions{})
		fh.Close()
		if err != nil {
			t.Fatalf("reading history %s: %v", f, err)
		}
		if len(hist.Events) == 0 || hist.Events[0].GetWorkflowExecutionStartedEventAttributes() == nil {
			t.Fatalf("history %s does not begin with a workflow start", f)
		}
		if hist.Events[0].GetWorkflowExecutionStartedEventAttributes().GetWorkflowId() == "" {
			t.Fatalf("history %s does not name its workflow id, which replay needs; record it again", f)
		}
		out = append(out, recordedHistory{file: f, history: hist})
	}
	return out
}

// replay replays a recorded history as the execution it was recorded from.
// The workflow's own id matters: children are named after it, so replaying
// under the replayer's stand-in id would differ from the history at the
// first child.
func replay(r worker.WorkflowReplayer, h recordedHistory) error {
	started := h.history.Events[0].GetWorkflowExecutionStartedEventAttributes()
	logger := log.NewStructuredLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	return r.ReplayWorkflowHistoryWithOptions(logger, h.history, worker.ReplayWorkflowHistoryOptions{
		OriginalExecution: workflow.Execution{ID: started.GetWorkflowId(), RunID: started.GetOriginalExecutionRunId()},
	})
}

// TestReplayRecordedHistories replays every recorded history against the
// workflows as they are now. A failure means a change altered the commands
// that an already-running (or already-recorded) workflow issued: guard the
// change with workflow.GetVersion, or, when no run of the old code can still
// be open, record the histories again.
func TestReplayRecordedHistories(t *testing.T) {
	histories := loadHistories(t)
	known := map[string]bool{contract.ReplicationWorkflow: true, contract.VMReplicationWorkflow: true}
	seen := map[string]int{}
	for _, h := range histories {
		t.Run(filepath.Base(h.file), func(t *testing.T) {
			typ := h.workflowType()
			if !known[typ] {
				t.Fatalf("history of workflow type %q, which replicator does not have", typ)
			}
			seen[typ]++
			events := h.history.Events
			if n := len(events); n > maxHistoryEvents {
				t.Errorf("%d events, more than the %d a run may have", n, maxHistoryEvents)
			}
			if last := events[len(events)-1].GetEventType(); last != enums.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED {
				t.Errorf("history ends with %s, not with the workflow's completion: it would not replay a whole run", last)
			}
			replayer := worker.NewWorkflowReplayer()
			workflows.Register(replayer)
			if err := replay(replayer, h); err != nil {
				t.Fatalf("replaying %s (%s): %v", h.file, typ, err)
			}
		})
	}
	for typ := range known {
		if seen[typ] == 0 {
			t.Errorf("no recorded history of %s", typ)
		}
	}
}

// firstJobRun is a recorded ReplicationWorkflow history.
func firstJobRun(t *testing.T) recordedHistory {
	t.Helper()
	for _, h := range loadHistories(t) {
		if h.workflowType() == contract.ReplicationWorkflow {
			return h
		}
	}
	t.Fatal("no recorded history of " + contract.ReplicationWorkflow)
	return recordedHistory{}
}

// TestReplayCatchesAChangedWorkflow proves that the replay test sees a change
// that would break runs in flight: a ReplicationWorkflow that calls one more
// activity before the others, registered under the same name, must not
// replay an old history.
func TestReplayCatchesAChangedWorkflow(t *testing.T) {
	h := firstJobRun(t)
	changed := func(ctx workflow.Context, in contract.ReplicationInput) (contract.ReplicationResult, error) {
		actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{TaskQueue: "replication", StartToCloseTimeout: time.Minute})
		if err := workflow.ExecuteActivity(actx, "AuditRun", in.Job).Get(actx, nil); err != nil {
			return contract.ReplicationResult{}, err
		}
		return workflows.ReplicationWorkflow(ctx, in)
	}
	replayer := worker.NewWorkflowReplayer()
	replayer.RegisterWorkflowWithOptions(changed, workflow.RegisterOptions{Name: contract.ReplicationWorkflow})
	replayer.RegisterWorkflowWithOptions(workflows.VMReplicationWorkflow, workflow.RegisterOptions{Name: contract.VMReplicationWorkflow})
	err := replay(replayer, h)
	if err == nil {
		t.Fatalf("replaying %s against a workflow with an extra activity succeeded; the replayer must report the nondeterminism", h.file)
	}
	// TMPRL1100 is the SDK's code for a nondeterminism error.
	if !strings.Contains(err.Error(), "TMPRL1100") {
		t.Fatalf("replaying %s against a changed workflow failed, but not for nondeterminism: %v", h.file, err)
	}
}

// TestReplayAcceptsAVersionedChange shows the way out the replay test asks
// for: the same extra activity behind workflow.GetVersion replays the old
// history, which has no version marker, along the old path.
func TestReplayAcceptsAVersionedChange(t *testing.T) {
	h := firstJobRun(t)
	versioned := func(ctx workflow.Context, in contract.ReplicationInput) (contract.ReplicationResult, error) {
		if v := workflow.GetVersion(ctx, "audit-run", workflow.DefaultVersion, 1); v == 1 {
			actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{TaskQueue: "replication", StartToCloseTimeout: time.Minute})
			if err := workflow.ExecuteActivity(actx, "AuditRun", in.Job).Get(actx, nil); err != nil {
				return contract.ReplicationResult{}, err
			}
		}
		return workflows.ReplicationWorkflow(ctx, in)
	}
	replayer := worker.NewWorkflowReplayer()
	replayer.RegisterWorkflowWithOptions(versioned, workflow.RegisterOptions{Name: contract.ReplicationWorkflow})
	replayer.RegisterWorkflowWithOptions(workflows.VMReplicationWorkflow, workflow.RegisterOptions{Name: contract.VMReplicationWorkflow})
	if err := replay(replayer, h); err != nil {
		t.Fatalf("replaying %s against a change guarded by workflow.GetVersion: %v", h.file, err)
	}
}
