package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"go.temporal.io/sdk/client"

	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/runresult"
)

func init() { commands = append(commands, newRunCommand, newStatusCommand) }

func newRunCommand() *cobra.Command {
	var vms string
	var watch, wait bool
	cmd := &cobra.Command{
		Use:   "run JOB",
		Short: "Start a replication run of JOB (exit 0 success, 3 partial, 1 failed with --wait)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, cfg, err := dialTemporal(cmd)
			if err != nil {
				return err
			}
			defer c.Close()
			in := contract.ReplicationInput{Job: args[0]}
			if vms != "" {
				for _, v := range strings.Split(vms, ",") {
					if v = strings.TrimSpace(v); v != "" {
						in.VMs = append(in.VMs, v)
					}
				}
			}
			if _, ok := cfg.Job(in.Job); !ok {
				return fmt.Errorf("job %q is not in the configuration", in.Job)
			}
			ctx := cmd.Context()
			id := fmt.Sprintf("%s-%s", in.Job, time.Now().UTC().Format("20060102T150405.000"))
			summary := "job " + in.Job + " · started by starter run"
			if len(in.VMs) > 0 {
				summary += " · VMs " + strings.Join(in.VMs, ", ")
			}
			run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: cfg.Temporal.TaskQueue, StaticSummary: summary},
				contract.ReplicationWorkflow, in)
			if err != nil {
				return fmt.Errorf("starting %s: %w", contract.ReplicationWorkflow, err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "started workflow %s (run %s)\n", id, run.GetRunID())
			if !watch && !wait {
				fmt.Fprintln(cmd.OutOrStdout(), id)
				return nil
			}
			if watch {
				stop := make(chan struct{})
				go watchProgress(ctx, c, id, stop, cmd)
				defer close(stop)
			}
			var res contract.ReplicationResult
			if err := run.Get(ctx, &res); err != nil {
				return withExitCode(1, fmt.Errorf("run %s failed: %w", id, err))
			}
			if wait {
				if err := runresult.Complete(ctx, c, id, &res); err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "the result counts %d VMs it does not list: %v\n", res.VMsOmitted, err)
				}
				if err := printJSON(cmd, res); err != nil {
					return err
				}
			}
			return statusExit(res.Status)
		},
	}
	cmd.Flags().StringVar(&vms, "vms", "", "narrow the run to these VMs (names or ids, comma-separated)")
	cmd.Flags().BoolVar(&watch, "watch", false, "draw progress bars until the run ends")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait for the run and print its result JSON")
	return cmd
}

// statusExit turns a run status into the exit code: 0 success, 3 partial, 1 failed.
func statusExit(status string) error {
	switch status {
	case contract.StatusSuccess:
		return nil
	case contract.StatusPartial:
		return withExitCode(3, errors.New(""))
	default:
		return withExitCode(1, errors.New(""))
	}
}

func newStatusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status WORKFLOW_ID",
		Short: "Print the progress of a run (the progress query) as JSON",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := dialTemporal(cmd)
			if err != nil {
				return err
			}
			defer c.Close()
			p, err := queryProgress(cmd.Context(), c, args[0])
			if err != nil {
				return err
			}
			// A job of thousands of VMs counts the finished VMs past its
			// payload budget: their detail is read back from their workflows.
			if err := runresult.Complete(cmd.Context(), c, args[0], &p); err != nil {
				return fmt.Errorf("progress of %s: %w", args[0], err)
			}
			return printJSON(cmd, p)
		},
	}
}

func queryProgress(ctx context.Context, c client.Client, id string) (contract.ReplicationResult, error) {
	var p contract.ReplicationResult
	v, err := c.QueryWorkflow(ctx, id, "", contract.ProgressQuery)
	if err != nil {
		return p, fmt.Errorf("progress of %s: %w", id, err)
	}
	return p, v.Get(&p)
}

// watchProgress draws one bar per disk: bytes acknowledged of its size, rate and ETA.
func watchProgress(ctx context.Context, c client.Client, id string, stop <-chan struct{}, cmd *cobra.Command) {
	p := mpb.NewWithContext(ctx, mpb.WithOutput(cmd.ErrOrStderr()), mpb.WithRefreshRate(500*time.Millisecond))
	bars := map[string]*mpb.Bar{}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			for _, b := range bars {
				b.Abort(false)
			}
			p.Wait()
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		prog, err := queryProgress(ctx, c, id)
		if err != nil {
			continue
		}
		for _, vm := range prog.VMs {
			for _, d := range vm.Disks {
				key := vm.Name + " disk " + d.ID
				b, ok := bars[key]
				if !ok {
					if d.Size <= 0 {
						continue
					}
					name := key
					status := d.Status
					b = p.AddBar(d.Size,
						mpb.PrependDecorators(decor.Name(name, decor.WCSyncSpaceR), decor.Any(func(decor.Statistics) string { return status }, decor.WCSyncSpace)),
						mpb.AppendDecorators(decor.CountersKibiByte("% .1f / % .1f"), decor.EwmaSpeed(decor.SizeB1024(0), " % .1f", 30), decor.EwmaETA(decor.ET_STYLE_GO, 30)))
					bars[key] = b
				}
				if d.Position > b.Current() {
					b.EwmaIncrInt64(d.Position-b.Current(), time.Second)
				}
				if d.Status == contract.StatusSuccess {
					b.SetCurrent(d.Size)
				}
			}
		}
	}
}
