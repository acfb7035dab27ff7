//go:build !windows

package guest

import (
	"log/slog"

	"github.com/replicator/replicator/config"
)

// NewPowerShellDirect prepares a PowerShell Direct runner; it needs Windows.
func NewPowerShellDirect(cfg config.GuestProcessing, user, passwordFile string, log *slog.Logger) (*PowerShellDirect, error) {
	return nil, ErrRequiresWindows
}
