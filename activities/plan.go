package activities

import (
	"context"
	"fmt"

	"github.com/replicator/replicator/internal/contract"
)

// LoadFailoverPlan returns a failover plan of the configuration, read when
// the plan runs so that an edited plan applies at once.
func (j *Jobs) LoadFailoverPlan(ctx context.Context, name string) (contract.PlanSpec, error) {
	cfg, err := j.Config()
	if err != nil {
		return contract.PlanSpec{}, nonRetryable(contract.ErrTypeBadConfig, err)
	}
	p, ok := cfg.FailoverPlan(name)
	if !ok {
		var names []string
		for _, p := range cfg.FailoverPlans {
			names = append(names, p.Name)
		}
		return contract.PlanSpec{}, nonRetryable(contract.ErrTypeBadConfig, fmt.Errorf("failover plan %q is not configured (failoverPlans: %v)", name, names))
	}
	out := contract.PlanSpec{Name: p.Name}
	for _, v := range p.VMs {
		out.VMs = append(out.VMs, contract.PlanVMSpec{Job: v.Job, VM: v.VM, Delay: v.Delay})
	}
	return out, nil
}
