//go:build linux

package topology

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.yaml.in/yaml/v3"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/provider/lab"
	"github.com/replicator/replicator/internal/replica"
	"github.com/replicator/replicator/internal/replica/replicatest"
	"github.com/replicator/replicator/internal/testkit"
)

// deployConfig is the configuration every replicator service of
// docker-compose.yml mounts.
const deployConfig = "deploy/replicator.yaml"

// node is one replicator process of the topology: a compose service's
// command, with its own folder, certificate and configuration file.
type node struct {
	*proc
	cfgFile string
	cfg     *config.Config
	metrics string // host:port of its Prometheus metrics
}

// topology is the cluster and the replicator processes on it.
type topology struct {
	*cluster
	c       client.Client
	lab     string // the source host's lab folder, which both proxies read
	link    *link  // proxies → agent
	jobs    *node
	proxies []*node
	agent   *node
	job     string
}

// siteConfig writes the configuration of one process: deploy/replicator.yaml
// with what differs between deployments set for this one (addresses, the
// folders the container mounts), and checks that nothing else differs.
func (tp *topology) siteConfig(service, dir string, agentListen string) (string, *config.Config) {
	t := tp.t
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, deployConfig))
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", deployConfig, err)
	}
	deployed := loadConfigFile(t, filepath.Join(repoRoot, deployConfig))
	certs := tp.local(tp.compose.mounts(t, service)["/etc/replicator/tls"])
	// The container's paths, as the compose file mounts them, here.
	paths := map[string]string{"/etc/replicator/tls": certs, "/var/lib/replicator/lab": tp.lab,
		"/var/lib/replicator/replicas": filepath.Join(dir, "replicas")}
	rebase := func(p string) string {
		for from, to := range paths {
			if p == from || strings.HasPrefix(p, from+"/") {
				return to + strings.TrimPrefix(p, from)
			}
		}
		t.Fatalf("%s: path %s is under no folder the services mount", deployConfig, p)
		return ""
	}
	site := map[string]string{
		"temporal.address":  tp.frontend,
		"agent.datastore":   rebase(deployed.Agent.Datastore),
		"tls.ca":            rebase(deployed.TLS.CA),
		"tls.cert":          rebase(deployed.TLS.Cert),
		"tls.key":           rebase(deployed.TLS.Key),
		"temporal.tls.ca":   rebase(deployed.Temporal.TLS.CA),
		"temporal.tls.cert": rebase(deployed.Temporal.TLS.Cert),
		"temporal.tls.key":  rebase(deployed.Temporal.TLS.Key),
		"metrics.listen":    fmt.Sprintf("127.0.0.1:%d", freePort(t)),
	}
	if agentListen != "" { // the target role's; the others keep the file's
		site["agent.listen"] = agentListen
	}
	for i, h := range deployed.Hosts {
		if h.Provider == "lab" {
			site[fmt.Sprintf("hosts.%d.path", i)] = rebase(h.Path)
		}
	}
	for i, tg := range deployed.Targets {
		// The proxies dial the agent over the link. The jobs worker keeps
		// the file's address, which resolves nowhere here: where replicas
		// live is the proxies' view, not the central site's.
		if tg.Name == deployed.Agent.Name && service != "jobs" {
			site[fmt.Sprintf("targets.%d.address", i)] = tp.link.addr()
		}
	}
	for key, v := range site {
		setYAML(t, &doc, v, strings.Split(key, ".")...)
	}
	out, err := yaml.Marshal(&doc)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "replicator.yaml")
	if err := os.WriteFile(file, out, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := loadConfigFile(t, file)
	// Apart from the site's values, the process runs deploy/replicator.yaml.
	a, b2 := *cfg, *deployed
	for _, c := range []*config.Config{&a, &b2} {
		c.Temporal.Address, c.Agent.Listen, c.Agent.Datastore, c.Metrics.Listen = "", "", "", ""
		c.TLS.CA, c.TLS.Cert, c.TLS.Key = "", "", ""
		c.Temporal.TLS.CA, c.Temporal.TLS.Cert, c.Temporal.TLS.Key = "", "", ""
		c.Hosts = append([]config.Host(nil), c.Hosts...)
		for i := range c.Hosts {
			c.Hosts[i].Path = ""
		}
		c.Targets = append([]config.Target(nil), c.Targets...)
		for i := range c.Targets {
			c.Targets[i].Address = ""
		}
	}
	if !reflect.DeepEqual(a, b2) {
		t.Fatalf("the configuration of %s differs from %s beyond addresses and paths:\n%+v\n%+v", service, deployConfig, a, b2)
	}
	return file, cfg
}

func loadConfigFile(t *testing.T, file string) *config.Config {
	t.Helper()
	cfg, err := config.Load(config.LoadOptions{File: file})
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return cfg
}

// setYAML sets the scalar at path (mapping keys and sequence indexes).
func setYAML(t *testing.T, n *yaml.Node, value string, path ...string) {
	t.Helper()
	if n.Kind == yaml.DocumentNode {
		n = n.Content[0]
	}
	for i, key := range path {
		var next *yaml.Node
		switch n.Kind {
		case yaml.MappingNode:
			for j := 0; j+1 < len(n.Content); j += 2 {
				if n.Content[j].Value == key {
					next = n.Content[j+1]
				}
			}
			if next == nil {
				n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: key}, &yaml.Node{Kind: yaml.MappingNode})
				next = n.Content[len(n.Content)-1]
				if i == len(path)-1 {
					next.Kind = yaml.ScalarNode
				}
			}
		case yaml.SequenceNode:
			idx, err := strconv.Atoi(key)
			if err != nil || idx >= len(n.Content) {
				t.Fatalf("%s: no %s", deployConfig, strings.Join(path, "."))
			}
			next = n.Content[idx]
		default:
			t.Fatalf("%s: %s is not a mapping or a sequence", deployConfig, strings.Join(path[:i], "."))
		}
		n = next
	}
	n.Kind, n.Tag, n.Value, n.Style = yaml.ScalarNode, "!!str", value, 0
}

// startNode starts one replicator process of a compose service, with the
// service's command and its own configuration.
func (tp *topology) startNode(service, name, agentListen string) *node {
	t := tp.t
	t.Helper()
	s, ok := tp.compose.Services[service]
	if !ok {
		t.Fatalf("docker-compose.yml has no service %s", service)
	}
	dir := filepath.Join(tp.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	file, cfg := tp.siteConfig(service, dir, agentListen)
	args := []string{tp.tools.workers}
	for i := 0; i < len(s.Command); i++ {
		args = append(args, s.Command[i])
		if s.Command[i] == "--config" && i+1 < len(s.Command) {
			args = append(args, file)
			i++
		}
	}
	n := &node{proc: newProc(t, name, dir, []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, args...),
		cfgFile: file, cfg: cfg, metrics: cfg.Metrics.Listen}
	n.begin()
	return n
}

// begin starts (or starts again) the process and waits until it serves.
func (n *node) begin() {
	n.start()
	n.waitLog(`msg="worker running"`, 2*time.Minute)
}

// starter runs the operator command line with a process's configuration.
func (tp *topology) starter(n *node, args ...string) string {
	tp.t.Helper()
	return run(tp.t, n.dir, append(os.Environ(), "CI=", "REPLICATOR_DEBUG="), nil, append([]string{tp.tools.starter, "--config", n.cfgFile}, args...)...)
}

// setT points the topology and its processes at the running (sub)test.
func (tp *topology) setT(t *testing.T) {
	tp.t, tp.pg.t, tp.pg.proc.t, tp.temporal.t = t, t, t, t
	for _, n := range append([]*node{tp.jobs, tp.agent}, tp.proxies...) {
		n.t = t
	}
}

func startTopology(t *testing.T) *topology {
	t.Helper()
	cl := startCluster(t)
	tp := &topology{cluster: cl, lab: filepath.Join(cl.dir, "lab")}
	deployed := loadConfigFile(t, filepath.Join(repoRoot, deployConfig))
	if len(deployed.Jobs) == 0 {
		t.Fatalf("%s has no job", deployConfig)
	}
	tp.job = deployed.Jobs[0].Name
	c, err := cl.dial(deployed.Temporal.Namespace)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	tp.c = c

	agentListen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	tp.link = startLink(t, agentListen)
	tp.agent = tp.startNode("agent", "agent", agentListen)
	tp.jobs = tp.startNode("jobs", "jobs", "")
	replicas := cl.compose.Services["proxy"].Deploy.Replicas
	if replicas < 2 {
		t.Fatalf("docker-compose.yml runs %d proxy replicas, want 2 sharing the source host's queue", replicas)
	}
	for i := range replicas {
		tp.proxies = append(tp.proxies, tp.startNode("proxy", fmt.Sprintf("proxy-%c", 'a'+i), ""))
	}
	return tp
}

// createVMs makes lab VMs with one disk each, part of it written.
func (tp *topology) createVMs(names []string, size string, percent int) {
	tp.t.Helper()
	for i, name := range names {
		tp.starter(tp.proxies[0], "lab", "create", name, "--disk", size)
		tp.starter(tp.proxies[0], "lab", "write", name, "--percent", strconv.Itoa(percent), "--seed", strconv.Itoa(i+1))
	}
}

// write changes percent of each VM's disk (new data, with seed).
func (tp *topology) write(names []string, percent int, seed int) {
	tp.t.Helper()
	for i, name := range names {
		tp.starter(tp.proxies[0], "lab", "write", name, "--percent", strconv.Itoa(percent), "--seed", strconv.Itoa(seed*1000+i))
	}
}

func (tp *topology) startRun(ctx context.Context, id string, vms []string) client.WorkflowRun {
	tp.t.Helper()
	run, err := tp.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: tp.jobs.cfg.Temporal.TaskQueue},
		contract.ReplicationWorkflow, contract.ReplicationInput{Job: tp.job, VMs: vms})
	if err != nil {
		tp.t.Fatal(err)
	}
	return run
}

// runLimit is how long one run of a scenario may take: each is a few
// seconds to a minute here; a run that hangs fails its scenario with its
// progress instead of the whole test's timeout.
const runLimit = 5 * time.Minute

// result waits for a run's result, across the frontend's own restarts.
func (tp *topology) result(ctx context.Context, id string) contract.ReplicationResult {
	tp.t.Helper()
	ctx, cancel := context.WithTimeout(ctx, runLimit)
	defer cancel()
	for {
		var res contract.ReplicationResult
		err := tp.c.GetWorkflow(ctx, id, "").Get(ctx, &res)
		if err == nil {
			return res
		}
		if ctx.Err() != nil {
			qctx, qcancel := context.WithTimeout(context.Background(), 30*time.Second)
			var progress contract.ReplicationResult
			v, qerr := tp.c.QueryWorkflow(qctx, id, "", contract.ProgressQuery)
			if qerr == nil {
				qerr = v.Get(&progress)
			}
			qcancel()
			tp.t.Fatalf("run %s did not end within %s: %v; its progress: %+v (query: %v)", id, runLimit, err, progress, qerr)
		}
		var app *temporal.ApplicationError
		var canceled *temporal.CanceledError
		var term *temporal.TerminatedError
		var timeout *temporal.TimeoutError
		var notFound *serviceerror.NotFound
		if errors.As(err, &app) || errors.As(err, &canceled) || errors.As(err, &term) || errors.As(err, &timeout) ||
			errors.As(err, &notFound) || ctx.Err() != nil {
			tp.t.Fatalf("run %s: %v", id, err)
		}
		time.Sleep(time.Second) // the frontend is away: ask again
	}
}

func requireSuccess(t *testing.T, res contract.ReplicationResult, vms int) {
	t.Helper()
	if res.Status != contract.StatusSuccess || len(res.VMs) != vms {
		t.Fatalf("run ended %s with %d VMs (want success, %d): %+v", res.Status, len(res.VMs), vms, res)
	}
	for _, vm := range res.VMs {
		if vm.Status != contract.StatusSuccess || vm.RestorePoint == "" {
			t.Fatalf("VM %s: %+v", vm.Name, vm)
		}
	}
}

// checkReplicas compares every disk of every VM of the result, at its
// restore point, with the lab disk, byte for byte outside the ranges the job
// excludes (swap), and verifies every restore point of those replicas
// against its digests.
func (tp *topology) checkReplicas(res contract.ReplicationResult) {
	t := tp.t
	t.Helper()
	vms, err := lab.New("lab", tp.lab).VMs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	store, err := replica.OpenExisting(tp.agent.cfg.Agent.Datastore)
	if err != nil {
		t.Fatal(err)
	}
	replicatest.RequireReplicasMatchSource(t, store, vms, res)
	replicatest.RequirePointsVerify(t, store, res)
}

// durable is the sum of the positions the agent has made durable in the
// open restore points of the job.
func (tp *topology) durable() int64 {
	return replicatest.Total(replicatest.Durable(tp.agent.cfg.Agent.Datastore, tp.job))
}

// waitTransferring waits until the agent has made at least min bytes of
// open restore points durable: the run is mid-transfer.
func (tp *topology) waitTransferring(min int64) {
	tp.t.Helper()
	testkit.Eventually(tp.t, 3*time.Minute, 20*time.Millisecond, func() error {
		if n := tp.durable(); n < min {
			return fmt.Errorf("the transfers have %d durable bytes, want %d", n, min)
		}
		return nil
	})
}

// bytesSent scrapes a proxy's replicator_bytes_sent_total for the job.
func (tp *topology) bytesSent(n *node) float64 {
	tp.t.Helper()
	resp, err := http.Get("http://" + n.metrics + "/metrics")
	if err != nil {
		tp.t.Fatalf("metrics of %s: %v", n.name, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	prefix := `replicator_bytes_sent_total{job="` + tp.job + `"} `
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				tp.t.Fatalf("metrics of %s: %q: %v", n.name, sc.Text(), err)
			}
			return f
		}
	}
	return 0
}

// historySize is the number of events and bytes of a run's history and of
// the histories of its VM workflows.
func historySize(ctx context.Context, t *testing.T, c client.Client, id string) (events, size, largest int64) {
	t.Helper()
	add := func(wid, rid string) {
		d, err := c.DescribeWorkflowExecution(ctx, wid, rid)
		if err != nil {
			t.Fatal(err)
		}
		events += d.WorkflowExecutionInfo.HistoryLength
		size += d.WorkflowExecutionInfo.HistorySizeBytes
		largest = max(largest, d.WorkflowExecutionInfo.HistoryLength)
	}
	// Every run of the job (it may continue as new) and every VM workflow
	// (children of those runs).
	var next []byte
	for {
		resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Query: fmt.Sprintf("RootWorkflowId = '%s'", id), NextPageToken: next})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range resp.Executions {
			add(e.Execution.WorkflowId, e.Execution.RunId)
		}
		if next = resp.NextPageToken; len(next) == 0 {
			break
		}
	}
	return events, size, largest
}

func names(prefix string, from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf("%s%02d", prefix, i))
	}
	return out
}

// TestTopology runs docker-compose.yml's topology from its own files and
// commands, then the scenarios on the one cluster, one after the other.
func TestTopology(t *testing.T) {
	testkit.Long(t, "the production topology")
	tp := startTopology(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()

	// 20 VMs, 8 MiB disks, 4 MiB written on each: both proxies take transfers.
	twenty := names("vm", 1, 20)
	tp.createVMs(twenty, "8MiB", 50)
	// sub runs a scenario as a subtest, the processes reporting to it.
	sub := func(name string, f func(t *testing.T)) bool {
		return t.Run(name, func(st *testing.T) {
			tp.setT(st)
			defer tp.setT(t)
			f(st)
		})
	}
	ok := sub("TwentyVMs", func(t *testing.T) {
		before := []float64{tp.bytesSent(tp.proxies[0]), tp.bytesSent(tp.proxies[1])}
		start := time.Now()
		id := "twenty"
		tp.startRun(ctx, id, nil)
		res := tp.result(ctx, id)
		wall := time.Since(start)
		requireSuccess(t, res, 20)
		tp.checkReplicas(res)
		events, size, largest := historySize(ctx, t, tp.c, id)
		var sent []float64
		for i, p := range tp.proxies {
			sent = append(sent, tp.bytesSent(p)-before[i])
			if sent[i] <= 0 {
				t.Errorf("%s sent nothing: both proxies of the host must take transfers (%v)", p.name, sent)
			}
		}
		// The Web UI shows the run, read through the frontend's mutual TLS.
		resp, err := http.Get(tp.uiURL + "/api/v1/namespaces/" + tp.jobs.cfg.Temporal.Namespace + "/workflows/" + id)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(contract.ReplicationWorkflow)) || !bytes.Contains(body, []byte("COMPLETED")) {
			t.Errorf("the Web UI's view of run %s: %s\n%.500s", id, resp.Status, body)
		}
		t.Logf("20 VMs on the topology: wall %.2f s; histories %d events, %d bytes (largest %d events); bytes sent by proxy %v",
			wall.Seconds(), events, size, largest, sent)
	})
	if !ok {
		return
	}

	// The fault scenarios: 4 VMs each, 8 MiB rewritten on each, over a link
	// of 4 MiB/s so that the fault lands mid-transfer.
	scenario := func(name string, vms []string, seed int, fault func(t *testing.T), after func(t *testing.T, res contract.ReplicationResult)) bool {
		return sub(name, func(t *testing.T) {
			tp.write(vms, 100, seed)
			tp.link.setRate(4 << 20)
			defer tp.link.setRate(0)
			from := tp.durable()
			id := strings.ToLower(name)
			watch := replicatest.WatchPositions(tp.agent.cfg.Agent.Datastore, tp.job)
			tp.startRun(ctx, id, vms)
			tp.waitTransferring(from + 4<<20)
			// The fault lands while the run is transferring, not after it.
			d, err := tp.c.DescribeWorkflowExecution(ctx, id, "")
			if err != nil {
				t.Fatal(err)
			}
			if st := d.WorkflowExecutionInfo.Status; st != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
				t.Fatalf("run %s is %v before the fault", id, st)
			}
			durableAtFault := tp.durable() - from
			fault(t)
			t.Logf("fault with %d of %d bytes durable", durableAtFault, int64(len(vms))*8<<20)
			tp.link.setRate(0)
			res := tp.result(ctx, id)
			if back := watch.Stop(); back != "" {
				t.Errorf("a durable position went back: %s", back)
			}
			requireSuccess(t, res, len(vms))
			tp.checkReplicas(res)
			if after != nil {
				after(t, res)
			}
		})
	}
	var victim *node
	scenario("ProxyKilled", twenty[0:4], 1, func(t *testing.T) {
		// Kill the proxy that is sending more of this run: it holds transfers.
		a, b := tp.bytesSent(tp.proxies[0]), tp.bytesSent(tp.proxies[1])
		time.Sleep(500 * time.Millisecond)
		victim = tp.proxies[0]
		if tp.bytesSent(tp.proxies[1])-b > tp.bytesSent(tp.proxies[0])-a {
			victim = tp.proxies[1]
		}
		victim.kill()
	}, func(t *testing.T, res contract.ReplicationResult) {
		if !replicatest.AnyResumed(res) {
			t.Errorf("no disk resumed from an acknowledged position after the proxy died: %+v", res)
		}
		victim.begin() // the next scenarios have both again
	})
	scenario("JobsWorkerKilled", twenty[4:8], 2, func(t *testing.T) {
		tp.jobs.kill()
		tp.jobs.begin()
	}, nil)
	scenario("TemporalKilled", twenty[8:12], 3, func(t *testing.T) {
		tp.temporal.kill()
		tp.startTemporal()
	}, nil)
	scenario("PostgreSQLRestarted", twenty[12:16], 4, func(t *testing.T) {
		tp.pg.restart(tp.tools, 3*time.Second)
	}, nil)
	scenario("AgentKilled", twenty[16:20], 5, func(t *testing.T) {
		tp.agent.kill()
		tp.agent.begin()
	}, nil) // the proxies reconnect within their activity: resumedFromByte keeps the first
	// attempt's, so the evidence of resuming is the watch on durable positions

	sub("ScheduleFromTemporalCLI", func(t *testing.T) {
		vms := twenty[0:2]
		tp.write(vms, 10, 6)
		input, _ := json.Marshal(contract.ReplicationInput{Job: tp.job, VMs: vms})
		cli := tp.cliEnv()
		run(t, tp.dir, cli, nil, tp.tools.cli, "schedule", "create", "--schedule-id", "nightly-lab",
			"--workflow-id", "nightly-lab", "--task-queue", tp.jobs.cfg.Temporal.TaskQueue, "--type", contract.ReplicationWorkflow,
			"--input", string(input), "--interval", "1m", "--overlap-policy", "Skip")
		// The first action is a minute away at most; take the run it starts.
		id := waitForWorkflow(t, ctx, tp.c, "TemporalScheduledById = 'nightly-lab'", 3*time.Minute, time.Second, "the schedule started no run")
		run(t, tp.dir, cli, nil, tp.tools.cli, "schedule", "delete", "--schedule-id", "nightly-lab")
		res := tp.result(ctx, id)
		requireSuccess(t, res, len(vms))
		tp.checkReplicas(res)
		d, err := tp.c.DescribeWorkflowExecution(ctx, id, "")
		if err != nil || d.WorkflowExecutionInfo.Status != enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED {
			t.Fatalf("scheduled run %s: %+v, %v", id, d, err)
		}
	})
}

// cliEnv is the Temporal CLI's environment for this cluster, with the admin
// certificate, as temporal-namespace has it in docker-compose.yml.
func (tp *topology) cliEnv() []string {
	env := tp.compose.environment(tp.t, "temporal-namespace", map[string]string{"TEMPORAL_ADDRESS": tp.frontend}, tp.local)
	return append(env, "TEMPORAL_NAMESPACE="+tp.jobs.cfg.Temporal.Namespace)
}

// waitForWorkflow waits up to limit, listing every pause, for a workflow
// that matches query (a visibility query) and returns the id of the last one
// listed; missing names what did not happen.
func waitForWorkflow(t *testing.T, ctx context.Context, c client.Client, query string, limit, pause time.Duration, missing string) string {
	t.Helper()
	var id string
	testkit.Eventually(t, limit, pause, func() error {
		resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Query: query})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range resp.Executions {
			id = e.Execution.WorkflowId
		}
		if id == "" {
			return errors.New(missing)
		}
		return nil
	})
	return id
}
