//go:build linux && bench

package topology

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	"go.yaml.in/yaml/v3"

	"github.com/replicator/replicator/internal/contract"
)

// TestTopologyBenchmark measures the job of TestTopology's TwentyVMs (20 lab
// VMs, one 8 MiB disk each, half of it written, deploy/replicator.yaml's job
// settings) as a full copy: on the topology with two proxies, on the
// topology with a third proxy (20 more VMs of the same shape), and on the
// embedded stack (`workers --dev`, one process, SQLite) with the same job.
// Wall times are the server's: the job run's close time minus its start
// time. It asserts success and logs the rows of BENCHMARKS.md.
//
//	go test -tags bench ./deploy/topology -run TestTopologyBenchmark -v
func TestTopologyBenchmark(t *testing.T) {
	tp := startTopology(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	measure := func(c client.Client, id string) (wall time.Duration, events, size, largest int64) {
		var res contract.ReplicationResult
		if err := c.GetWorkflow(ctx, id, "").Get(ctx, &res); err != nil {
			t.Fatal(err)
		}
		requireSuccess(t, res, 20)
		d, err := c.DescribeWorkflowExecution(ctx, id, "")
		if err != nil {
			t.Fatal(err)
		}
		info := d.WorkflowExecutionInfo
		wall = info.CloseTime.AsTime().Sub(info.StartTime.AsTime())
		events, size, largest = historySize(ctx, t, c, id)
		return wall, events, size, largest
	}
	row := func(what string, wall time.Duration, events, size, largest int64) {
		t.Logf("| %s | %.2f s | %d events, %d KB | %d events |", what, wall.Seconds(), events, size/1000, largest)
	}

	first := names("vm", 1, 20)
	tp.createVMs(first, "8MiB", 50)
	tp.startRun(ctx, "bench-two-proxies", first)
	wall, ev, size, largest := measure(tp.c, "bench-two-proxies")
	row("topology, 2 proxies", wall, ev, size, largest)

	tp.proxies = append(tp.proxies, tp.startNode("proxy", "proxy-c", ""))
	second := names("vm", 21, 40)
	tp.createVMs(second, "8MiB", 50)
	tp.startRun(ctx, "bench-three-proxies", second)
	wall, ev, size, largest = measure(tp.c, "bench-three-proxies")
	row("topology, 3 proxies", wall, ev, size, largest)

	// The embedded stack: the same job (names given, so that the demo VMs
	// --dev seeds stay out), which --dev runs once at start.
	dir := t.TempDir()
	cfg := loadConfigFile(t, filepath.Join(repoRoot, deployConfig))
	cfg.Temporal.Address = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg.Temporal.TLS.CA, cfg.Temporal.TLS.Cert, cfg.Temporal.TLS.Key = "", "", ""
	cfg.Hosts = cfg.Hosts[:1]
	cfg.Hosts[0].Path = filepath.Join(dir, "lab")
	cfg.Agent.Listen = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg.Agent.Datastore = filepath.Join(dir, "replicas")
	cfg.Targets[0].Address = cfg.Agent.Listen
	cfg.TLS.CA, cfg.TLS.Cert, cfg.TLS.Key = filepath.Join(dir, "pki", "ca.pem"), filepath.Join(dir, "pki", "node.pem"), filepath.Join(dir, "pki", "node-key.pem")
	cfg.Metrics.Listen = ""
	cfg.Jobs = cfg.Jobs[:1]
	cfg.Jobs[0].VMs = first
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "replicator.yaml")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	for i, name := range first {
		run(t, dir, os.Environ(), nil, tp.tools.starter, "--config", file, "lab", "create", name, "--disk", "8MiB")
		run(t, dir, os.Environ(), nil, tp.tools.starter, "--config", file, "lab", "write", name, "--percent", "50", "--seed", strconv.Itoa(i+1))
	}
	// The topology's workers leave the embedded server out (-tags nodev);
	// the embedded stack needs the default build.
	devWorkers := filepath.Join(t.TempDir(), "workers")
	if out, err := exec.Command("go", "build", "-C", repoRoot, "-o", devWorkers, "./workers").CombinedOutput(); err != nil {
		t.Fatalf("go build ./workers: %v\n%s", err, out)
	}
	dev := newProc(t, "dev", dir, []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")},
		devWorkers, "--dev", "--config", file, "--data-dir", dir, "--ui.listen", "")
	dev.start()
	dev.waitLog("replicator dev stack up", 2*time.Minute)
	c, err := client.Dial(client.Options{HostPort: cfg.Temporal.Address, Namespace: cfg.Temporal.Namespace, Logger: quietLogger{}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	id := waitForWorkflow(t, ctx, c, "WorkflowType = 'ReplicationWorkflow'", time.Minute, 100*time.Millisecond, "--dev started no run")
	wall, ev, size, largest = measure(c, id)
	row("embedded (`workers --dev`)", wall, ev, size, largest)
}
