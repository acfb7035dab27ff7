package main

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/provider/lab"
	"github.com/replicator/replicator/internal/replica"
)

// TestEncryptedAtRest replicates the demo job into a datastore encrypted
// at rest, twice (a full copy, then an incremental after the guest wrote a
// known pattern): each point matches the source, verifies and exports, no
// file of the datastore holds the pattern, and the datastore refuses to open
// without its key.
func TestEncryptedAtRest(t *testing.T) {
	clearReplicatorEnv(t)
	keyFile := filepath.Join(t.TempDir(), "replicas.key")
	if err := os.WriteFile(keyFile, []byte(strings.Repeat("c3", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, false, func(c *config.Config) {
		c.Agent.EncryptionKeyFile = keyFile
	})
	first := h.run(contract.ReplicationInput{Job: "demo"})
	if first.Status != contract.StatusSuccess {
		t.Fatalf("first run: %+v", first)
	}
	h.checkReplicaMatchesSource(first)

	// The guest writes a recognisable pattern; the next run is incremental.
	pattern := bytes.Repeat([]byte("PLAINTEXT-PATTERN-0123456789abcdef"), 4096)[:64<<10]
	host := lab.New("hv01", h.cfg.Hosts[0].Path)
	ctx := context.Background()
	if err := host.WriteAt(ctx, "web01", 0, pattern, 8<<20); err != nil {
		t.Fatal(err)
	}
	second := h.run(contract.ReplicationInput{Job: "demo"})
	if second.Status != contract.StatusSuccess {
		t.Fatalf("second run: %+v", second)
	}
	h.checkReplicaMatchesSource(second)

	store := h.store()
	for _, vm := range second.VMs {
		r, err := store.Replica("demo", vm.ID)
		if err != nil {
			t.Fatal(err)
		}
		points, err := r.Points()
		if err != nil || len(points) != 2 {
			t.Fatalf("%s: points %v %v", vm.Name, points, err)
		}
		for _, p := range points {
			rep, err := r.Verify(ctx, p.ID)
			if err != nil || !rep.OK {
				t.Fatalf("verify %s %s: %v %+v", vm.Name, p.ID, err, rep)
			}
		}
		if vm.Name == "web01" {
			out := filepath.Join(t.TempDir(), "web01.raw")
			if err := r.Materialize(ctx, vm.RestorePoint, vm.Disks[0].ID, out, replica.FormatRaw); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b[8<<20:8<<20+len(pattern)], pattern) {
				t.Fatal("the export does not hold the pattern the guest wrote")
			}
		}
	}
	probe := pattern[:4096]
	err := filepath.WalkDir(h.cfg.Agent.Datastore, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.Contains(b, probe) || bytes.Contains(b, []byte("PLAINTEXT-PATTERN")) {
			t.Errorf("%s holds the guest's plaintext", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := replica.OpenExisting(h.cfg.Agent.Datastore); err == nil || !strings.Contains(err.Error(), "encrypted") {
		t.Fatalf("the datastore opened without its key: %v", err)
	}
	other, _ := replica.NewKey(bytes.Repeat([]byte{1}, 32))
	if _, err := replica.OpenEncrypted(h.cfg.Agent.Datastore, false, other); err == nil || !strings.Contains(err.Error(), "encrypted with key") {
		t.Fatalf("the datastore opened with another key: %v", err)
	}

	// The point files are not VHDX a hypervisor can attach: no replica VM
	// was registered on the target's host, and a failover is refused,
	// naming the setting, with the replica left ready.
	if h.cfg.Agent.Host.Name == "" {
		t.Fatal("the test configuration has no agent.host")
	}
	dr := lab.New(h.cfg.Agent.Host.Name, h.cfg.Agent.Host.Path)
	if vms, err := dr.VMs(ctx); err == nil && len(vms) > 0 {
		t.Fatalf("replica VMs registered on an encrypted datastore: %+v", vms)
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	run, err := h.c.ExecuteWorkflow(wctx, client.StartWorkflowOptions{ID: contract.ReplicaOpWorkflowID("demo", "web01"), TaskQueue: "replication"},
		contract.FailoverWorkflow, contract.ReplicaOpInput{Job: "demo", VM: "web01"})
	if err != nil {
		t.Fatal(err)
	}
	var rep contract.ReplicaOpResult
	if err := run.Get(wctx, &rep); err == nil || !strings.Contains(err.Error(), "agent.encryptionKeyFile") {
		t.Fatalf("failover on an encrypted datastore: %v %+v", err, rep)
	}
	r, err := h.store().Find("demo", "web01")
	if err != nil {
		t.Fatal(err)
	}
	if l, err := r.Lifecycle(); err != nil || l.State != replica.StateReady {
		t.Fatalf("replica after the refused failover: %+v %v", l, err)
	}
}
