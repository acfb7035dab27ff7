package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"

	"github.com/replicator/replicator/activities"
	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/agent"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/metrics"
	"github.com/replicator/replicator/internal/pki"
	"github.com/replicator/replicator/internal/provider"
	"github.com/replicator/replicator/internal/provider/hyperv"
	"github.com/replicator/replicator/internal/provider/hyperv/hvsim"
	"github.com/replicator/replicator/internal/provider/lab"
	"github.com/replicator/replicator/internal/replica"
	"github.com/replicator/replicator/internal/temporalclient"
	"github.com/replicator/replicator/internal/transfer"
	"github.com/replicator/replicator/workflows"
)

func addConfigFlags(fs *pflag.FlagSet) { config.AddFlags(fs) }

func loadConfig(o options) (*config.Config, error) {
	cfg, err := config.Load(config.LoadOptions{File: o.config, DataDir: o.dataDir, Flags: o.flags})
	if err != nil || !o.hypervSim {
		return cfg, err
	}
	// The simulator keeps its VMs as the lab does, so a lab folder serves
	// as the simulated host's folder as it is, and `starter lab` manages it.
	for i := range cfg.Hosts {
		if h := &cfg.Hosts[i]; h.Provider == "lab" || h.Provider == "hyperv-sim" {
			h.Provider = "hyperv-sim"
			h.Simulator = config.Simulator{JobDelay: o.hypervSimDelay, JobWarnings: o.hypervSimWarnings}
		}
	}
	return cfg, nil
}

// stack is what startRoles started.
type stack struct {
	client  client.Client
	workers []worker.Worker
	agent   *agent.Agent
	metrics io.Closer
	cancel  context.CancelFunc
	done    chan struct{}
}

func (s *stack) stop() {
	for _, w := range s.workers {
		w.Stop()
	}
	if s.cancel != nil {
		s.cancel()
	}
	if s.done != nil {
		<-s.done
	}
	if s.agent != nil {
		s.agent.Close()
	}
	if s.client != nil {
		s.client.Close()
	}
	if s.metrics != nil {
		s.metrics.Close()
	}
}

func dial(cfg *config.Config, logger *slog.Logger, handler client.MetricsHandler) (client.Client, error) {
	return temporalclient.Dial(cfg.Temporal, sdklog.NewStructuredLogger(logger.With("component", "temporal")), handler)
}

// startRoles connects to Temporal and starts the roles' workers (and the
// agent's data channel for the target role).
func startRoles(ctx context.Context, cfg *config.Config, o options, roles roleSet, logger *slog.Logger) (*stack, error) {
	reg := metrics.NewRegistry()
	dataPath := metrics.NewDataPath(reg)
	handler, metricsCloser := metrics.TemporalHandler(reg)
	c, err := dial(cfg, logger, handler)
	if err != nil {
		metricsCloser.Close()
		return nil, err
	}
	s := &stack{client: c, metrics: metricsCloser}
	ok := false
	defer func() {
		if !ok {
			s.stop()
		}
	}()
	if cfg.Metrics.Listen != "" {
		if err := metrics.Serve(ctx, cfg.Metrics.Listen, reg); err != nil {
			return nil, fmt.Errorf("metrics.listen %s: %w", cfg.Metrics.Listen, err)
		}
	}
	reload := func() (*config.Config, error) { return loadConfig(o) }
	tlsFiles := pki.Files{CA: cfg.TLS.CA, Cert: cfg.TLS.Cert, Key: cfg.TLS.Key, CRL: cfg.TLS.CRL}
	if cfg.TLS.Cert != "" {
		// Certificates are short-lived: say so well before one ends.
		if leaf, err := tlsFiles.Leaf(); err == nil && time.Until(leaf.NotAfter) < 14*24*time.Hour {
			logger.Warn("the data channel's certificate expires soon: renew it with `starter pki renew`",
				"cert", cfg.TLS.Cert, "notAfter", leaf.NotAfter.UTC().Format(time.RFC3339))
		}
	}

	if roles.jobs {
		w := worker.New(c, cfg.Temporal.TaskQueue, worker.Options{Interceptors: o.interceptors})
		workflows.Register(w)
		w.RegisterActivity(&activities.Jobs{Config: reload, Client: c, Namespace: cfg.Temporal.Namespace})
		s.workers = append(s.workers, w)
	}
	if roles.proxy {
		var clientTLS *tls.Config
		if cfg.TLS.Cert != "" {
			if clientTLS, err = tlsFiles.ClientTLS(); err != nil {
				return nil, fmt.Errorf("tls: %w", err)
			}
		}
		src := &activities.Source{Providers: map[string]provider.Provider{}, TLS: clientTLS, Client: c, Config: reload,
			Logger: logger.With("role", "proxy"), Metrics: dataPath}
		for _, h := range cfg.Hosts {
			p, err := newProvider(ctx, h, logger)
			if err != nil {
				return nil, fmt.Errorf("hosts %s: %w", h.Name, err)
			}
			src.Providers[h.Name] = p
		}
		for _, h := range cfg.Hosts {
			w := worker.New(c, contract.SourceQueue(h.Name), worker.Options{DisableWorkflowWorker: true, Interceptors: o.interceptors})
			w.RegisterActivity(src)
			s.workers = append(s.workers, w)
		}
	}
	if roles.target {
		if cfg.Agent.Name == "" {
			return nil, fmt.Errorf("the target role needs agent.name, agent.listen and agent.datastore in the configuration")
		}
		host, _ := os.Hostname()
		key, err := replica.LoadKeyFile(cfg.Agent.EncryptionKeyFile)
		if err != nil {
			return nil, fmt.Errorf("agent.encryptionKeyFile: %w", err)
		}
		a, err := agent.New(cfg.Agent.Datastore, fmt.Sprintf("agent %s on %s pid %d", cfg.Agent.Name, host, os.Getpid()), agent.WithKey(key))
		if err != nil {
			return nil, err
		}
		s.agent = a
		serverTLS, err := tlsFiles.ServerTLS()
		if err != nil {
			return nil, fmt.Errorf("tls (the agent's data channel needs tls.ca, tls.cert and tls.key): %w", err)
		}
		ln, err := net.Listen("tcp", cfg.Agent.Listen)
		if err != nil {
			return nil, fmt.Errorf("agent.listen %s: %w", cfg.Agent.Listen, err)
		}
		rctx, cancel := context.WithCancel(ctx)
		s.cancel = cancel
		s.done = make(chan struct{})
		recv := transfer.NewReceiver(a, serverTLS, transfer.ReceiverOptions{Logger: logger.With("role", "agent"), SinkBufferBytes: replica.WriteBufferBytes})
		go func() {
			defer close(s.done)
			if err := recv.Serve(rctx, ln); err != nil && rctx.Err() == nil {
				logger.Error("agent data channel stopped", "error", err)
			}
		}()
		// The RPO lag of every VM this agent holds, from its replicas.
		rpo := metrics.NewRPO(reg, func() ([]metrics.Replica, error) { return replicaAges(a.Store(), reload) }, logger.With("role", "agent"))
		notifier, err := newRPONotifier(cfg.Agent.Name, filepath.Join(a.Store().Root(), rpoNotifiedFile), func() (config.Notify, error) {
			c, err := reload()
			if err != nil {
				return config.Notify{}, err
			}
			return c.Notify, nil
		}, activities.NotifyRPO, logger.With("role", "agent"))
		if err != nil {
			return nil, err
		}
		go func() {
			// Breaches are counted, and notified, even when nothing scrapes
			// and no run is going (a stopped worker is a breach to tell).
			t := time.NewTicker(rpoCheckEvery)
			defer t.Stop()
			for {
				select {
				case <-rctx.Done():
					return
				case <-t.C:
					// nil: the replicas could not be read (logged); an empty
					// list would forget every breach told.
					if reps := rpo.Check(); reps != nil {
						notifier.check(rctx, reps, time.Now())
					}
				}
			}
		}()
		w := worker.New(c, contract.TargetQueue(cfg.Agent.Name), worker.Options{DisableWorkflowWorker: true, Interceptors: o.interceptors})
		tgt := &activities.Target{Agent: a, Channel: recv, Datastore: cfg.Agent.Datastore, Config: reload, Name: cfg.Agent.Name,
			ServerTLS: serverTLS, Listen: cfg.Agent.Listen, Logger: logger.With("role", "agent")}
		if h := cfg.Agent.Host; h.Name != "" {
			rh, err := newReplicaHost(ctx, h, cfg.Agent.Datastore, logger)
			if err != nil {
				return nil, fmt.Errorf("agent.host %s: %w", h.Name, err)
			}
			tgt.Host, tgt.HostName = rh, h.Name
			if key != nil {
				logger.Warn("agent.host is set but the datastore is encrypted at rest (agent.encryptionKeyFile): no replica VM is registered, and failover and failback are refused", "host", h.Name)
			}
		}
		tgt.Encrypted = key != nil
		w.RegisterActivity(tgt)
		s.workers = append(s.workers, w)
	}
	for _, w := range s.workers {
		if err := w.Start(); err != nil {
			return nil, fmt.Errorf("starting worker: %w", err)
		}
	}
	if roles.jobs {
		// A job with rpo needs nothing started by hand: its schedule follows
		// the configuration each time the jobs role starts.
		if err := reconcileSchedules(ctx, c, cfg, logger.With("role", "jobs")); err != nil {
			return nil, err
		}
	}
	ok = true
	return s, nil
}

func newProvider(ctx context.Context, h config.Host, logger *slog.Logger) (provider.Provider, error) {
	switch h.Provider {
	case "lab":
		if err := os.MkdirAll(h.Path, 0o755); err != nil {
			return nil, err
		}
		return lab.New(h.Name, h.Path), nil
	case "hyperv":
		return hyperv.New(ctx, h, hyperv.Options{Logger: logger.With("host", h.Name)})
	case "hyperv-sim":
		return hvsim.NewProvider(h.Name, h.Path, hvsim.Options{JobDelay: h.Simulator.JobDelay, JobWarnings: h.Simulator.JobWarnings},
			hyperv.Options{Logger: logger.With("host", h.Name)})
	}
	return nil, fmt.Errorf("unknown provider %q", h.Provider)
}

// newReplicaHost opens the target's own host, where replica VMs are
// registered. On Hyper-V their disks go to replica-vms beside the datastore
// (never inside it, where every folder is a job).
func newReplicaHost(ctx context.Context, h config.Host, datastore string, logger *slog.Logger) (provider.ReplicaHost, error) {
	switch h.Provider {
	case "lab":
		if err := os.MkdirAll(h.Path, 0o755); err != nil {
			return nil, err
		}
		return lab.New(h.Name, h.Path), nil
	case "hyperv":
		p, err := hyperv.New(ctx, h, hyperv.Options{Logger: logger.With("host", h.Name)})
		if err != nil {
			return nil, err
		}
		folder := filepath.Join(filepath.Dir(filepath.Clean(datastore)), "replica-vms")
		return &hyperv.ReplicaHost{Provider: p, Folder: folder}, nil
	}
	return nil, fmt.Errorf("provider %q cannot register replica VMs (lab and hyperv can)", h.Provider)
}
