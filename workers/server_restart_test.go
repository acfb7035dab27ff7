package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/devserver"
	"github.com/replicator/replicator/internal/pki"
	"github.com/replicator/replicator/internal/provider/lab"
	"github.com/replicator/replicator/internal/testkit"
)

// TestEndToEndTemporalServerKilledMidRun runs the Temporal server in a child
// process, kills it with SIGKILL while a disk is being sent, starts it again on
// the same SQLite database, and expects the run to finish from its durable
// history with a replica identical to the source.
func TestEndToEndTemporalServerKilledMidRun(t *testing.T) {
	testkit.Long(t, "end-to-end test")
	h := &harness{t: t, dir: t.TempDir()}
	cfg := config.Dev(h.dir)
	cfg.Temporal.Address = testkit.FreeAddr(t)
	cfg.Agent.Listen = testkit.FreeAddr(t)
	cfg.Metrics.Listen = ""
	h.proxy = startThrottle(t, cfg.Agent.Listen)
	cfg.Targets[0].Address = h.proxy.addr
	h.cfg = cfg
	h.writeConfig()
	if _, err := pki.EnsureDev(filepath.Join(h.dir, "pki")); err != nil {
		t.Fatal(err)
	}
	startServer := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(),
			"REPLICATOR_TEST_TEMPORAL_DIR="+filepath.Join(h.dir, "temporal"),
			"REPLICATOR_TEST_TEMPORAL_ADDRESS="+cfg.Temporal.Address)
		if testing.Verbose() {
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitForPort(t, cfg.Temporal.Address, 2*time.Minute)
		return cmd
	}
	server := startServer()
	defer func() { server.Process.Kill(); server.Wait() }()
	if err := lab.Seed(context.Background(), cfg.Hosts[0].Path); err != nil {
		t.Fatal(err)
	}
	h.start(roleSet{jobs: true, proxy: true, target: true})

	h.proxy.setRate(3 << 20)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	id := fmt.Sprintf("server-restart-%d", time.Now().UnixNano())
	if _, err := h.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: "replication"},
		contract.ReplicationWorkflow, contract.ReplicationInput{Job: "demo", VMs: []string{"web01"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the transfer's first 5 MiB", 2*time.Minute, 50*time.Millisecond, func() bool { return h.proxy.forwarded() >= 5<<20 })
	if err := server.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	server.Wait()
	// The proxy keeps sending while the server is down.
	down := h.proxy.forwarded()
	waitFor(t, "2 MiB more sent with the Temporal server down", time.Minute, 50*time.Millisecond, func() bool { return h.proxy.forwarded() >= down+2<<20 })
	h.proxy.setRate(0)
	server = startServer()

	// The result comes from the durable history of the restarted server.
	var res contract.ReplicationResult
	end, _ := ctx.Deadline()
	testkit.Eventually(t, time.Until(end), time.Second, func() error {
		if err := h.c.GetWorkflow(ctx, id, "").Get(ctx, &res); err != nil {
			return fmt.Errorf("the run did not finish after the server restarted: %w", err)
		}
		return nil
	})
	requireSuccess(t, res)
	h.checkReplicaMatchesSource(res)
}

// runTemporalServer is the Temporal server of TestEndToEndTemporalServerKilledMidRun.
func runTemporalServer(dir string) {
	srv, err := devserver.Start(devserver.Options{DataDir: dir, FrontendAddress: os.Getenv("REPLICATOR_TEST_TEMPORAL_ADDRESS"), Namespace: "default"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "temporal server:", err)
		os.Exit(1)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	<-stop
	srv.Stop()
	os.Exit(0)
}

func waitForPort(t *testing.T, addr string, limit time.Duration) {
	t.Helper()
	testkit.Eventually(t, limit, 100*time.Millisecond, func() error {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return fmt.Errorf("nothing listens on %s: %w", addr, err)
		}
		return c.Close()
	})
}
