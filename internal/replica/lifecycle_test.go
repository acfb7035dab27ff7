package replica

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func TestLifecycleIsDurableAndBlocksReplication(t *testing.T) {
	_, r, w := newTestReplica(t)
	vm := testVM()
	vm.Config = json.RawMessage(`{"generation":2,"processors":2}`)
	if err := w.Prepare(vm); err != nil {
		t.Fatal(err)
	}
	commitPoints(t, w, vm, rand.New(rand.NewPCG(3, 4)), 2)
	pts, err := r.Points()
	if err != nil {
		t.Fatal(err)
	}
	if l, err := r.Lifecycle(); err != nil || l.State != StateReady || len(l.History) != 0 {
		t.Fatalf("new replica: %+v, %v", l, err)
	}
	cfg, err := r.PointConfig(pts[0].ID)
	if err == nil {
		var v map[string]int
		err = json.Unmarshal(cfg, &v)
		if v["generation"] != 2 || v["processors"] != 2 {
			t.Fatalf("point config %s", cfg)
		}
	}
	if err != nil {
		t.Fatalf("point config %s, %v", cfg, err)
	}

	now := time.Date(2026, 12, 3, 3, 0, 0, 0, time.UTC)
	if err := w.SetLifecycle(Lifecycle{State: StateFailover, Point: pts[0].ID, Operation: "op1"}, now); err != nil {
		t.Fatal(err)
	}
	// What a new process reads: the metadata file.
	l, err := r.Lifecycle()
	if err != nil || l.State != StateFailover || l.Point != pts[0].ID || !l.Since.Equal(now) || len(l.History) != 1 || l.History[0].From != StateReady {
		t.Fatalf("after failover: %+v, %v", l, err)
	}
	_, err = w.Begin(SessionSpec{CheckpointID: "next", BlockSize: 64 << 10})
	var se *StateError
	if !errors.As(err, &se) || !errors.Is(err, ErrWrongState) || !strings.Contains(err.Error(), "failover") {
		t.Fatalf("Begin in failover: %v", err)
	}
	if p, _ := r.Points(); len(p) != 2 {
		t.Fatalf("points changed: %d", len(p))
	}
	// Same state again keeps Since and adds no transition.
	if err := w.SetLifecycle(Lifecycle{State: StateFailover, Point: pts[0].ID, Operation: "op1", ReplicaVM: "web01_replica"}, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if l, _ := r.Lifecycle(); !l.Since.Equal(now) || len(l.History) != 1 || l.ReplicaVM != "web01_replica" {
		t.Fatalf("unchanged state: %+v", l)
	}
	if err := w.SetLifecycle(Lifecycle{State: StateFailover, Point: "nope"}, now); !errors.Is(err, ErrNoPoint) {
		t.Fatalf("unknown point: %v", err)
	}
	if err := w.SetLifecycle(Lifecycle{State: "broken"}, now); err == nil {
		t.Fatal("unknown state accepted")
	}
	if err := w.SetLifecycle(Lifecycle{State: StateReady}, now.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Begin(SessionSpec{CheckpointID: "next", BlockSize: 64 << 10}); err != nil {
		t.Fatalf("Begin when ready again: %v", err)
	}
}
