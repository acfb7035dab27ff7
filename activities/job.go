package activities

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/contract"
)

// Jobs loads job settings at the start of each run, so that an edited
// configuration file applies at the next run without restarting workers.
type Jobs struct {
	Config func() (*config.Config, error)
	// Client describes the runs that hold a VM (DescribeVMRun) and the
	// namespace's search attributes (LoadJob).
	Client client.Client
	// Namespace is the Temporal namespace of the runs.
	Namespace string
}

// searchAttributesRegistered says whether the namespace has the search
// attributes runs set; an error counts as no (the run then sets none).
func (j *Jobs) searchAttributesRegistered(ctx context.Context) bool {
	if j.Client == nil || j.Namespace == "" {
		return false
	}
	resp, err := j.Client.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: j.Namespace})
	if err != nil {
		return false
	}
	attrs := resp.GetCustomAttributes()
	return attrs[contract.SearchAttributeJob] == enums.INDEXED_VALUE_TYPE_KEYWORD &&
		attrs[contract.SearchAttributeVM] == enums.INDEXED_VALUE_TYPE_KEYWORD_LIST
}

// LoadJob returns the settings of a job.
func (j *Jobs) LoadJob(ctx context.Context, name string) (contract.JobSpec, error) {
	cfg, err := j.Config()
	if err != nil {
		return contract.JobSpec{}, nonRetryable(contract.ErrTypeBadConfig, err)
	}
	job, ok := cfg.Job(name)
	if !ok {
		var names []string
		for _, j := range cfg.Jobs {
			names = append(names, j.Name)
		}
		return contract.JobSpec{}, nonRetryable(contract.ErrTypeBadConfig, fmt.Errorf("job %q is not configured (jobs: %v)", name, names))
	}
	spec := Spec(cfg, job)
	spec.SearchAttributes = j.searchAttributesRegistered(ctx)
	if cfg.Notify.Webhook != "" {
		spec.Notify = append(spec.Notify, NotifyWebhook)
	}
	if cfg.Notify.SMTP.Address != "" {
		spec.Notify = append(spec.Notify, NotifySMTP)
	}
	sched, err := job.Hours()
	if err != nil {
		return contract.JobSpec{}, nonRetryable(contract.ErrTypeBadConfig, fmt.Errorf("job %q windowHours: %w", name, err))
	}
	// The run's start is now (a moment after the workflow started).
	if open, end, opens := sched.At(time.Now()); open {
		spec.WindowEnd = end
	} else {
		spec.WindowOpens = opens
	}
	return spec, nil
}

// Spec turns a configured job into the settings a run carries.
func Spec(cfg *config.Config, job *config.Job) contract.JobSpec {
	s := contract.JobSpec{
		Name: job.Name, Source: job.Source, Target: job.Target, VMs: job.VMs, Window: job.Window,
		Compression: job.Compression, BlockSize: int64(job.BlockSize), ChangeTracking: job.ChangeTracking,
		ExcludeZero: job.Exclude.ZeroBlocks, ExcludeSwap: job.Exclude.Swap, ExcludePaths: job.Exclude.Paths,
		Retention: job.Retention, Parallelism: job.Parallelism, GuestProcessing: job.GuestProcessing.Enabled,
		Overlap: job.Overlap, WindowHours: job.WindowHours, Timezone: job.Timezone,
		Retries: job.Retries, RetryWait: job.RetryWait, RPO: job.RPO,
	}
	if t, ok := cfg.Target(job.Target); ok {
		s.TargetAddress, s.TargetStallTimeout = t.Address, t.StallTimeout
	}
	return s
}

// DescribeVMRun says which run replicates a VM now: the VM's workflow (by
// its id, contract.VMWorkflowID) and the job run it belongs to, so that a run
// that finds the VM taken can name the run in progress.
func (j *Jobs) DescribeVMRun(ctx context.Context, workflowID string) (contract.VMRun, error) {
	if j.Client == nil {
		return contract.VMRun{}, nonRetryable(contract.ErrTypeBadConfig, errors.New("the jobs role has no Temporal client"))
	}
	d, err := j.Client.DescribeWorkflowExecution(ctx, workflowID, "")
	if err != nil {
		return contract.VMRun{}, fmt.Errorf("describing workflow %s: %w", workflowID, err)
	}
	info := d.GetWorkflowExecutionInfo()
	out := contract.VMRun{
		WorkflowID: info.GetExecution().GetWorkflowId(),
		RunID:      info.GetExecution().GetRunId(),
		Running:    info.GetStatus() == enums.WORKFLOW_EXECUTION_STATUS_RUNNING,
	}
	if t := info.GetStartTime(); t != nil {
		out.Started = t.AsTime()
	}
	if p := info.GetParentExecution(); p != nil {
		out.ParentWorkflowID = p.GetWorkflowId()
	}
	if f := info.GetMemo().GetFields()[contract.MemoJob]; f != nil {
		_ = converter.GetDefaultDataConverter().FromPayload(f, &out.Job)
	}
	return out, nil
}
