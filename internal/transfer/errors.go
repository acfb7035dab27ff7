package transfer

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
)

// ErrNoDigests is what Target.Digests returns when the replica has no complete
// restore point (or none with digests): the sender then plans a full copy.
var ErrNoDigests = errors.New("no digests recorded for this disk")

// ErrBadToken is what Target.Admit returns (wrapped) when a Hello does not
// carry the session token of the restore point it names.
var ErrBadToken = errors.New("session token refused")

// ErrReplicaDiffers is what SendDisk returns (wrapped, retryable) when the
// agent found that a block written from its changed parts only does not
// give the block the source has: the replica's earlier point and the change
// tracking disagree. Nothing of that block is acknowledged; the next attempt
// must send whole blocks (SendOptions.WholeBlocks), which SendDiskWithRetry
// does by itself.
var ErrReplicaDiffers = errors.New("the replica differs from the source outside the changed parts of a block")

// RetryableError marks a failure that a new attempt may get past: the
// connection broke, the agent was unreachable or restarting. A retry
// reconnects and resumes at the position the agent acknowledged. Every other
// error is final for this transfer (bad certificates, a refused name, a
// corrupt frame, a source read error) and retrying would fail the same way.
type RetryableError struct{ Err error }

func (e *RetryableError) Error() string { return e.Err.Error() + " (retryable)" }
func (e *RetryableError) Unwrap() error { return e.Err }

// IsRetryable reports whether err, or an error it wraps, is a RetryableError.
func IsRetryable(err error) bool {
	var r *RetryableError
	return errors.As(err, &r)
}

// AgentError is a failure the agent reported on the stream.
type AgentError struct {
	Message   string
	Retryable bool
}

func (e *AgentError) Error() string { return "agent: " + e.Message }

// agentError wraps what the agent said (flags of its error message),
// retryable if the agent says so.
func agentError(msg string, flags uint8) error {
	retry := flags != 0 // version 1 agents send 1 for retryable
	err := error(&AgentError{Message: msg, Retryable: retry})
	if flags&errReplicaDiffers != 0 {
		err = fmt.Errorf("%w: %w", ErrReplicaDiffers, err)
	}
	if retry {
		return &RetryableError{Err: err}
	}
	return err
}

// connError classifies a failure of the connection itself: retryable unless
// the TLS handshake refused a certificate, which no retry will change.
func connError(op string, err error) error {
	err = fmt.Errorf("%s: %w", op, err)
	var (
		alert  tls.AlertError
		verify *tls.CertificateVerificationError
		unk    x509.UnknownAuthorityError
		host   x509.HostnameError
		inval  x509.CertificateInvalidError
	)
	var netErr *net.OpError
	if errors.As(err, &netErr) && netErr.Op == "remote error" { // the peer sent a TLS alert
		return err
	}
	if errors.As(err, &alert) || errors.As(err, &verify) || errors.As(err, &unk) || errors.As(err, &host) || errors.As(err, &inval) {
		return err
	}
	return &RetryableError{Err: err}
}
