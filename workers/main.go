// Command workers is the replicator process. With --roles it runs job
// workflows (jobs), the source proxy's activities (proxy) and the target agent
// with its data channel and activities (target) against a Temporal cluster.
// With --dev it also starts an embedded Temporal server with the Web UI, a
// private CA, a lab host with demo VMs, and runs the demo job.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"go.temporal.io/sdk/interceptor"
)

type options struct {
	dev       bool
	once      bool
	config    string
	dataDir   string
	roles     string
	uiAddress string
	flags     *pflag.FlagSet
	// interceptors wrap every worker's activities and workflows (fault
	// injection in tests).
	interceptors []interceptor.WorkerInterceptor
	// hypervSim serves lab hosts through the Hyper-V provider over the
	// WMI-level simulator, with these job knobs.
	hypervSim         bool
	hypervSimDelay    time.Duration
	hypervSimWarnings bool
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := pflag.NewFlagSet("workers", pflag.ContinueOnError)
	var o options
	fs.BoolVar(&o.dev, "dev", false, "start an embedded Temporal server, the Web UI, a lab host with demo VMs, and run the demo job")
	fs.BoolVar(&o.once, "once", false, "with --dev: exit after the demo run (0 only when every disk succeeded and verified)")
	fs.StringVar(&o.config, "config", "", "configuration file (YAML); with --dev and no file, the dev configuration")
	fs.StringVar(&o.dataDir, "data-dir", ".replicator", "data folder of --dev: Temporal database, certificates, lab VMs, replicas")
	fs.StringVar(&o.roles, "roles", "proxy,target,jobs", "roles of this process: proxy, target, jobs")
	fs.StringVar(&o.uiAddress, "ui.listen", "127.0.0.1:8233", "with --dev: address of the Temporal Web UI (empty disables it)")
	fs.BoolVar(&o.hypervSim, "hyperv-sim", false, "serve the lab hosts (with --dev: the demo host) through the Hyper-V provider over the WMI-level Hyper-V simulator")
	fs.DurationVar(&o.hypervSimDelay, "hyperv-sim-job-delay", 0, "with --hyperv-sim: how long each simulated WMI job runs")
	fs.BoolVar(&o.hypervSimWarnings, "hyperv-sim-job-warnings", false, "with --hyperv-sim: simulated WMI jobs end in 32768, completed with warnings")
	addConfigFlags(fs)
	o.flags = fs
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "workers:", err)
		return 2
	}
	if o.once && !o.dev {
		fmt.Fprintln(os.Stderr, "workers: --once needs --dev")
		return 2
	}
	if !o.hypervSim && (fs.Changed("hyperv-sim-job-delay") || o.hypervSimWarnings) {
		fmt.Fprintln(os.Stderr, "workers: --hyperv-sim-job-delay and --hyperv-sim-job-warnings need --hyperv-sim")
		return 2
	}
	if o.hypervSimDelay < 0 {
		fmt.Fprintln(os.Stderr, "workers: --hyperv-sim-job-delay: negative")
		return 2
	}
	if !o.dev && o.config == "" {
		fmt.Fprintln(os.Stderr, "workers: give --config FILE for a production worker, or --dev for the embedded stack")
		return 2
	}
	roles, err := parseRoles(o.roles)
	if err != nil {
		fmt.Fprintln(os.Stderr, "workers:", err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel()}))
	slog.SetDefault(logger)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.dev {
		return runDev(ctx, o, roles, logger)
	}
	cfg, err := loadConfig(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "workers:", err)
		return 2
	}
	stack, err := startRoles(ctx, cfg, o, roles, logger)
	if err != nil {
		fmt.Fprintln(os.Stderr, "workers:", err)
		return 1
	}
	logger.Info("worker running", "roles", o.roles, "temporal", cfg.Temporal.Address, "namespace", cfg.Temporal.Namespace)
	<-ctx.Done()
	stack.stop()
	return 0
}

// roleSet is which roles this process runs.
type roleSet struct{ jobs, proxy, target bool }

func parseRoles(s string) (roleSet, error) {
	var r roleSet
	for _, name := range strings.Split(s, ",") {
		switch strings.TrimSpace(name) {
		case "jobs":
			r.jobs = true
		case "proxy":
			r.proxy = true
		case "target":
			r.target = true
		case "":
		default:
			return r, fmt.Errorf("--roles: unknown role %q (proxy, target, jobs)", name)
		}
	}
	if !r.jobs && !r.proxy && !r.target {
		return r, errors.New("--roles: no role given (proxy, target, jobs)")
	}
	return r, nil
}

func logLevel() slog.Level {
	if os.Getenv("REPLICATOR_DEBUG") != "" {
		return slog.LevelDebug
	}
	return slog.LevelInfo
}
