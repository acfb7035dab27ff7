package metrics

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestRPOGaugesAndBreaches checks the RPO metrics an operator alarms on:
// the age of each VM's newest point at scrape time, the flag while it is
// past the job's rpo, and one breach counted per breach, not per scrape.
func TestRPOGaugesAndBreaches(t *testing.T) {
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	reps := []Replica{
		{Job: "demo", VM: "web01", Newest: now.Add(-10 * time.Second), RPO: 30 * time.Second},
		{Job: "demo", VM: "db01", Newest: now.Add(-45 * time.Second), RPO: 30 * time.Second},
		{Job: "nightly", VM: "file01", Newest: now.Add(-5 * time.Hour)},
	}
	reg := NewRegistry()
	r := NewRPO(reg, func() ([]Replica, error) { return reps, nil }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	r.now = func() time.Time { return now }

	want := `
# HELP replicator_restore_point_age_seconds Age of the VM's newest restore point (since the source froze its data): its current RPO lag.
# TYPE replicator_restore_point_age_seconds gauge
replicator_restore_point_age_seconds{job="demo",vm="db01"} 45
replicator_restore_point_age_seconds{job="demo",vm="web01"} 10
replicator_restore_point_age_seconds{job="nightly",vm="file01"} 18000
# HELP replicator_rpo_exceeded 1 while the VM's newest restore point is older than its job's rpo (or it has none).
# TYPE replicator_rpo_exceeded gauge
replicator_rpo_exceeded{job="demo",vm="db01"} 1
replicator_rpo_exceeded{job="demo",vm="web01"} 0
# HELP replicator_rpo_breaches_total Times a VM's newest restore point became older than its job's rpo (once per breach).
# TYPE replicator_rpo_breaches_total counter
replicator_rpo_breaches_total{job="demo"} 1
`
	names := []string{"replicator_restore_point_age_seconds", "replicator_rpo_exceeded", "replicator_rpo_breaches_total"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
	// Still past: the same breach, not counted again.
	r.Check()
	// web01 falls behind, db01 gets a new point, then falls behind again.
	now = now.Add(25 * time.Second)
	reps[1].Newest = now.Add(-time.Second)
	r.Check()
	now = now.Add(40 * time.Second)
	r.Check()
	if got := testutil.ToFloat64(r.breaches.WithLabelValues("demo")); got != 3 {
		t.Fatalf("breaches %v, want 3 (db01 twice, web01 once)", got)
	}
}
