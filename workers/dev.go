//go:build !nodev

// The --dev stack: an embedded Temporal server (go.temporal.io/server, about
// 1,500 of the packages this command links), the Web UI and a lab host. A
// build with -tags nodev (the container image) leaves it out; dev_nodev.go
// then answers --dev with an error.

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/devserver"
	"github.com/replicator/replicator/internal/pki"
	"github.com/replicator/replicator/internal/provider/lab"
	"github.com/replicator/replicator/internal/replica"
	"github.com/replicator/replicator/internal/runresult"
	"github.com/replicator/replicator/internal/temporalclient"
)

// runDev starts the whole stack in this process and runs the demo job.
func runDev(ctx context.Context, o options, roles roleSet, logger *slog.Logger) int {
	started := time.Now()
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "workers --dev:", err)
		return 1
	}
	if err := os.MkdirAll(o.dataDir, 0o755); err != nil {
		return fail(err)
	}
	cfg, err := loadConfig(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "workers --dev:", err)
		return 2
	}
	if _, err := pki.EnsureDev(filepath.Join(o.dataDir, "pki")); err != nil {
		return fail(fmt.Errorf("certificates: %w", err))
	}
	codecEndpoint, err := serveCodec(ctx, cfg, o.uiAddress)
	if err != nil {
		return fail(err)
	}
	srv, err := devserver.Start(devserver.Options{
		DataDir:         filepath.Join(o.dataDir, "temporal"),
		FrontendAddress: cfg.Temporal.Address,
		UIAddress:       o.uiAddress,
		CodecEndpoint:   codecEndpoint,
		Namespace:       cfg.Temporal.Namespace,
		Retention:       7 * 24 * time.Hour,
		Logger:          logger,
	})
	if err != nil {
		return fail(err)
	}
	defer srv.Stop()
	for _, h := range cfg.Hosts {
		if h.Provider == "lab" || h.Provider == "hyperv-sim" {
			if err := lab.Seed(ctx, h.Path); err != nil {
				return fail(fmt.Errorf("seeding lab host %s: %w", h.Name, err))
			}
		}
	}
	st, err := startRoles(ctx, cfg, o, roles, logger)
	if err != nil {
		return fail(err)
	}
	defer st.stop()
	if err := registerSearchAttributes(ctx, st.client, cfg.Temporal.Namespace); err != nil {
		return fail(err)
	}
	fmt.Printf("replicator dev stack up in %s\n  Temporal  %s (namespace %s)\n", time.Since(started).Round(time.Millisecond), cfg.Temporal.Address, cfg.Temporal.Namespace)
	if o.uiAddress != "" {
		fmt.Printf("  Web UI    http://%s\n", o.uiAddress)
	}
	if codecEndpoint != "" {
		fmt.Printf("  codec     %s (the Web UI decodes payloads there)\n", codecEndpoint)
	}
	if cfg.Metrics.Listen != "" {
		fmt.Printf("  metrics   http://%s/metrics\n", cfg.Metrics.Listen)
	}
	fmt.Printf("  agent     %s (datastore %s)\n  data      %s\n", cfg.Agent.Listen, cfg.Agent.Datastore, o.dataDir)

	job := "demo"
	if _, ok := cfg.Job(job); !ok && len(cfg.Jobs) > 0 {
		job = cfg.Jobs[0].Name
	}
	res, runErr := runJob(ctx, st.client, cfg, job)
	out, _ := json.MarshalIndent(res, "", "  ")
	fmt.Println(string(out))
	code := 0
	switch {
	case runErr != nil:
		fmt.Fprintln(os.Stderr, "workers --dev: the demo run failed:", runErr)
		code = 1
	case res.Status != contract.StatusSuccess:
		fmt.Fprintf(os.Stderr, "workers --dev: the demo run ended %s\n", res.Status)
		code = 1
	default:
		if err := verifyRun(ctx, cfg, res); err != nil {
			fmt.Fprintln(os.Stderr, "workers --dev: verification failed:", err)
			code = 1
		} else {
			fmt.Println("every restore point of the run verified against its digests")
		}
	}
	if o.once {
		return code
	}
	fmt.Println("serving; Ctrl-C to stop")
	<-ctx.Done()
	return code
}

// runJob starts ReplicationWorkflow for job, prints progress, and returns the result.
func runJob(ctx context.Context, c client.Client, cfg *config.Config, job string) (contract.ReplicationResult, error) {
	id := fmt.Sprintf("%s-%s", job, time.Now().UTC().Format("20060102T150405.000"))
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: cfg.Temporal.TaskQueue},
		contract.ReplicationWorkflow, contract.ReplicationInput{Job: job})
	if err != nil {
		return contract.ReplicationResult{Job: job, Status: contract.StatusFailed}, err
	}
	fmt.Printf("started %s workflow %s (run %s)\n", contract.ReplicationWorkflow, id, run.GetRunID())
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		last := ""
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			v, err := c.QueryWorkflow(ctx, id, "", contract.ProgressQuery)
			if err != nil {
				continue
			}
			var p contract.ReplicationResult
			if v.Get(&p) != nil {
				continue
			}
			line := progressLine(p)
			if line != last {
				fmt.Println(line)
				last = line
			}
		}
	}()
	var res contract.ReplicationResult
	err = run.Get(ctx, &res)
	close(done)
	if err != nil {
		res.Job, res.Status, res.RunID = job, contract.StatusFailed, run.GetRunID()
		return res, err
	}
	// A job of thousands of VMs counts the finished VMs past its payload
	// budget: their detail is read back from their workflows.
	if err := runresult.Complete(ctx, c, id, &res); err != nil {
		fmt.Fprintf(os.Stderr, "the result counts %d VMs it does not list: %v\n", res.VMsOmitted, err)
	}
	return res, nil
}

func progressLine(p contract.ReplicationResult) string {
	var done, total, acked, size int64
	for _, vm := range p.VMs {
		total++
		if vm.Status == contract.StatusSuccess || vm.Status == contract.StatusFailed || vm.Status == contract.StatusPartial {
			done++
		}
		for _, d := range vm.Disks {
			acked += d.Position
			size += d.Size
		}
	}
	return fmt.Sprintf("progress: %d/%d VMs finished, %d/%d MiB acknowledged", done, total, acked>>20, size>>20)
}

// verifyRun re-reads every restore point the run committed against its digests.
func verifyRun(ctx context.Context, cfg *config.Config, res contract.ReplicationResult) error {
	key, err := replica.LoadKeyFile(cfg.Agent.EncryptionKeyFile)
	if err != nil {
		return err
	}
	store, err := replica.OpenEncrypted(cfg.Agent.Datastore, true, key)
	if err != nil {
		return err
	}
	for _, vm := range res.VMs {
		r, err := store.Replica(res.Job, vm.ID)
		if err != nil {
			return err
		}
		if _, err := r.Verify(ctx, vm.RestorePoint); err != nil {
			return fmt.Errorf("VM %s restore point %s: %w", vm.Name, vm.RestorePoint, err)
		}
	}
	return nil
}

// serveCodec serves the payload codec on loopback for the dev Web UI when
// temporal.codecKeyFile is set, and returns its URL ("" when not set).
func serveCodec(ctx context.Context, cfg *config.Config, uiAddress string) (string, error) {
	if cfg.Temporal.CodecKeyFile == "" || uiAddress == "" {
		return "", nil
	}
	codec, err := temporalclient.LoadCodec(cfg.Temporal.CodecKeyFile)
	if err != nil {
		return "", fmt.Errorf("temporal.codecKeyFile: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("codec server: %w", err)
	}
	srv := &http.Server{Handler: codec.Handler("http://"+uiAddress, ""), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	context.AfterFunc(ctx, func() { srv.Close() })
	return "http://" + ln.Addr().String(), nil
}
