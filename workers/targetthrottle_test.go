package main

import (
	"testing"
	"time"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/contract"
)

// TestTargetThrottleHoldsTheSumOfItsTransfers: targets[].throttle of
// 8 MiB/s holds the two disks of db01, sent at once, near 8 MiB/s together.
func TestTargetThrottleHoldsTheSumOfItsTransfers(t *testing.T) {
	const limit = 8 << 20
	h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, false, func(c *config.Config) {
		c.Targets[0].Throttle = []config.ThrottleRule{{Limit: "8MiB/s"}}
		c.Jobs[0].Compression = "none"
	})
	start := time.Now()
	res := h.run(contract.ReplicationInput{Job: "demo", VMs: []string{"db01"}})
	took := time.Since(start)
	requireSuccess(t, res)
	var sent int64
	for _, d := range res.VMs[0].Disks {
		sent += d.BytesSent
	}
	if len(res.VMs[0].Disks) != 2 {
		t.Fatalf("db01 has %d disks, want 2", len(res.VMs[0].Disks))
	}
	rate := float64(sent) / took.Seconds()
	t.Logf("%d bytes in %s: %.1f MiB/s", sent, took, rate/(1<<20))
	// The run's time includes its orchestration, so the rate it shows is at
	// most the limit; a limit per disk would let it reach twice that.
	if sent < 3*limit || rate > 1.1*limit || rate < 0.5*limit {
		t.Fatalf("%d bytes in %s (%.1f MiB/s); want about 8 MiB/s for both disks together", sent, took, rate/(1<<20))
	}
	h.checkReplicaMatchesSource(res)
}
