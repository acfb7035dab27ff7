package activities

import (
	"context"
	"fmt"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/contract"
)

// Jobs loads job settings at the start of each run, so that an edited
// configuration file applies at the next run without restarting workers.
type Jobs struct {
	Config func() (*config.Config, error)
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
	return Spec(cfg, job), nil
}

// Spec turns a configured job into the settings a run carries.
func Spec(cfg *config.Config, job *config.Job) contract.JobSpec {
	s := contract.JobSpec{
		Name: job.Name, Source: job.Source, Target: job.Target, VMs: job.VMs, Window: job.Window,
		Compression: job.Compression, BlockSize: int64(job.BlockSize), ChangeTracking: job.ChangeTracking,
		ExcludeZero: job.Exclude.ZeroBlocks, ExcludeSwap: job.Exclude.Swap, ExcludePaths: job.Exclude.Paths,
		Retention: job.Retention, Parallelism: job.Parallelism, GuestProcessing: job.GuestProcessing.Enabled,
	}
	if t, ok := cfg.Target(job.Target); ok {
		s.TargetAddress, s.TargetStallTimeout = t.Address, t.StallTimeout
	}
	return s
}
