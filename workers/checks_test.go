package main

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/pki"
	"github.com/replicator/replicator/internal/provider/lab"
	"github.com/replicator/replicator/internal/testkit"
	"github.com/replicator/replicator/internal/transfer"
	"github.com/replicator/replicator/internal/transfer/transfertest"
)

// runErr runs the job and returns its error (nil for a result).
func (h *harness) runErr(in contract.ReplicationInput) (contract.ReplicationResult, error) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run, err := h.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: fmt.Sprintf("%s-%d", in.Job, time.Now().UnixNano()), TaskQueue: "replication"},
		contract.ReplicationWorkflow, in)
	if err != nil {
		h.t.Fatal(err)
	}
	var res contract.ReplicationResult
	err = run.Get(ctx, &res)
	return res, err
}

// requireCheckFails runs the job and wants it to fail within limit with an
// error holding every one of want, and no checkpoint made.
func requireCheckFails(t *testing.T, h *harness, in contract.ReplicationInput, limit time.Duration, want ...string) string {
	t.Helper()
	start := time.Now()
	res, err := h.runErr(in)
	took := time.Since(start)
	if err == nil {
		t.Fatalf("the run did not fail: %+v", res)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("the run failed with %q; want it to say %q", err, w)
		}
	}
	if took > limit {
		t.Fatalf("the run took %s to fail, want at most %s", took, limit)
	}
	for _, vm := range []string{"web01", "db01"} {
		if cps := jobCheckpoints(t, h, vm); len(cps) != 0 {
			t.Fatalf("a run that failed its checks made checkpoints: %v", cps)
		}
	}
	return err.Error()
}

// TestChecksFailFastNamingTheSetting: a wrong target address, an agent whose
// certificate the proxy does not trust, an agent that is down and a datastore
// too small for the VM each fail the run within seconds, before any
// checkpoint, with four different messages naming the setting at fault.
func TestChecksFailFastNamingTheSetting(t *testing.T) {
	h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, false, nil)
	in := contract.ReplicationInput{Job: "demo", VMs: []string{"web01"}}
	good := h.cfg.Targets[0].Address
	var msgs []string

	// Wrong address: nothing listens there, while the agent runs elsewhere.
	h.cfg.Targets[0].Address = testkit.FreeAddr(t)
	h.writeConfig()
	msgs = append(msgs, requireCheckFails(t, h, in, 15*time.Second, "targets[dr01].address", "connection refused", "listens on "+good, "is wrong"))

	// An agent whose certificate another CA signed.
	other, err := pki.EnsureDev(filepath.Join(t.TempDir(), "other-pki"))
	if err != nil {
		t.Fatal(err)
	}
	serverTLS, err := other.ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	recv := transfer.NewReceiver(&transfertest.Target{Dir: t.TempDir()}, serverTLS, transfer.ReceiverOptions{})
	go recv.Serve(ctx, ln)
	h.cfg.Targets[0].Address = ln.Addr().String()
	h.writeConfig()
	msgs = append(msgs, requireCheckFails(t, h, in, 15*time.Second, "targets[dr01].address", "certificate the proxy does not trust", "tls.ca"))

	// A datastore too small: a VM of 60 TiB (sparse) that was never replicated.
	h.cfg.Targets[0].Address = good
	h.writeConfig()
	if _, err := lab.CreateVM(h.cfg.Hosts[0].Path, "huge", []int64{60 << 40}); err != nil {
		t.Fatal(err)
	}
	msgs = append(msgs, requireCheckFails(t, h, contract.ReplicationInput{Job: "demo", VMs: []string{"huge"}}, 15*time.Second, "agent.datastore", "free", "60.0 TiB"))

	// The checks pass and say what they checked.
	res := h.run(in)
	requireSuccess(t, res)
	var names []string
	for _, c := range res.Checks {
		if !c.OK {
			t.Fatalf("a check failed in a successful run: %+v", c)
		}
		names = append(names, c.Name)
	}
	for _, want := range []string{"source host hv01 answers", "agent of target dr01 answers", "proxy opens the data channel", "VMs exist", "has room"} {
		if !strings.Contains(strings.Join(names, "\n"), want) {
			t.Fatalf("the result lists checks %q; want one about %q", names, want)
		}
	}

	// An agent that is down: no target role anywhere.
	down := newHarness(t, roleSet{jobs: true, proxy: true}, false, nil)
	msgs = append(msgs, requireCheckFails(t, down, in, 40*time.Second, "agent of target dr01 is down", "target role"))

	for i := range msgs {
		t.Logf("fault %d: %s", i+1, msgs[i])
		for j := range i {
			if msgs[i] == msgs[j] {
				t.Fatalf("two faults gave the same message: %s", msgs[i])
			}
		}
	}
}

// TestJobNamesAVMTheHostDoesNotHave: the VM fails by itself, naming jobs[].vms.
func TestJobNamesAVMTheHostDoesNotHave(t *testing.T) {
	h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, false, func(c *config.Config) {
		c.Jobs[0].VMs = []string{"web01", "web02"}
	})
	res := h.run(contract.ReplicationInput{Job: "demo"})
	if res.Status != contract.StatusPartial || len(res.VMs) != 2 {
		t.Fatalf("want partial with two VMs: %+v", res)
	}
	var missing contract.VMResult
	for _, vm := range res.VMs {
		if vm.Name == "web02" {
			missing = vm
		} else if vm.Status != contract.StatusSuccess {
			t.Fatalf("web01: %+v", vm)
		}
	}
	if missing.Status != contract.StatusFailed || !strings.Contains(missing.Error, "jobs[demo].vms") {
		t.Fatalf("web02: %+v", missing)
	}
}
