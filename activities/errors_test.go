package activities

import (
	"crypto/x509"
	"errors"
	"fmt"
	"testing"

	"go.temporal.io/sdk/temporal"

	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/provider"
	"github.com/replicator/replicator/internal/replica"
	"github.com/replicator/replicator/internal/transfer"
)

func TestClassify(t *testing.T) {
	cases := []struct {
		name         string
		err          error
		nonRetryable bool
		typ          string
	}{
		{"vm gone", fmt.Errorf("checkpoint of web01: %w", provider.ErrVMNotFound), true, contract.ErrTypeVMNotFound},
		{"checkpoint gone", fmt.Errorf("open disk: %w", provider.ErrCheckpointNotFound), true, contract.ErrTypeCheckpointNotFound},
		{"bad name", fmt.Errorf("replica: %w", replica.ErrBadName), true, contract.ErrTypeBadInput},
		{"locked", fmt.Errorf("lock: %w", replica.ErrLocked), true, contract.ErrTypeReplicaLocked},
		{"unknown CA", fmt.Errorf("dial: %w", x509.UnknownAuthorityError{}), true, contract.ErrTypeAuthentication},
		{"connection cut", &transfer.RetryableError{Err: errors.New("connection reset by peer")}, false, ""},
		{"host down", fmt.Errorf("wmi: %w", provider.ErrHostUnreachable), false, ""},
		{"anything else", errors.New("disk full"), false, ""},
	}
	for _, c := range cases {
		got := classify(c.err)
		var app *temporal.ApplicationError
		isApp := errors.As(got, &app)
		if c.nonRetryable {
			if !isApp || !app.NonRetryable() || app.Type() != c.typ {
				t.Errorf("%s: got %v, want non-retryable %s", c.name, got, c.typ)
			}
			continue
		}
		if isApp && app.NonRetryable() {
			t.Errorf("%s: %v must stay retryable", c.name, got)
		}
		if !errors.Is(got, c.err) && got != c.err {
			t.Errorf("%s: the error must pass through: %v", c.name, got)
		}
	}
	if classify(nil) != nil {
		t.Error("classify(nil) must be nil")
	}
}

func TestSelected(t *testing.T) {
	vm := provider.VM{ID: "0f1e", Name: "web01"}
	for _, c := range []struct {
		patterns []string
		want     bool
	}{
		{[]string{"*"}, true}, {[]string{"web01"}, true}, {[]string{"WEB01"}, true}, {[]string{"0f1e"}, true},
		{[]string{"web*"}, true}, {[]string{"db01"}, false}, {nil, false},
	} {
		if got := selected(vm, c.patterns); got != c.want {
			t.Errorf("selected(%v) = %v, want %v", c.patterns, got, c.want)
		}
	}
}
