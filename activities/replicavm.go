package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"go.temporal.io/sdk/activity"

	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/provider"
	"github.com/replicator/replicator/internal/replica"
)

// replicaVMName is the replica VM's name for a source VM name: "<vm>_replica",
// with characters a host's folder names cannot hold replaced by '_'.
func replicaVMName(vm string) string {
	var b strings.Builder
	for _, c := range vm {
		if c == '-' || c == '_' || c == '.' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') {
			b.WriteRune(c)
		} else {
			b.WriteByte('_')
		}
	}
	name := strings.TrimLeft(b.String(), ".")
	if name == "" {
		name = "vm"
	}
	return provider.ReplicaVMName(name)
}

// replicaVMSpec is the replica VM of a point: the point's configuration with
// the job's network mapping and re-IP rules, its disks children of the
// point's files.
func (t *Target) replicaVMSpec(job string, r *replica.Replica, p replica.Point) (provider.ReplicaVMSpec, error) {
	info, err := r.Info()
	if err != nil {
		return provider.ReplicaVMSpec{}, err
	}
	var cfg provider.VMConfig
	raw, err := r.PointConfig(p.ID)
	if err != nil {
		return provider.ReplicaVMSpec{}, err
	}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &cfg); err != nil {
			return provider.ReplicaVMSpec{}, fmt.Errorf("restore point %s: VM configuration: %w", p.ID, err)
		}
	} else {
		// A point taken before configurations travelled: the host's defaults.
		cfg = provider.VMConfig{Generation: info.Generation, NetworkAdapters: []provider.NetworkAdapter{}}
	}
	if cfg.Generation == 0 {
		cfg.Generation = info.Generation
	}
	if t.Config != nil {
		c, err := t.Config()
		if err != nil {
			return provider.ReplicaVMSpec{}, nonRetryable(contract.ErrTypeBadConfig, err)
		}
		if j, ok := c.Job(job); ok {
			var rules []provider.ReIPRule
			for _, x := range j.ReIP {
				rules = append(rules, provider.ReIPRule{Source: x.Source, Target: x.Target, Gateway: x.Gateway, DNS: x.DNS})
			}
			cfg = cfg.MapNetworks(j.NetworkMapping, rules)
		}
	}
	spec := provider.ReplicaVMSpec{Name: replicaVMName(info.Name), SourceID: info.ID, Config: cfg}
	for _, d := range p.Disks {
		spec.Disks = append(spec.Disks, provider.ReplicaVMDisk{ID: d.ID, Parent: d.File})
	}
	return spec, nil
}

// refreshReplicaVM registers the replica VM of a ready replica on its newest
// point. Failures are logged, never returned (see CommitRestorePoint).
func (t *Target) refreshReplicaVM(ctx context.Context, job, vmID string) {
	if t.Host == nil || t.Encrypted {
		return // an encrypted datastore has no replica VMs (the worker said so at start)
	}
	logger := activity.GetLogger(ctx)
	if err := t.registerOnNewest(ctx, job, vmID, "", replica.StateReady); err != nil {
		logger.Warn("the replica VM could not be registered on the new restore point", "job", job, "vm", vmID, "error", err)
	}
}

// registerOnNewest registers the replica VM on the replica's newest point and
// records it, provided the replica is in state want.
func (t *Target) registerOnNewest(ctx context.Context, job, vmID, operation string, want replica.State) error {
	r, err := t.Agent.Store().Replica(job, vmID)
	if err != nil {
		return err
	}
	l, err := r.Lifecycle()
	if err != nil {
		return err
	}
	if l.State != want {
		return nil
	}
	pts, err := r.Points()
	if err != nil {
		return err
	}
	if len(pts) == 0 {
		return nil
	}
	newest := pts[len(pts)-1]
	spec, err := t.replicaVMSpec(job, r, newest)
	if err != nil {
		return err
	}
	if _, err := t.Host.RegisterReplicaVM(ctx, spec); err != nil {
		return err
	}
	_, err = t.Agent.UpdateLifecycle(ctx, job, vmID, func(cur replica.Lifecycle) (replica.Lifecycle, error) {
		if cur.State != want {
			return cur, errors.New("the replica changed state while its VM was registered")
		}
		cur.ReplicaVM, cur.Host, cur.VMPoint = spec.Name, t.HostName, newest.ID
		if operation != "" {
			cur.Operation = operation
		}
		return cur, nil
	})
	return err
}
