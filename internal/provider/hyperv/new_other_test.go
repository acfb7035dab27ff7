//go:build !windows

package hyperv

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/replicator/replicator/config"
)

func TestNewRequiresWindows(t *testing.T) {
	_, err := New(context.Background(), config.Host{Name: "hv01", Provider: "hyperv", Path: "."}, Options{})
	if !errors.Is(err, ErrRequiresWindows) || !strings.Contains(err.Error(), "hyperv provider requires Windows") || !strings.Contains(err.Error(), "hv01") {
		t.Fatalf("err = %v", err)
	}
}
