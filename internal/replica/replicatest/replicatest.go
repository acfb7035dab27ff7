// Package replicatest holds what end-to-end tests check of a datastore after
// a run: that every replicated disk at its restore point equals the source
// byte for byte outside the ranges the job excludes, that every restore point
// passes its digests, and that the durable positions of open restore points
// (replica.json) never go back while transfers are killed and resumed.
package replicatest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/diskimage"
	"github.com/replicator/replicator/internal/exclude"
	"github.com/replicator/replicator/internal/provider"
	"github.com/replicator/replicator/internal/replica"
)

// RequireSameImage fails the test at the first byte where a and b differ,
// outside the excluded ranges (which the replica holds as zeros).
func RequireSameImage(t testing.TB, what string, a, b io.ReaderAt, size int64, excluded []exclude.Range) {
	t.Helper()
	const chunk = 1 << 20
	ba, bb := make([]byte, chunk), make([]byte, chunk)
	for off := int64(0); off < size; off += chunk {
		n := min(int64(chunk), size-off)
		if _, err := a.ReadAt(ba[:n], off); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		if _, err := b.ReadAt(bb[:n], off); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		for _, e := range excluded {
			for i := max(e.Offset, off); i < min(e.Offset+e.Length, off+n); i++ {
				ba[i-off], bb[i-off] = 0, 0
			}
		}
		if !bytes.Equal(ba[:n], bb[:n]) {
			for i := int64(0); i < n; i++ {
				if ba[i] != bb[i] {
					t.Fatalf("%s: replica differs from the source at byte %d", what, off+i)
				}
			}
		}
	}
}

// RequireReplicasMatchSource compares every disk of every VM of the result,
// at the VM's restore point in store, with that disk on the source (vms, as
// the source's provider lists them), outside the swap the job excludes.
// Every VM of the result must be among vms.
func RequireReplicasMatchSource(t testing.TB, store *replica.Store, vms []provider.VM, res contract.ReplicationResult) {
	t.Helper()
	ctx := context.Background()
	for _, vmRes := range res.VMs {
		r, err := store.Replica(res.Job, vmRes.ID)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, vm := range vms {
			if vm.ID != vmRes.ID {
				continue
			}
			found = true
			for _, d := range vm.Disks {
				src, err := diskimage.Open(d.Path)
				if err != nil {
					t.Fatal(err)
				}
				dst, err := r.OpenPoint(vmRes.RestorePoint, d.ID)
				if err != nil {
					t.Fatal(err)
				}
				_, excluded, err := exclude.Analyze(ctx, src, src.Size(), src.SectorSize(), exclude.Options{Swap: true})
				if err != nil {
					t.Fatal(err)
				}
				RequireSameImage(t, vm.Name+" disk "+d.ID, src, dst, src.Size(), excluded)
				src.Close()
				dst.Close()
			}
		}
		if !found {
			t.Fatalf("VM %s (%s) of the result is not on the source host", vmRes.Name, vmRes.ID)
		}
	}
}

// RequirePointsVerify checks every restore point of every VM of the result
// against the digests it recorded.
func RequirePointsVerify(t testing.TB, store *replica.Store, res contract.ReplicationResult) {
	t.Helper()
	for _, vm := range res.VMs {
		r, err := store.Replica(res.Job, vm.ID)
		if err != nil {
			t.Fatal(err)
		}
		points, err := r.Points()
		if err != nil || len(points) == 0 {
			t.Fatalf("VM %s: restore points %v, %v", vm.Name, points, err)
		}
		for _, p := range points {
			if !p.Complete {
				t.Fatalf("VM %s: point %s listed but not complete", vm.Name, p.ID)
			}
			if rep, err := r.Verify(context.Background(), p.ID); err != nil || !rep.OK {
				t.Fatalf("VM %s: verify point %s: %+v, %v", vm.Name, p.ID, rep, err)
			}
		}
	}
}

// Durable reads the positions the agent has made durable in the open
// restore points of a job, by replica, point and disk. A replica.json that
// cannot be read or parsed now (one being replaced) is left out: the next
// call reads it again.
func Durable(datastore, job string) map[string]int64 {
	files, _ := filepath.Glob(filepath.Join(datastore, job, "*", "replica.json"))
	out := map[string]int64{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var m struct {
			Session *struct {
				PointID string `json:"pointId"`
				Disks   []struct {
					ID       string `json:"id"`
					Position int64  `json:"position"`
				} `json:"disks"`
			} `json:"session"`
		}
		if json.Unmarshal(b, &m) != nil || m.Session == nil {
			continue
		}
		for _, d := range m.Session.Disks {
			out[f+" "+m.Session.PointID+" "+d.ID] = d.Position
		}
	}
	return out
}

// Total is the sum of the positions.
func Total(positions map[string]int64) (n int64) {
	for _, v := range positions {
		n += v
	}
	return n
}

// PositionWatch polls the durable positions of a job until stopped and
// records the first that went back: a resumed transfer continues from where
// the agent got, never below, whatever process died.
type PositionWatch struct {
	stop chan struct{}
	done chan string // what went back, empty if nothing
}

// WatchPositions starts watching the job's durable positions in datastore.
func WatchPositions(datastore, job string) *PositionWatch {
	w := &PositionWatch{stop: make(chan struct{}), done: make(chan string, 1)}
	go func() {
		seen := map[string]int64{}
		for {
			select {
			case <-w.stop:
				w.done <- ""
				return
			case <-time.After(20 * time.Millisecond):
			}
			for k, v := range Durable(datastore, job) {
				if v < seen[k] {
					w.done <- fmt.Sprintf("%s went back from %d to %d", k, seen[k], v)
					return
				}
				seen[k] = v
			}
		}
	}()
	return w
}

// Stop ends the watch and returns what went back, or "".
func (w *PositionWatch) Stop() string {
	close(w.stop)
	return <-w.done
}

// Check ends the watch and fails the test if a position went back.
func (w *PositionWatch) Check(t testing.TB) {
	t.Helper()
	if back := w.Stop(); back != "" {
		t.Fatalf("a durable position went back: %s", back)
	}
}

// AnyResumed reports whether a disk of the result resumed from an
// acknowledged position.
func AnyResumed(res contract.ReplicationResult) bool {
	for _, vm := range res.VMs {
		for _, d := range vm.Disks {
			if d.ResumedFromByte > 0 {
				return true
			}
		}
	}
	return false
}
