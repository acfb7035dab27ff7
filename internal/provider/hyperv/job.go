package hyperv

import (
	"context"
	"fmt"
	"time"
)

// JobState values of CIM_ConcreteJob.
const (
	jobNew          = 2
	jobStarting     = 3
	jobRunning      = 4
	jobSuspended    = 5
	jobShuttingDown = 6
	jobCompleted    = 7
	jobTerminated   = 8
	jobKilled       = 9
	jobException    = 10
	jobService      = 11
	jobQueryPending = 12
	// jobCompletedWithWarnings is Hyper-V's own state beyond CIM's list: the
	// job did its work and reports warnings (Microsoft's "common utilities
	// for the virtualization samples", JobState.CompletedWithWarnings = 32768).
	jobCompletedWithWarnings = 32768
)

// requestedStateTerminate asks a CIM_ConcreteJob to stop (RequestStateChange).
const requestedStateTerminate = uint16(4)

// waitJob polls the Msvm_ConcreteJob at jobPath until it ends, the job
// timeout passes or ctx is done. A job that does not end in time is asked to
// terminate (best effort), so that a late checkpoint does not appear after
// the caller gave up on it. A job completed with warnings is a success; its
// warning is returned.
func (p *Provider) waitJob(ctx context.Context, op, method, jobPath string, kind methodKind) (warning string, err error) {
	if jobPath == "" {
		return "", &Error{Op: op, Code: rcJobStarted, Description: "job started but its path is empty", retryable: true}
	}
	deadline := p.now().Add(p.jobTimeout)
	interval := p.pollInterval
	for {
		job, err := p.c.Get(ctx, jobPath)
		if err != nil {
			return "", fmt.Errorf("%s: poll job %s: %w", op, jobPath, err)
		}
		state, _ := job.int("JobState")
		switch state {
		case jobCompleted:
			return "", nil
		case jobCompletedWithWarnings:
			w := job.str("ErrorDescription")
			if w == "" {
				w = "completed with warnings"
			}
			return fmt.Sprintf("%s: %s", op, w), nil
		case jobTerminated, jobKilled:
			return "", &Error{Op: op, Description: fmt.Sprintf("job %s was %s: %s", jobInstance(job, jobPath), jobStateName(state), job.str("ErrorDescription")), retryable: true}
		case jobException:
			code, _ := asUint32(job.prop("ErrorCode"))
			if code == 0 {
				code = rcFailed
			}
			// A job's ErrorCode is vendor-specific; Hyper-V's jobs report the
			// 32768+ codes whatever service started them.
			table := method
			if code >= rcFailed {
				table = ""
			}
			return "", classifyReturn(op, table, code, kind, job.str("ErrorDescription"))
		case jobNew, jobStarting, jobRunning, jobSuspended, jobShuttingDown, jobService, jobQueryPending:
		default:
			// A state outside CIM_ConcreteJob's list: keep polling until the timeout.
		}
		if !p.now().Before(deadline) {
			pct, _ := job.int("PercentComplete")
			_, _ = p.c.Invoke(ctx, jobPath, "RequestStateChange", map[string]any{"RequestedState": requestedStateTerminate}, nil)
			return "", &Error{Op: op, Code: rcTimeout, Description: fmt.Sprintf("job %s still %s at %d%% after %s; asked it to terminate", jobInstance(job, jobPath), jobStateName(state), pct, p.jobTimeout), retryable: true}
		}
		if err := p.sleep(ctx, interval); err != nil {
			return "", fmt.Errorf("%s: waiting for job %s: %w", op, jobPath, err)
		}
		interval *= 2
		if interval > p.maxPollInterval {
			interval = p.maxPollInterval
		}
	}
}

func jobInstance(job object, path string) string {
	if id := job.str("InstanceID"); id != "" {
		return id
	}
	return path
}

func jobStateName(state int64) string {
	switch state {
	case jobNew:
		return "new"
	case jobStarting:
		return "starting"
	case jobRunning:
		return "running"
	case jobSuspended:
		return "suspended"
	case jobShuttingDown:
		return "shutting down"
	case jobCompleted:
		return "completed"
	case jobCompletedWithWarnings:
		return "completed with warnings"
	case jobTerminated:
		return "terminated"
	case jobKilled:
		return "killed"
	case jobException:
		return "failed with an exception"
	case jobService:
		return "in service"
	case jobQueryPending:
		return "query pending"
	default:
		return fmt.Sprintf("in state %d", state)
	}
}

// call invokes a method and, when it started a job, waits for the job; a
// job's warning is in the result's warning.
func (p *Provider) call(ctx context.Context, op string, kind methodKind, path, method string, in map[string]any, out []string) (result, error) {
	if err := ctx.Err(); err != nil {
		return result{}, fmt.Errorf("%s: %w", op, err)
	}
	res, err := p.c.Invoke(ctx, path, method, in, out)
	if err != nil {
		return result{}, fmt.Errorf("%s: %w", op, err)
	}
	switch res.ReturnValue {
	case rcCompleted:
		return res, nil
	case rcJobStarted:
		res.warning, err = p.waitJob(ctx, op, method, asString(res.Out["Job"]), kind)
		return res, err
	default:
		return res, classifyReturn(op, method, res.ReturnValue, kind, "")
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
