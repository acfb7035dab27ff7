// Package guest runs application-aware processing inside virtual machines:
// pre-freeze actions before a checkpoint (flush and freeze applications and
// file systems) and post-thaw actions after it. Linux guests are reached over
// SSH with a pinned host key; Windows guests on Hyper-V through PowerShell
// Direct from the host. Process applies a job's failure policy around the
// checkpoint.
package guest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/replicator/replicator/internal/provider"
)

// Runner runs a job's guest actions for one VM.
type Runner interface {
	// PreFreeze runs the pre-freeze commands in order and stops at the first failure.
	PreFreeze(ctx context.Context, vm string) error
	// PostThaw runs every post-thaw command, even after one fails.
	PostThaw(ctx context.Context, vm string) error
}

// Failure policies of config GuestProcessing.OnFailure.
const (
	OnFailureFail     = "fail"
	OnFailureContinue = "continue"
)

// DefaultTimeout bounds one guest command when the configuration gives none.
const DefaultTimeout = 10 * time.Minute

// postThawTimeout bounds the post-thaw phase when the caller's context is
// already done: the guest must be thawed even when the run was cancelled.
const postThawTimeout = 5 * time.Minute

// ErrPreFreeze marks a failed pre-freeze phase.
var ErrPreFreeze = errors.New("guest pre-freeze failed")

// Process runs guest processing around a checkpoint:
//
//   - pre-freeze; if it succeeds, an application-consistent checkpoint;
//   - if it fails and onFailure is "continue", a crash-consistent checkpoint
//     and a warning; if it is "fail" (or anything else), no checkpoint and an
//     error wrapping ErrPreFreeze;
//   - post-thaw in every case where pre-freeze ran, even when the checkpoint
//     failed or ctx was cancelled, so that no application stays frozen (after a
//     failed pre-freeze it undoes whatever part of it took effect).
//
// A failed post-thaw after a good checkpoint does not fail the checkpoint: it
// comes back as a warning. The returned consistency is what the checkpoint
// was asked for.
func Process(ctx context.Context, r Runner, vm string, onFailure string, checkpoint func(ctx context.Context, c provider.Consistency) error) (consistency provider.Consistency, warning string, err error) {
	var warnings []string
	preErr := r.PreFreeze(ctx, vm)
	defer func() {
		thawCtx, cancel := thawContext(ctx)
		defer cancel()
		if thawErr := r.PostThaw(thawCtx, vm); thawErr != nil {
			warnings = append(warnings, fmt.Sprintf("post-thaw on VM %s failed: %v", vm, thawErr))
		}
		warning = strings.Join(warnings, "; ")
	}()

	if preErr == nil {
		consistency = provider.ApplicationConsistent
		if err := checkpoint(ctx, consistency); err != nil {
			return consistency, "", err
		}
		return consistency, "", nil
	}
	consistency = provider.CrashConsistent
	if onFailure != OnFailureContinue {
		return consistency, "", fmt.Errorf("%w on VM %s (policy %q): %w", ErrPreFreeze, vm, onFailure, preErr)
	}
	warnings = append(warnings, fmt.Sprintf("pre-freeze on VM %s failed, checkpoint is crash-consistent: %v", vm, preErr))
	if err := checkpoint(ctx, consistency); err != nil {
		return consistency, "", err
	}
	return consistency, "", nil
}

// thawContext keeps ctx's values but not its cancellation, bounded by
// postThawTimeout, so a cancelled run still thaws its guest.
func thawContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if ctx.Err() == nil {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(context.WithoutCancel(ctx), postThawTimeout)
}
