package guest

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/replicator/replicator/internal/provider"
)

// scriptedRunner is a Runner whose phases fail as told and that records calls.
type scriptedRunner struct {
	ev              *events
	preErr, thawErr error
}

func (r *scriptedRunner) PreFreeze(ctx context.Context, vm string) error {
	r.ev.add("pre-freeze " + vm)
	return r.preErr
}

func (r *scriptedRunner) PostThaw(ctx context.Context, vm string) error {
	r.ev.add("post-thaw " + vm)
	return r.thawErr
}

func TestProcessPolicies(t *testing.T) {
	preErr := errors.New("fsfreeze exited with status 1")
	cpErr := errors.New("checkpoint failed")
	for _, tc := range []struct {
		name        string
		pre, cp     error
		onFailure   string
		consistency provider.Consistency
		wantErr     error
		warning     string
		events      []string
	}{
		{"success", nil, nil, OnFailureFail, provider.ApplicationConsistent, nil, "", []string{"pre-freeze vm1", "checkpoint app", "post-thaw vm1"}},
		{"pre-freeze fails, fail", preErr, nil, OnFailureFail, provider.CrashConsistent, ErrPreFreeze, "", []string{"pre-freeze vm1", "post-thaw vm1"}},
		{"pre-freeze fails, empty policy fails", preErr, nil, "", provider.CrashConsistent, ErrPreFreeze, "", []string{"pre-freeze vm1", "post-thaw vm1"}},
		{"pre-freeze fails, continue", preErr, nil, OnFailureContinue, provider.CrashConsistent, nil, "crash-consistent", []string{"pre-freeze vm1", "checkpoint crash", "post-thaw vm1"}},
		{"checkpoint fails", nil, cpErr, OnFailureFail, provider.ApplicationConsistent, cpErr, "", []string{"pre-freeze vm1", "checkpoint app", "post-thaw vm1"}},
		{"crash checkpoint fails", preErr, cpErr, OnFailureContinue, provider.CrashConsistent, cpErr, "crash-consistent", []string{"pre-freeze vm1", "checkpoint crash", "post-thaw vm1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := &events{}
			r := &scriptedRunner{ev: ev, preErr: tc.pre}
			c, warning, err := Process(context.Background(), r, "vm1", tc.onFailure, func(ctx context.Context, c provider.Consistency) error {
				if c == provider.ApplicationConsistent {
					ev.add("checkpoint app")
				} else {
					ev.add("checkpoint crash")
				}
				return tc.cp
			})
			if c != tc.consistency {
				t.Errorf("consistency %v, want %v", c, tc.consistency)
			}
			if (tc.wantErr == nil) != (err == nil) || (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) {
				t.Errorf("err = %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr == ErrPreFreeze && !errors.Is(err, preErr) {
				t.Errorf("err %v does not wrap the pre-freeze failure", err)
			}
			if (tc.warning == "") != (warning == "") || !strings.Contains(warning, tc.warning) {
				t.Errorf("warning %q, want %q", warning, tc.warning)
			}
			if got := ev.all(); !reflect.DeepEqual(got, tc.events) {
				t.Errorf("events %q, want %q", got, tc.events)
			}
		})
	}
}
