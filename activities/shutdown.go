package activities

import (
	"context"
	"fmt"

	"github.com/replicator/replicator/internal/contract"
)

// vmStopper is a source host that can shut a VM down (the lab host can).
type vmStopper interface {
	StopVM(ctx context.Context, name string) error
}

// ShutdownVM shuts a source VM down before a planned failover, so that
// nothing it writes afterwards is missed by the final incremental run.
func (s *Source) ShutdownVM(ctx context.Context, in contract.ShutdownInput) error {
	p, err := s.provider(in.Host)
	if err != nil {
		return err
	}
	st, ok := p.(vmStopper)
	if !ok {
		return nonRetryable(contract.ErrTypeBadConfig, fmt.Errorf("host %s cannot shut VMs down in this release: shut VM %s down yourself, then run `failover` after a final `run`", in.Host, in.VMID))
	}
	return classify(st.StopVM(ctx, in.VMID))
}
