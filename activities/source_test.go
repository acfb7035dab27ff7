package activities

import (
	"crypto/tls"
	"testing"
	"time"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/contract"
)

// TestSenderDialsTheProxysAddress checks that a proxy dials the agent where
// its own configuration says the target is (targets[] is the proxy's view),
// and falls back to the address the run carries from the jobs worker's
// configuration only when its own file does not name the target.
func TestSenderDialsTheProxysAddress(t *testing.T) {
	own := &config.Config{Targets: []config.Target{{Name: "dr01", Address: "10.9.0.5:7300", StallTimeout: 45 * time.Second}}}
	src := &Source{TLS: &tls.Config{}, Config: func() (*config.Config, error) { return own, nil }}
	job := contract.JobSpec{Name: "lab", Target: "dr01", TargetAddress: "agent:7300", TargetStallTimeout: 30 * time.Second}

	s, err := src.sender(job)
	if err != nil {
		t.Fatal(err)
	}
	if s.Address != "10.9.0.5:7300" || s.StallTimeout != 45*time.Second {
		t.Errorf("sender dials %s (stall %s), want the proxy's own 10.9.0.5:7300 (45s)", s.Address, s.StallTimeout)
	}

	job.Target = "dr02" // not in the proxy's file
	job.TargetAddress = "dr02.example:7300"
	if s, err = src.sender(job); err != nil || s.Address != "dr02.example:7300" || s.StallTimeout != 30*time.Second {
		t.Errorf("sender for a target the proxy's file lacks: %+v, %v; want the run's dr02.example:7300", s, err)
	}
}
