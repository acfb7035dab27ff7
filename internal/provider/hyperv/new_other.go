//go:build !windows

package hyperv

import (
	"context"
	"fmt"

	"github.com/replicator/replicator/config"
)

// New connects to the Hyper-V host of the configuration. It needs Windows;
// elsewhere it fails with ErrRequiresWindows.
func New(ctx context.Context, host config.Host, opts Options) (*Provider, error) {
	return nil, fmt.Errorf("host %q: %w", host.Name, ErrRequiresWindows)
}

// Connect opens WMI on the host of the configuration (see New).
func Connect(ctx context.Context, host config.Host) (WMI, error) {
	return nil, fmt.Errorf("host %q: %w", host.Name, ErrRequiresWindows)
}
