package activities

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/provider"
	"github.com/replicator/replicator/internal/transfer"
)

// Bounds on what an activity input may ask of the target before anything
// is allocated or created. A VHDX holds at most 64 TiB (MS-VHDX 2.2.2,
// VirtualDiskSize); a Hyper-V VM has at most 4 SCSI controllers of 64 disks
// plus 2 IDE controllers of 2 (Hyper-V maximums for Windows Server 2016+).
const (
	maxDiskSize   = 64 << 40
	maxDisksPerVM = 4*64 + 4
)

// configuredJob re-reads the job named name from the local configuration:
// settings come from there, never from a workflow's input, which anyone who
// can start a workflow can forge.
func configuredJob(load func() (*config.Config, error), name string) (*config.Config, *config.Job, contract.JobSpec, error) {
	if load == nil {
		return nil, nil, contract.JobSpec{}, nonRetryable(contract.ErrTypeBadConfig, fmt.Errorf("job %q: this worker has no configuration to check it against", name))
	}
	cfg, err := load()
	if err != nil {
		return nil, nil, contract.JobSpec{}, nonRetryable(contract.ErrTypeBadConfig, err)
	}
	job, ok := cfg.Job(name)
	if !ok {
		return nil, nil, contract.JobSpec{}, nonRetryable(contract.ErrTypeBadInput, fmt.Errorf("job %q is not configured on this worker", name))
	}
	return cfg, job, Spec(cfg, job), nil
}

// sourceJob is the configured job name, which must read host: the source
// side of an activity takes the job from this worker's file, never from
// its input.
func sourceJob(load func() (*config.Config, error), name, host string) (*config.Job, error) {
	_, job, _, err := configuredJob(load, name)
	if err != nil {
		return nil, err
	}
	if host != job.Source {
		return nil, nonRetryable(contract.ErrTypeBadInput, fmt.Errorf("job %q reads host %q, not %q", name, job.Source, host))
	}
	return job, nil
}

// checkSpec refuses a carried job spec that differs from the configured
// one, naming every setting that differs.
func checkSpec(carried, configured contract.JobSpec) error {
	a, b := specFields(carried), specFields(configured)
	var diffs []string
	for k, v := range b {
		if string(a[k]) != string(v) {
			diffs = append(diffs, fmt.Sprintf("%s %s (configured %s)", k, orNone(a[k]), v))
		}
	}
	if len(diffs) == 0 {
		return nil
	}
	sort.Strings(diffs)
	return nonRetryable(contract.ErrTypeBadInput, fmt.Errorf("job %q: the input carries settings the configuration does not: %v; settings come from the configuration, start a new run", configured.Name, diffs))
}

// specFields are the settings of the data path, by their JSON names. The
// window, permitted hours, overlap, retries, parallelism, search attributes
// and notifications are the job workflow's own business (and the window's
// end is computed at the run's start), and guest processing is re-read
// where the checkpoint is taken.
func specFields(s contract.JobSpec) map[string]json.RawMessage {
	b, _ := json.Marshal(s) // plain data: cannot fail
	var m map[string]json.RawMessage
	_ = json.Unmarshal(b, &m)
	for _, k := range []string{"window", "windowHours", "timezone", "windowEnd", "windowOpens", "overlap",
		"retries", "retryWait", "rpo", "parallelism", "searchAttributes", "notify", "guestProcessing"} {
		delete(m, k)
	}
	return m
}

func orNone(b json.RawMessage) string {
	if b == nil {
		return "(none)"
	}
	return string(b)
}

// jobVM returns the VM of the source host that id names, if the job selects it.
func jobVM(ctx context.Context, p provider.Provider, job *config.Job, id string) (provider.VM, error) {
	vms, err := p.VMs(ctx)
	if err != nil {
		return provider.VM{}, classify(err)
	}
	for _, vm := range vms {
		if vm.ID != id {
			continue
		}
		if !selected(vm, job.VMs) {
			return provider.VM{}, nonRetryable(contract.ErrTypeBadInput, fmt.Errorf("VM %q (id %s) is not one of job %q's VMs %v", vm.Name, id, job.Name, job.VMs))
		}
		return vm, nil
	}
	return provider.VM{}, nonRetryable(contract.ErrTypeVMNotFound, fmt.Errorf("VM id %q: %w on host %s", id, provider.ErrVMNotFound, job.Source))
}

// targetJob re-reads a job on the target and checks that it replicates to
// this agent.
func (t *Target) targetJob(name string) (*config.Job, error) {
	_, job, _, err := configuredJob(t.Config, name)
	if err != nil {
		return nil, err
	}
	if job.Target != t.Name {
		return nil, nonRetryable(contract.ErrTypeBadInput, fmt.Errorf("job %q replicates to target %q, not to this agent (%q)", name, job.Target, t.Name))
	}
	return job, nil
}

// checkVM bounds what a VM description may ask the target to create.
func checkVM(vm contract.VM) error {
	if err := transfer.ValidName("vm", vm.ID); err != nil {
		return nonRetryable(contract.ErrTypeBadInput, err)
	}
	if len(vm.Disks) == 0 || len(vm.Disks) > maxDisksPerVM {
		return nonRetryable(contract.ErrTypeBadInput, fmt.Errorf("VM %s: %d disks, want 1 to %d", vm.ID, len(vm.Disks), maxDisksPerVM))
	}
	var ids []string
	for _, d := range vm.Disks {
		if err := transfer.ValidName("disk", d.ID); err != nil {
			return nonRetryable(contract.ErrTypeBadInput, fmt.Errorf("VM %s: %w", vm.ID, err))
		}
		if slices.Contains(ids, d.ID) {
			return nonRetryable(contract.ErrTypeBadInput, fmt.Errorf("VM %s: disk %s appears twice", vm.ID, d.ID))
		}
		ids = append(ids, d.ID)
		if d.VirtualSize <= 0 || d.VirtualSize > maxDiskSize {
			return nonRetryable(contract.ErrTypeBadInput, fmt.Errorf("VM %s disk %s: size %d outside (0, 64 TiB]", vm.ID, d.ID, d.VirtualSize))
		}
		if d.SectorSize != 0 && d.SectorSize != 512 && d.SectorSize != 4096 {
			return nonRetryable(contract.ErrTypeBadInput, fmt.Errorf("VM %s disk %s: sector size %d, want 512 or 4096", vm.ID, d.ID, d.SectorSize))
		}
	}
	// The VM's hardware is kept with every restore point and becomes the
	// replica VM's: bounded and checked before it is stored.
	if len(vm.Config) > maxVMConfigBytes {
		return nonRetryable(contract.ErrTypeBadInput, fmt.Errorf("VM %s: configuration of %d bytes, at most %d", vm.ID, len(vm.Config), maxVMConfigBytes))
	}
	if len(vm.Config) > 0 {
		var c provider.VMConfig
		if err := json.Unmarshal(vm.Config, &c); err != nil {
			return nonRetryable(contract.ErrTypeBadInput, fmt.Errorf("VM %s: configuration: %w", vm.ID, err))
		}
		if err := c.Check(); err != nil {
			return nonRetryable(contract.ErrTypeBadInput, fmt.Errorf("VM %s: configuration: %w", vm.ID, err))
		}
	}
	return nil
}

// maxVMConfigBytes bounds a VM's configuration as JSON (a few KiB for a VM
// with every adapter and disk slot Hyper-V allows).
const maxVMConfigBytes = 256 << 10
