package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/interceptor"
	"go.yaml.in/yaml/v3"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/devserver"
	"github.com/replicator/replicator/internal/pki"
	"github.com/replicator/replicator/internal/provider/lab"
	"github.com/replicator/replicator/internal/replica"
	"github.com/replicator/replicator/internal/replica/replicatest"
	"github.com/replicator/replicator/internal/testkit"
)

// harness is a whole stack in this test process: an embedded Temporal
// server, a lab host, the agent over mutual TLS, and the roles asked for.
type harness struct {
	t       *testing.T
	dir     string
	cfgFile string
	cfg     *config.Config
	srv     *devserver.Server
	stack   *stack
	c       client.Client
	proxy   *throttle // between proxy and agent, when asked for
	// lastID is the workflow id of the last run.
	lastID string
	// interceptors wrap the workers that start (fault injection).
	interceptors []interceptor.WorkerInterceptor
}

// newHarness writes a configuration, starts Temporal, seeds the lab and
// starts the roles. edit may change the configuration before it is written.
func newHarness(t *testing.T, roles roleSet, throttled bool, edit func(*config.Config)) *harness {
	t.Helper()
	return newHarnessUI(t, roles, throttled, edit, "")
}

// newHarnessUI is newHarness with the Temporal Web UI at uiAddress ("": none).
func newHarnessUI(t *testing.T, roles roleSet, throttled bool, edit func(*config.Config), uiAddress string) *harness {
	t.Helper()
	testkit.Long(t, "end-to-end test")
	h := &harness{t: t, dir: t.TempDir()}
	cfg := config.Dev(h.dir)
	cfg.Temporal.Address = testkit.FreeAddr(t)
	cfg.Agent.Listen = testkit.FreeAddr(t)
	cfg.Targets[0].Address = cfg.Agent.Listen
	cfg.Metrics.Listen = ""
	if throttled {
		h.proxy = startThrottle(t, cfg.Agent.Listen)
		cfg.Targets[0].Address = h.proxy.addr
	}
	if edit != nil {
		edit(cfg)
	}
	h.cfg = cfg
	h.writeConfig()
	if _, err := pki.EnsureDev(filepath.Join(h.dir, "pki")); err != nil {
		t.Fatal(err)
	}
	srv, err := devserver.Start(devserver.Options{DataDir: filepath.Join(h.dir, "temporal"), FrontendAddress: cfg.Temporal.Address, Namespace: "default", UIAddress: uiAddress})
	if err != nil {
		t.Fatal(err)
	}
	h.srv = srv
	t.Cleanup(srv.Stop)
	if err := lab.Seed(context.Background(), cfg.Hosts[0].Path); err != nil {
		t.Fatal(err)
	}
	h.start(roles)
	return h
}

func (h *harness) writeConfig() {
	b, err := yaml.Marshal(h.cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	h.cfgFile = filepath.Join(h.dir, "replicator.yaml")
	if err := os.WriteFile(h.cfgFile, b, 0o600); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) options() options {
	return options{config: h.cfgFile, dataDir: h.dir, interceptors: h.interceptors}
}

// harnessLogWriter, when set, also receives the warnings the stack logs
// (the load test counts Temporal's payload size warnings in them).
var harnessLogWriter io.Writer

func (h *harness) start(roles roleSet) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if harnessLogWriter != nil {
		out := io.Writer(harnessLogWriter)
		if testing.Verbose() {
			out = io.MultiWriter(os.Stderr, harnessLogWriter)
		}
		logger = slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	st, err := startRoles(context.Background(), h.cfg, h.options(), roles, logger)
	if err != nil {
		h.t.Fatal(err)
	}
	h.stack = st
	h.c = st.client
	h.t.Cleanup(st.stop)
}

func (h *harness) run(in contract.ReplicationInput) contract.ReplicationResult {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	h.lastID = fmt.Sprintf("%s-%d", in.Job, time.Now().UnixNano())
	run, err := h.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: h.lastID, TaskQueue: "replication"},
		contract.ReplicationWorkflow, in)
	if err != nil {
		h.t.Fatal(err)
	}
	var res contract.ReplicationResult
	if err := run.Get(ctx, &res); err != nil {
		h.t.Fatalf("run: %v", err)
	}
	return res
}

// checkReplicaMatchesSource compares every disk of every VM of the result at
// its restore point with the lab disk as it is now (the checkpoint, merged
// back, when nothing wrote since), byte for byte outside excluded ranges.
func (h *harness) checkReplicaMatchesSource(res contract.ReplicationResult) {
	h.t.Helper()
	ctx := context.Background()
	// The source as its provider sees it: disk ids are the provider's.
	host, err := newProvider(ctx, h.cfg.Hosts[0], slog.New(slog.DiscardHandler))
	if err != nil {
		h.t.Fatal(err)
	}
	vms, err := host.VMs(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	replicatest.RequireReplicasMatchSource(h.t, h.store(), vms, res)
}

// store opens the harness's datastore with its key, if it has one.
func (h *harness) store() *replica.Store {
	h.t.Helper()
	key, err := replica.LoadKeyFile(h.cfg.Agent.EncryptionKeyFile)
	if err != nil {
		h.t.Fatal(err)
	}
	store, err := replica.OpenEncrypted(h.cfg.Agent.Datastore, true, key)
	if err != nil {
		h.t.Fatal(err)
	}
	return store
}

func requireSuccess(t *testing.T, res contract.ReplicationResult) {
	t.Helper()
	if res.Status != contract.StatusSuccess {
		t.Fatalf("run ended %s: %+v", res.Status, res)
	}
	for _, vm := range res.VMs {
		if vm.Status != contract.StatusSuccess || vm.RestorePoint == "" {
			t.Fatalf("VM %s: %+v", vm.Name, vm)
		}
	}
}

func TestEndToEndFullThenIncremental(t *testing.T) {
	h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, false, nil)
	res := h.run(contract.ReplicationInput{Job: "demo"})
	requireSuccess(t, res)
	if len(res.VMs) != 2 {
		t.Fatalf("want the 2 demo VMs, got %d", len(res.VMs))
	}
	for _, vm := range res.VMs {
		for _, d := range vm.Disks {
			if d.ChangeTracking != contract.TrackingFull || d.BytesRead == 0 || d.BytesSent == 0 {
				t.Errorf("first run of %s disk %s: %+v", vm.Name, d.ID, d)
			}
		}
	}
	h.checkReplicaMatchesSource(res)

	// Change 2% of web01 and run again: only changed blocks travel, by CBT.
	host := lab.New("hv01", h.cfg.Hosts[0].Path)
	if err := host.Write(context.Background(), "web01", 0, 2, 42); err != nil {
		t.Fatal(err)
	}
	res2 := h.run(contract.ReplicationInput{Job: "demo", VMs: []string{"web01"}})
	requireSuccess(t, res2)
	d := res2.VMs[0].Disks[0]
	if d.ChangeTracking != contract.TrackingRCT {
		t.Fatalf("second run: change tracking %q, want rct", d.ChangeTracking)
	}
	if d.BytesRead == 0 || d.BytesRead > 40<<20 {
		t.Fatalf("second run read %d bytes for a 2%% change of 256 MiB", d.BytesRead)
	}
	// Change tracking is finer than a block (64 KiB in the lab): blocks only
	// partly changed travel as their changed parts, so less is written than read.
	if d.BytesWritten >= d.BytesRead {
		t.Fatalf("second run wrote %d bytes of %d read: no block travelled as its changed parts", d.BytesWritten, d.BytesRead)
	}
	t.Logf("incremental by change tracking: %d bytes read, %d sent, %d written", d.BytesRead, d.BytesSent, d.BytesWritten)
	h.checkReplicaMatchesSource(res2)

	// With digests only, the same change is found by comparing digests.
	h.cfg.Jobs[0].ChangeTracking = "digest"
	h.writeConfig()
	if err := host.Write(context.Background(), "web01", 0, 1, 43); err != nil {
		t.Fatal(err)
	}
	res3 := h.run(contract.ReplicationInput{Job: "demo", VMs: []string{"web01"}})
	requireSuccess(t, res3)
	d = res3.VMs[0].Disks[0]
	if d.ChangeTracking != contract.TrackingDigest || d.BlocksChanged == 0 || d.BlocksChanged > 20 {
		t.Fatalf("digest run: %+v", d)
	}
	h.checkReplicaMatchesSource(res3)

	store, _ := replica.Open(h.cfg.Agent.Datastore)
	r, _ := store.Replica("demo", res3.VMs[0].ID)
	points, err := r.Points()
	if err != nil || len(points) != 3 {
		t.Fatalf("want 3 restore points, got %d (%v)", len(points), err)
	}
	for _, p := range points {
		if _, err := r.Verify(context.Background(), p.ID); err != nil {
			t.Fatalf("verify %s: %v", p.ID, err)
		}
	}
}

func TestEndToEndWindowExpiryResumesNextRun(t *testing.T) { endToEndWindowExpiry(t, nil) }

func endToEndWindowExpiry(t *testing.T, source func(*config.Config)) {
	h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, true, func(c *config.Config) {
		c.Jobs[0].Window = 3 * time.Second
		if source != nil {
			source(c)
		}
	})
	h.proxy.setRate(2 << 20) // 2 MiB/s: web01 sends ~15 MiB compressed, which cannot finish in 3 s
	res := h.run(contract.ReplicationInput{Job: "demo", VMs: []string{"web01"}})
	if res.Status != contract.StatusPartial {
		t.Fatalf("want partial, got %+v", res)
	}
	d := res.VMs[0].Disks[0]
	if d.Status != contract.StatusPartial {
		t.Fatalf("disk %+v", d)
	}

	h.proxy.setRate(0)
	h.cfg.Jobs[0].Window = 0
	h.writeConfig()
	res2 := h.run(contract.ReplicationInput{Job: "demo", VMs: []string{"web01"}})
	requireSuccess(t, res2)
	d2 := res2.VMs[0].Disks[0]
	if d2.ResumedFromByte <= 0 {
		t.Fatalf("the next run must continue from where the window stopped: %+v", d2)
	}
	h.checkReplicaMatchesSource(res2)
}

// startChild starts this test binary as a worker with the given roles on the
// harness's configuration (see TestMain).
func startChild(t *testing.T, h *harness, roles string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "REPLICATOR_TEST_PROXY_CONFIG="+h.cfgFile, "REPLICATOR_TEST_ROLES="+roles)
	if testing.Verbose() {
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

func kill(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
}

// TestEndToEndProxyKilledMidTransfer runs the proxy role in a child process,
// kills it with SIGKILL during the transfer, starts another, and expects the
// run to finish from the acknowledged position with an identical replica.
func TestEndToEndProxyKilledMidTransfer(t *testing.T) { endToEndProxyKilled(t, nil) }

func endToEndProxyKilled(t *testing.T, source func(*config.Config)) {
	h := newHarness(t, roleSet{jobs: true, target: true}, true, source)
	h.proxy.setRate(3 << 20)
	first := startChild(t, h, "proxy")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	run := h.startRun(ctx, contract.ReplicationInput{Job: "demo", VMs: []string{"web01"}})
	// Wait until some data is acknowledged, then kill the proxy.
	waitFor(t, "the transfer's first 9 MiB", 2*time.Minute, 50*time.Millisecond, func() bool { return h.proxy.forwarded() >= 9<<20 })
	kill(t, first)
	h.proxy.setRate(0)
	second := startChild(t, h, "proxy")
	defer func() { kill(t, second) }()
	var res contract.ReplicationResult
	if err := run.Get(ctx, &res); err != nil {
		t.Fatal(err)
	}
	requireSuccess(t, res)
	if d := res.VMs[0].Disks[0]; d.ResumedFromByte <= 0 {
		t.Fatalf("the retried transfer must resume from the acknowledged position: %+v", d)
	}
	h.checkReplicaMatchesSource(res)
}

// TestEndToEndConnectionCutTenTimes cuts the proxy–agent connection 10 times
// at random moments of one run; the run succeeds with an identical replica.
func TestEndToEndConnectionCutTenTimes(t *testing.T) { endToEndConnectionCuts(t, nil) }

func endToEndConnectionCuts(t *testing.T, source func(*config.Config)) {
	h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, true, source)
	h.proxy.setRate(3 << 19) // 1.5 MiB/s: about 10 s for web01, time for 10 cuts
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	run := h.startRun(ctx, contract.ReplicationInput{Job: "demo", VMs: []string{"web01"}})
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	cuts := 0
	for cuts < 10 {
		time.Sleep(time.Duration(300+rng.IntN(700)) * time.Millisecond)
		if h.proxy.cutAll() > 0 {
			cuts++
		}
		select {
		case <-ctx.Done():
			t.Fatal("timed out while cutting connections")
		default:
		}
	}
	h.proxy.setRate(0)
	var res contract.ReplicationResult
	if err := run.Get(ctx, &res); err != nil {
		t.Fatal(err)
	}
	requireSuccess(t, res)
	h.checkReplicaMatchesSource(res)
}
