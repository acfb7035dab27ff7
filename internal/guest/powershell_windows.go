//go:build windows

package guest

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"strings"

	"github.com/replicator/replicator/config"
)

// NewPowerShellDirect prepares a PowerShell Direct runner that runs guest
// commands as user (password read from passwordFile) on this Hyper-V host.
func NewPowerShellDirect(cfg config.GuestProcessing, user, passwordFile string, log *slog.Logger) (*PowerShellDirect, error) {
	return newPowerShellDirect(cfg, user, passwordFile, log, runPowerShell)
}

// runPowerShell runs one powershell.exe invocation; arguments are passed as
// a list, never through a shell.
func runPowerShell(ctx context.Context, inv psInvocation) (commandResult, error) {
	cmd := exec.CommandContext(ctx, inv.Name, inv.Args...)
	cmd.Env = append(os.Environ(), inv.Env...)
	cmd.Stdin = strings.NewReader(inv.Stdin)
	stderr := &limitedBuffer{limit: stderrLimit}
	cmd.Stderr = stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return commandResult{}, nil
	case ctx.Err() != nil:
		return commandResult{}, ctx.Err()
	case errors.As(err, &exitErr):
		return commandResult{ExitStatus: exitErr.ExitCode(), Stderr: stderr.String()}, nil
	default:
		return commandResult{}, err
	}
}
