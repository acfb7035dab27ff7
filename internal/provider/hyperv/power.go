package hyperv

import (
	"context"
	"fmt"
	"time"
)

// Power control of a VM, for planned failover (shut the source down) and
// failback (start it again). Values from learn.microsoft.com:
// Msvm_ComputerSystem.RequestStateChange (RequestedState 2 Enabled, 3
// Disabled; returns 0 completed, 4096 job started) and
// Msvm_ShutdownComponent.InitiateShutdown(Force, Reason), which asks the
// guest to shut down through the shutdown integration service.
const (
	classShutdownComponent = "Msvm_ShutdownComponent"
	requestedStateEnabled  = uint16(2)
	enabledStateEnabled    = 2
	enabledStateDisabled   = 3
	// shutdownTimeout bounds the wait for a guest to finish shutting down.
	shutdownTimeout = 10 * time.Minute
)

// StartVM starts a VM (one already running is left alone).
func (p *Provider) StartVM(ctx context.Context, vmID string) error {
	op := fmt.Sprintf("start VM %s", vmID)
	sys, err := p.findVM(ctx, vmID)
	if err != nil {
		return err
	}
	if st, _ := sys.int("EnabledState"); st == enabledStateEnabled {
		return nil
	}
	_, err = p.call(ctx, op, kindGeneric, sys.Path, "RequestStateChange", map[string]any{"RequestedState": requestedStateEnabled}, []string{"Job"})
	return err
}

// StopVM shuts a VM down cleanly through its guest's shutdown service and
// waits until it is off (one already off is left alone). A guest without
// the service, or one that does not finish within shutdownTimeout, is an
// error: the VM is never turned off hard, since a planned failover must not
// lose what the guest has not written yet.
func (p *Provider) StopVM(ctx context.Context, vmID string) error {
	op := fmt.Sprintf("shut VM %s down", vmID)
	sys, err := p.findVM(ctx, vmID)
	if err != nil {
		return err
	}
	if st, _ := sys.int("EnabledState"); st == enabledStateDisabled {
		return nil
	}
	q, err := selectWhere(classShutdownComponent, "SystemName", vmID)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	comps, err := p.c.Query(ctx, q)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if len(comps) == 0 {
		return &Error{Op: op, Description: "the guest has no shutdown integration service; shut it down from inside"}
	}
	if _, err := p.call(ctx, op, kindGeneric, comps[0].Path, "InitiateShutdown",
		map[string]any{"Force": false, "Reason": "replicator: planned failover or failback"}, []string{"Job"}); err != nil {
		return err
	}
	deadline := p.now().Add(shutdownTimeout)
	wait := p.pollInterval
	for {
		sys, err := p.findVM(ctx, vmID)
		if err != nil {
			return err
		}
		if st, _ := sys.int("EnabledState"); st == enabledStateDisabled {
			return nil
		}
		if p.now().After(deadline) {
			return &Error{Op: op, Description: fmt.Sprintf("the guest did not shut down within %s", shutdownTimeout), retryable: true}
		}
		if err := p.sleep(ctx, wait); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		wait = min(2*wait, p.maxPollInterval)
	}
}

var _ interface {
	StartVM(context.Context, string) error
	StopVM(context.Context, string) error
} = (*Provider)(nil)
