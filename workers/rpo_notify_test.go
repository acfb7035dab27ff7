package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/replicator/replicator/activities"
	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/metrics"
)

// webhookReceiver records what notify.webhook receives; while failing is
// set it answers 503, as a receiver that is down would.
type webhookReceiver struct {
	mu      sync.Mutex
	got     []contract.RPONotification
	tries   int
	failing bool
}

func (h *webhookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.tries++
	if h.failing {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	var n contract.RPONotification
	b, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(b, &n); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	h.got = append(h.got, n)
}

// take returns what was received since the last take.
func (h *webhookReceiver) take() []contract.RPONotification {
	h.mu.Lock()
	defer h.mu.Unlock()
	got := h.got
	h.got = nil
	return got
}

// TestRPOBreachNotifiedOncePerBreach: a VM passing its rpo is told to the
// webhook once, however many checks (and runs) the breach lasts and across
// a restart of the agent; its recovery once; a receiver that is down gets
// the notification at a later check; a second breach is told again.
func TestRPOBreachNotifiedOncePerBreach(t *testing.T) {
	recv := &webhookReceiver{}
	srv := httptest.NewServer(recv)
	defer srv.Close()
	notify := config.Notify{Webhook: srv.URL + "/rpo"}
	state := filepath.Join(t.TempDir(), rpoNotifiedFile)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	open := func() *rpoNotifier {
		n, err := newRPONotifier("dr01", state, func() (config.Notify, error) { return notify, nil }, activities.NotifyRPO, logger)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	ctx := context.Background()
	t0 := time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)
	web := metrics.Replica{Job: "demo", VM: "web01", RPO: 30 * time.Second, Newest: t0}
	db := metrics.Replica{Job: "demo", VM: "db01", RPO: 30 * time.Second, Newest: t0}
	other := metrics.Replica{Job: "nightly", VM: "web01", Newest: t0.Add(-24 * time.Hour)} // job without rpo
	n := open()

	n.check(ctx, []metrics.Replica{web, db, other}, t0.Add(20*time.Second))
	if got := recv.take(); len(got) != 0 {
		t.Fatalf("nothing is past its rpo, yet the webhook got %+v", got)
	}

	// web01 passes its rpo; db01 got a new point in time.
	db.Newest = t0.Add(25 * time.Second)
	at := t0.Add(40 * time.Second)
	n.check(ctx, []metrics.Replica{web, db, other}, at)
	got := recv.take()
	if len(got) != 1 || got[0].Event != contract.RPOExceeded || got[0].Agent != "dr01" || !got[0].Time.Equal(at) ||
		len(got[0].VMs) != 1 || got[0].VMs[0].VM != "web01" || got[0].VMs[0].Job != "demo" || got[0].VMs[0].RPO != "30s" ||
		got[0].VMs[0].LagSeconds != 40 || got[0].VMs[0].PointTime == nil || !got[0].VMs[0].PointTime.Equal(t0) {
		t.Fatalf("want one rpoExceeded for demo/web01 40 s old, got %+v", got)
	}

	// The breach goes on for checks and runs: nothing more, even after the
	// agent restarts.
	for i := 5; i < 10; i++ {
		at := t0.Add(time.Duration(i) * 10 * time.Second)
		db.Newest = at.Add(-5 * time.Second) // db01 keeps within its rpo
		n.check(ctx, []metrics.Replica{web, db, other}, at)
	}
	n = open()
	db.Newest = t0.Add(100 * time.Second)
	n.check(ctx, []metrics.Replica{web, db, other}, t0.Add(110*time.Second))
	if got := recv.take(); len(got) != 0 {
		t.Fatalf("a breach already told was told again: %+v", got)
	}

	// web01 recovers while the receiver is down: tried at every check,
	// delivered once when it is back.
	recv.failing = true
	web.Newest = t0.Add(115 * time.Second)
	n.check(ctx, []metrics.Replica{web, db, other}, t0.Add(120*time.Second))
	n.check(ctx, []metrics.Replica{web, db, other}, t0.Add(130*time.Second))
	if recv.tries < 3 {
		t.Fatalf("the recovery was not tried at each check while the receiver was down (%d requests)", recv.tries)
	}
	recv.failing = false
	web.Newest = t0.Add(135 * time.Second)
	db.Newest = t0.Add(135 * time.Second)
	n.check(ctx, []metrics.Replica{web, db, other}, t0.Add(140*time.Second))
	n.check(ctx, []metrics.Replica{web, db, other}, t0.Add(150*time.Second))
	got = recv.take()
	if len(got) != 1 || got[0].Event != contract.RPORecovered || len(got[0].VMs) != 1 || got[0].VMs[0].VM != "web01" ||
		got[0].VMs[0].LagSeconds != 5 {
		t.Fatalf("want one rpoRecovered for web01, 5 s old, got %+v", got)
	}

	// A second breach, of both VMs, is one notification naming both.
	n.check(ctx, []metrics.Replica{web, db, other}, t0.Add(200*time.Second))
	got = recv.take()
	if len(got) != 1 || got[0].Event != contract.RPOExceeded || len(got[0].VMs) != 2 {
		t.Fatalf("want one rpoExceeded naming web01 and db01, got %+v", got)
	}

	// The job loses its rpo while past it: forgotten without a "recovered",
	// and told again if it gains one back and is still past it.
	web.RPO, db.RPO = 0, 0
	n.check(ctx, []metrics.Replica{web, db, other}, t0.Add(210*time.Second))
	if got := recv.take(); len(got) != 0 {
		t.Fatalf("a job whose rpo was removed was told %+v", got)
	}
	b, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	var f rpoToldFile
	if err := json.Unmarshal(b, &f); err != nil || len(f.Breached) != 0 {
		t.Fatalf("%s still lists %s (%v)", state, b, err)
	}
}

// TestRPONotifierWithoutChannelsWritesNothing: with no notify channel the
// check neither sends nor records anything, so a breach still open when a
// channel is configured is told then.
func TestRPONotifierWithoutChannelsWritesNothing(t *testing.T) {
	recv := &webhookReceiver{}
	srv := httptest.NewServer(recv)
	defer srv.Close()
	var notify config.Notify
	state := filepath.Join(t.TempDir(), rpoNotifiedFile)
	n, err := newRPONotifier("dr01", state, func() (config.Notify, error) { return notify, nil }, activities.NotifyRPO,
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)
	reps := []metrics.Replica{{Job: "demo", VM: "web01", RPO: time.Minute, Newest: t0}}
	n.check(context.Background(), reps, t0.Add(2*time.Minute))
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Fatalf("%s written with no channel configured (%v)", state, err)
	}
	notify.Webhook = srv.URL
	n.check(context.Background(), reps, t0.Add(3*time.Minute))
	if got := recv.take(); len(got) != 1 || got[0].Event != contract.RPOExceeded {
		t.Fatalf("the open breach was not told once a webhook was set: %+v", got)
	}
}

// TestRPONotifiedFileDamaged: a state file that is not JSON stops the
// agent with an error naming it, rather than telling every breach again.
func TestRPONotifiedFileDamaged(t *testing.T) {
	state := filepath.Join(t.TempDir(), rpoNotifiedFile)
	if err := os.WriteFile(state, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := newRPONotifier("dr01", state, func() (config.Notify, error) { return config.Notify{}, nil }, activities.NotifyRPO,
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), state) {
		t.Fatalf("want an error naming %s, got %v", state, err)
	}
}
