package throttle

import (
	"context"
	"testing"
	"time"

	"github.com/replicator/replicator/internal/hours"
)

func TestFirstMatchingRuleWins(t *testing.T) {
	day, err := hours.Parse("Mon-Fri 08:00-18:00", time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	th := New([]Rule{{BytesPerSecond: 50 << 20, Hours: day}, {BytesPerSecond: 200 << 20}})
	thursdayNoon := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	if got := th.Limit(thursdayNoon); got != 50<<20 {
		t.Fatalf("office hours: %d", got)
	}
	if got := th.Limit(thursdayNoon.Add(8 * time.Hour)); got != 200<<20 {
		t.Fatalf("night: %d", got)
	}
	th.SetRules([]Rule{{BytesPerSecond: 50 << 20, Hours: day}})
	if got := th.Limit(thursdayNoon.Add(8 * time.Hour)); got != 0 {
		t.Fatalf("no rule holds: %d, want unlimited", got)
	}
}

func TestWaitPacesAndStopsAtDeadline(t *testing.T) {
	th := New([]Rule{{BytesPerSecond: 1 << 20}})
	start := time.Now()
	if err := th.Wait(context.Background(), 1<<20+(1<<20)/2); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < time.Second || d > 3*time.Second {
		t.Fatalf("1.5 MiB at 1 MiB/s took %s", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start = time.Now()
	if err := th.Wait(ctx, 10<<20); err == nil {
		t.Fatal("10 MiB passed a 1 MiB/s throttle within 200 ms")
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("the wait gave up after %s, before its deadline", d)
	}
}
