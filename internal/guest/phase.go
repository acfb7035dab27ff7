package guest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// stderrLimit is how much of a failed command's standard error is kept (for
// the proxy's log: never for errors, which end up in Temporal's histories,
// where what a guest prints could leak data or forge lines).
const stderrLimit = 1024

// commandResult is how one guest command ended.
type commandResult struct {
	ExitStatus int
	Stderr     string // already truncated
}

// execFunc runs one command in the guest within ctx.
type execFunc func(ctx context.Context, command string) (commandResult, error)

// phase is one list of guest commands (pre-freeze or post-thaw) of one VM.
type phase struct {
	name        string // "pre-freeze" or "post-thaw"
	vm          string
	where       string // the guest, for messages: "10.0.0.5:22" or "PowerShell Direct"
	commands    []string
	timeout     time.Duration
	stopAtFirst bool
	log         *slog.Logger
}

// run executes the commands in order, each bounded by the timeout.
func (p phase) run(ctx context.Context, exec execFunc) error {
	timeout := p.timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	var errs []error
	for i, cmd := range p.commands {
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, fmt.Errorf("%s on VM %s: before command %d of %d: %w", p.name, p.vm, i+1, len(p.commands), err))...)
		}
		what := fmt.Sprintf("%s command %d of %d (%s) on VM %s (%s)", p.name, i+1, len(p.commands), commandName(cmd), p.vm, p.where)
		cctx, cancel := context.WithTimeout(ctx, timeout)
		start := time.Now()
		res, err := exec(cctx, cmd)
		timedOut := cctx.Err() == context.DeadlineExceeded && ctx.Err() == nil
		cancel()
		switch {
		case timedOut:
			err = fmt.Errorf("%s: timed out after %s", what, timeout)
		case err != nil:
			err = fmt.Errorf("%s: %w", what, err)
		case res.ExitStatus != 0:
			err = fmt.Errorf("%s: exited with status %d%s", what, res.ExitStatus, stderrNote(res.Stderr))
		}
		if err == nil {
			p.log.Info("guest command done", "phase", p.name, "vm", p.vm, "command", i+1, "of", len(p.commands), "duration", time.Since(start).Round(time.Millisecond))
			continue
		}
		p.log.Warn("guest command failed", "phase", p.name, "vm", p.vm, "command", i+1, "of", len(p.commands), "err", err, "stderr", cleanStderr(res.Stderr))
		if p.stopAtFirst {
			return err
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// commandName is the program a command runs, for messages: the whole
// command line may carry an application's password.
func commandName(cmd string) string {
	f := strings.Fields(cmd)
	if len(f) == 0 {
		return `""`
	}
	if len(f) == 1 {
		return fmt.Sprintf("%q", f[0])
	}
	return fmt.Sprintf("%q …", f[0])
}

// stderrNote tells where a failed command's standard error went.
func stderrNote(stderr string) string {
	if strings.TrimSpace(stderr) == "" {
		return ""
	}
	return " (its standard error is in the proxy's log)"
}

// cleanStderr is standard error as the log shows it: trimmed, control
// characters but newlines and tabs escaped, so that a guest cannot forge
// log lines or terminal sequences.
func cleanStderr(stderr string) string {
	var b strings.Builder
	for _, r := range strings.TrimSpace(stderr) {
		switch {
		case r == '\n' || r == '\t':
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
			fmt.Fprintf(&b, "\\x%02x", r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// limitedBuffer keeps the first limit bytes written to it and counts the rest.
type limitedBuffer struct {
	buf     bytes.Buffer
	limit   int
	dropped int64
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	room := b.limit - b.buf.Len()
	if room < 0 {
		room = 0
	}
	if len(p) > room {
		b.buf.Write(p[:room])
		b.dropped += int64(len(p) - room)
	} else {
		b.buf.Write(p)
	}
	return len(p), nil
}

func (b *limitedBuffer) String() string {
	if b.dropped > 0 {
		return fmt.Sprintf("%s… (%d more bytes)", b.buf.String(), b.dropped)
	}
	return b.buf.String()
}
