package activities

import (
	"crypto/tls"
	"crypto/x509"
	"errors"

	"go.temporal.io/sdk/temporal"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/provider"
	"github.com/replicator/replicator/internal/replica"
	"github.com/replicator/replicator/internal/transfer"
)

// classify decides, in one place, whether retrying can fix an error. What it
// cannot fix (a VM or checkpoint that is gone, a bad configuration or name, a
// certificate the other side refuses, a replica held by another writer)
// becomes a non-retryable application error whose type the workflows know;
// everything else is retried by Temporal with backoff.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var cfgErr *config.ValidationError
	var unknownAuthority x509.UnknownAuthorityError
	var certInvalid x509.CertificateInvalidError
	var hostname x509.HostnameError
	var alert tls.AlertError
	switch {
	case transfer.IsRetryable(err):
		return err
	case errors.Is(err, provider.ErrVMNotFound):
		return nonRetryable(contract.ErrTypeVMNotFound, err)
	case errors.Is(err, provider.ErrCheckpointNotFound):
		return nonRetryable(contract.ErrTypeCheckpointNotFound, err)
	case errors.As(err, &cfgErr):
		return nonRetryable(contract.ErrTypeBadConfig, err)
	case errors.Is(err, replica.ErrBadName):
		return nonRetryable(contract.ErrTypeBadInput, err)
	case errors.Is(err, replica.ErrWrongState):
		return nonRetryable(contract.ErrTypeReplicaState, err)
	case errors.Is(err, replica.ErrNoPoint):
		return nonRetryable(contract.ErrTypeNoPoint, err)
	case errors.Is(err, replica.ErrNoReplica):
		return nonRetryable(contract.ErrTypeNoReplica, err)
	case errors.Is(err, replica.ErrLocked):
		return nonRetryable(contract.ErrTypeReplicaLocked, err)
	case errors.As(err, &unknownAuthority), errors.As(err, &certInvalid), errors.As(err, &hostname), errors.As(err, &alert):
		return nonRetryable(contract.ErrTypeAuthentication, err)
	case errors.Is(err, provider.ErrUnsupported):
		return nonRetryable(contract.ErrTypeVMUnsupported, err)
	}
	// A provider's errors say themselves whether a retry can help (Hyper-V:
	// from the return-value table of the service that answered).
	var r interface{ Retryable() bool }
	if errors.As(err, &r) && !r.Retryable() && !errors.Is(err, provider.ErrHostUnreachable) {
		return nonRetryable(contract.ErrTypeHostRefused, err)
	}
	return err
}

func nonRetryable(typ string, err error) error {
	return temporal.NewNonRetryableApplicationError(err.Error(), typ, err)
}
