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

// agentError wraps what the agent said, retryable if the agent says so.
func agentError(msg string, retry bool) error {
	err := error(&AgentError{Message: msg, Retryable: retry})
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
