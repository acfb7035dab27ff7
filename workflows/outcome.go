package workflows

import (
	"go.temporal.io/sdk/temporal"

	"github.com/replicator/replicator/internal/contract"
)

// stage is the step of a VM's run that has just ended.
type stage int

const (
	stageStart      stage = iota // the run started: the window may have closed already
	stagePrepare                 // the replica's state was read
	stageCheckpoint              // the checkpoint was taken
	stageBegin                   // the restore point was opened
	stageTransfer                // every disk's transfer ended
	stageCommit                  // the restore point was committed
)

// vmFacts is what a VM's outcome is decided from.
type vmFacts struct {
	stage stage
	// err is the error of the step (for transfers: the first disk failure
	// that the window does not explain); nil when it succeeded.
	err          error
	windowClosed bool // the backup window closed
	cancelled    bool // the run was cancelled by an operator or its job run
	// everyCheckpoint: the run releases, or keeps for reuse, every
	// checkpoint it makes (a recorded version; runs before it released
	// fewer). reusedCheckpoint: the checkpoint is the interrupted point's.
	everyCheckpoint, reusedCheckpoint bool
}

// vmOutcome is how a VM's run ends. The zero vmOutcome says the run is not
// over: its next step follows.
type vmOutcome struct {
	status    string // the VM's status: success, partial or failed
	reason    string // the VM's error
	retryable bool   // a later attempt may pass where this one failed
	disks     string // the status of every disk; "" keeps each disk's own
}

// decideOutcome says whether a VM's run ends at f.stage and how: success
// once the point is committed; partial when the backup window closed (the
// next run continues); failed, retryable or not, when a step failed.
func decideOutcome(f vmFacts) vmOutcome {
	var failed vmOutcome
	if f.err != nil {
		failed = vmOutcome{status: contract.StatusFailed, reason: errorText(f.err), retryable: mayPass(f.err)}
	}
	switch f.stage {
	case stageStart:
		if f.windowClosed {
			return vmOutcome{status: contract.StatusPartial, reason: "backup window closed before this VM started", disks: contract.StatusPartial}
		}
	case stagePrepare, stageCheckpoint, stageBegin:
		switch {
		case f.err == nil:
		case f.windowClosed && isCancel(f.err):
			return vmOutcome{status: contract.StatusPartial, reason: "backup window closed before the transfers started", disks: contract.StatusPartial}
		default:
			failed.disks = contract.StatusFailed
			return failed
		}
	case stageTransfer:
		switch {
		case f.cancelled && !f.windowClosed:
			return vmOutcome{status: contract.StatusFailed, reason: "run cancelled"}
		case f.windowClosed:
			return vmOutcome{status: contract.StatusPartial, reason: "backup window closed; the checkpoint is kept and the next run continues"}
		case f.err == nil:
		case isNonRetryable(f.err):
			return vmOutcome{status: contract.StatusFailed, reason: errorText(f.err)}
		default:
			// Transient failures outlasted their retries.
			return failed
		}
	case stageCommit:
		if f.err == nil {
			return vmOutcome{status: contract.StatusSuccess}
		}
		failed.reason = "committing the restore point: " + errorText(f.err)
		return failed
	}
	return vmOutcome{}
}

// checkpointFate says what becomes of the run's checkpoint when the run
// fails or stops at f.stage: released (release says why), swept with the
// job's other leftover checkpoints of the VM but the interrupted point's,
// or kept ("", false) for the next run to continue from.
func checkpointFate(f vmFacts) (release string, sweep bool) {
	switch f.stage {
	case stageCheckpoint:
		// The activity may have failed, or been cancelled, after the host
		// made the checkpoint.
		return "", f.err != nil && f.everyCheckpoint
	case stageBegin:
		switch {
		case f.err == nil:
		case f.everyCheckpoint && f.windowClosed && f.reusedCheckpoint:
			// The interrupted point is still keyed by this checkpoint:
			// the next run continues it.
		case f.everyCheckpoint:
			// No restore point continues from this checkpoint.
			return "opening the restore point did not finish", false
		case isCancel(f.err) && !f.windowClosed:
			return "run cancelled", false
		}
	case stageTransfer:
		switch {
		case f.cancelled && !f.windowClosed:
			// The open restore point is discarded by the next run, which
			// brings a new checkpoint.
			return "run cancelled", false
		case f.windowClosed:
			// The next run continues from the acknowledged positions.
		case f.err != nil && isNonRetryable(f.err):
			return "transfer failed for good", false
		}
		// Transient failures that outlasted their retries keep it too.
	case stageCommit:
		if f.err != nil && f.everyCheckpoint && isNonRetryable(f.err) {
			// The next run cannot commit this point: it starts over from a
			// new checkpoint. A transient failure keeps the checkpoint, and
			// the next run commits what was sent.
			return "commit failed for good", false
		}
	}
	return "", false
}

// diskOutcome is the status of a disk whose transfer ended with err, and
// whether that counts as the VM's failure: a transfer that the closing
// window cancelled, timed out or stopped is partial and continues next run.
func diskOutcome(err error, windowClosed bool) (status, reason string, failure bool) {
	if windowClosed && (isCancel(err) || temporal.IsTimeoutError(err) || isErrType(err, contract.ErrTypeWindowClosed)) {
		return contract.StatusPartial, "backup window closed; the next run continues from the acknowledged position", false
	}
	return contract.StatusFailed, errorText(err), true
}
