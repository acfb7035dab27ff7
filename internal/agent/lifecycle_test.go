package agent

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/replica"
)

// A lifecycle change takes only its own replica's slot: it goes through
// while another replica's slot is held, waits (ctx-aware) for its own, and
// leaves the writer a run holds with the run.
func TestLifecycleChangeTakesOnlyItsReplica(t *testing.T) {
	a, err := New(t.TempDir(), "test")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx := context.Background()
	for _, id := range []string{"vm-1", "vm-2"} {
		vm := contract.VM{ID: id, Name: id, Generation: 2, Disks: []contract.Disk{{ID: "0", VirtualSize: 1 << 20, SectorSize: 512}}}
		if _, err := a.Prepare(ctx, "job", vm); err != nil {
			t.Fatal(err)
		}
	}
	toFailover := func(cur replica.Lifecycle) (replica.Lifecycle, error) {
		cur.State = replica.StateFailover
		return cur, nil
	}

	// vm-2's slot is busy (a slow merge, say).
	busy := a.slot("job/vm-2")
	busy.lock <- struct{}{}
	done := make(chan error, 1)
	go func() {
		_, err := a.UpdateLifecycle(ctx, "job", "vm-1", toFailover)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a lifecycle change of vm-1 waited for vm-2's slot")
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := a.UpdateLifecycle(short, "job", "vm-2", toFailover); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("change of a busy replica: %v, want the context's deadline", err)
	}
	busy.unlock()

	// vm-1's writer is held (Prepare took it): still held after the change,
	// and a refused change writes nothing.
	if a.slot("job/vm-1").w == nil {
		t.Fatal("the run's writer of vm-1 was released")
	}
	refused := errors.New("refused")
	if _, err := a.UpdateLifecycle(ctx, "job", "vm-2", func(replica.Lifecycle) (replica.Lifecycle, error) { return replica.Lifecycle{}, refused }); !errors.Is(err, refused) {
		t.Fatal(err)
	}
	for id, want := range map[string]replica.State{"vm-1": replica.StateFailover, "vm-2": replica.StateReady} {
		r, err := a.Store().Replica("job", id)
		if err != nil {
			t.Fatal(err)
		}
		if l, err := r.Lifecycle(); err != nil || l.State != want {
			t.Fatalf("%s: %+v %v, want %s", id, l, err, want)
		}
	}
}
