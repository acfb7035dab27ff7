package workflows

import (
	"fmt"
	"testing"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"

	"github.com/replicator/replicator/internal/contract"
)

// TestDecideOutcome pins how a VM's run ends at each step: where it stops,
// the status the job run and the operator see, whether the job run tries
// the VM again, and what becomes of the checkpoint (released, swept or
// kept for the next run to continue from).
func TestDecideOutcome(t *testing.T) {
	transient := fmt.Errorf("preparing the replica: %w", temporal.NewApplicationError("agent of target dr01 is down", "Unavailable"))
	badConfig := temporal.NewNonRetryableApplicationError("jobs[0].blockSize is not a power of two", contract.ErrTypeBadConfig, nil)
	locked := temporal.NewNonRetryableApplicationError("replica web01 is held by another process", contract.ErrTypeReplicaLocked, nil)
	cancelled := fmt.Errorf("opening the restore point: %w", temporal.NewCanceledError())
	const (
		success = contract.StatusSuccess
		partial = contract.StatusPartial
		failed  = contract.StatusFailed
	)
	tests := []struct {
		name    string
		facts   vmFacts
		want    vmOutcome
		release string
		sweep   bool
	}{
		{name: "window open at the start: the run goes on", facts: vmFacts{stage: stageStart}},
		{name: "window closed before the VM started", facts: vmFacts{stage: stageStart, windowClosed: true},
			want: vmOutcome{status: partial, reason: "backup window closed before this VM started", disks: partial}},
		{name: "replica prepared: the run goes on", facts: vmFacts{stage: stagePrepare, windowClosed: true}},
		{name: "preparing failed for now: retried", facts: vmFacts{stage: stagePrepare, err: transient},
			want: vmOutcome{status: failed, reason: "agent of target dr01 is down", retryable: true, disks: failed}},
		{name: "preparing failed for good: not retried", facts: vmFacts{stage: stagePrepare, err: badConfig},
			want: vmOutcome{status: failed, reason: "jobs[0].blockSize is not a power of two", disks: failed}},
		{name: "replica held elsewhere: retried", facts: vmFacts{stage: stagePrepare, err: locked},
			want: vmOutcome{status: failed, reason: "replica web01 is held by another process", retryable: true, disks: failed}},
		{name: "window closed during the checkpoint: partial, leftovers swept",
			facts: vmFacts{stage: stageCheckpoint, err: temporal.NewCanceledError(), windowClosed: true, everyCheckpoint: true},
			want:  vmOutcome{status: partial, reason: "backup window closed before the transfers started", disks: partial}, sweep: true},
		{name: "checkpoint failed in a run recorded before every checkpoint was released: nothing swept",
			facts: vmFacts{stage: stageCheckpoint, err: badConfig},
			want:  vmOutcome{status: failed, reason: "jobs[0].blockSize is not a power of two", disks: failed}},
		{name: "window closed while opening the interrupted point: its checkpoint is kept",
			facts: vmFacts{stage: stageBegin, err: cancelled, windowClosed: true, everyCheckpoint: true, reusedCheckpoint: true},
			want:  vmOutcome{status: partial, reason: "backup window closed before the transfers started", disks: partial}},
		{name: "window closed while opening a new point: its checkpoint is released",
			facts:   vmFacts{stage: stageBegin, err: cancelled, windowClosed: true, everyCheckpoint: true},
			want:    vmOutcome{status: partial, reason: "backup window closed before the transfers started", disks: partial},
			release: "opening the restore point did not finish"},
		{name: "opening the interrupted point failed with the window open: its checkpoint is released",
			facts:   vmFacts{stage: stageBegin, err: badConfig, everyCheckpoint: true, reusedCheckpoint: true},
			want:    vmOutcome{status: failed, reason: "jobs[0].blockSize is not a power of two", disks: failed},
			release: "opening the restore point did not finish"},
		{name: "run cancelled while opening the point (recorded before every checkpoint was released)",
			facts:   vmFacts{stage: stageBegin, err: cancelled, cancelled: true},
			want:    vmOutcome{status: failed, reason: "opening the restore point: canceled", disks: failed},
			release: "run cancelled"},
		{name: "transfers done: the run goes on", facts: vmFacts{stage: stageTransfer}},
		{name: "window closed during the transfers: partial, checkpoint kept",
			facts: vmFacts{stage: stageTransfer, windowClosed: true, everyCheckpoint: true},
			want:  vmOutcome{status: partial, reason: "backup window closed; the checkpoint is kept and the next run continues"}},
		{name: "run cancelled during the transfers: checkpoint released",
			facts:   vmFacts{stage: stageTransfer, cancelled: true, err: cancelled, everyCheckpoint: true},
			want:    vmOutcome{status: failed, reason: "run cancelled"},
			release: "run cancelled"},
		{name: "cancelled as the window closed: the window's partial wins",
			facts: vmFacts{stage: stageTransfer, cancelled: true, windowClosed: true, everyCheckpoint: true},
			want:  vmOutcome{status: partial, reason: "backup window closed; the checkpoint is kept and the next run continues"}},
		{name: "a transfer failed for good: checkpoint released, not retried",
			facts:   vmFacts{stage: stageTransfer, err: badConfig, everyCheckpoint: true},
			want:    vmOutcome{status: failed, reason: "jobs[0].blockSize is not a power of two"},
			release: "transfer failed for good"},
		{name: "a transfer outlasted its retries: checkpoint kept, retried",
			facts: vmFacts{stage: stageTransfer, err: transient, everyCheckpoint: true},
			want:  vmOutcome{status: failed, reason: "agent of target dr01 is down", retryable: true}},
		{name: "committed", facts: vmFacts{stage: stageCommit, everyCheckpoint: true}, want: vmOutcome{status: success}},
		{name: "commit failed for now: checkpoint kept for the next run to commit",
			facts: vmFacts{stage: stageCommit, err: transient, everyCheckpoint: true},
			want:  vmOutcome{status: failed, reason: "committing the restore point: agent of target dr01 is down", retryable: true}},
		{name: "commit failed for good: checkpoint released",
			facts:   vmFacts{stage: stageCommit, err: badConfig, everyCheckpoint: true},
			want:    vmOutcome{status: failed, reason: "committing the restore point: jobs[0].blockSize is not a power of two"},
			release: "commit failed for good"},
		{name: "commit failed for good in a run recorded before: checkpoint kept",
			facts: vmFacts{stage: stageCommit, err: badConfig},
			want:  vmOutcome{status: failed, reason: "committing the restore point: jobs[0].blockSize is not a power of two"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := decideOutcome(tt.facts); got != tt.want {
				t.Errorf("decideOutcome = %+v, want %+v", got, tt.want)
			}
			if tt.want.status == "" || tt.want.status == success {
				return // the run goes on: no cleanup is asked of checkpointFate
			}
			release, sweep := checkpointFate(tt.facts)
			if release != tt.release || sweep != tt.sweep {
				t.Errorf("checkpointFate = (%q, %v), want (%q, %v)", release, sweep, tt.release, tt.sweep)
			}
		})
	}
}

// TestDiskOutcome pins a disk's status after its transfer failed: the
// closing window makes a stopped transfer partial (the next run continues
// it), anything else fails the disk and counts as the VM's failure.
func TestDiskOutcome(t *testing.T) {
	const continues = "backup window closed; the next run continues from the acknowledged position"
	windowErr := temporal.NewNonRetryableApplicationError("the backup window closed", contract.ErrTypeWindowClosed, nil)
	timeout := temporal.NewTimeoutError(enums.TIMEOUT_TYPE_SCHEDULE_TO_CLOSE, nil)
	broken := temporal.NewApplicationError("connection reset by peer", "NetworkError")
	tests := []struct {
		name         string
		err          error
		windowClosed bool
		status       string
		reason       string
		failure      bool
	}{
		{"cancelled by the window", temporal.NewCanceledError(), true, contract.StatusPartial, continues, false},
		{"timed out as the window closed", timeout, true, contract.StatusPartial, continues, false},
		{"stopped at its own deadline", windowErr, true, contract.StatusPartial, continues, false},
		{"cancelled with the window open", temporal.NewCanceledError(), false, contract.StatusFailed, "canceled", true},
		{"timed out with the window open", timeout, false, contract.StatusFailed, timeout.Error(), true},
		{"failed as the window closed", broken, true, contract.StatusFailed, "connection reset by peer", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, reason, failure := diskOutcome(tt.err, tt.windowClosed)
			if status != tt.status || reason != tt.reason || failure != tt.failure {
				t.Errorf("diskOutcome = (%q, %q, %v), want (%q, %q, %v)", status, reason, failure, tt.status, tt.reason, tt.failure)
			}
		})
	}
}
