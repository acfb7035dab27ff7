package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"go.temporal.io/sdk/client"

	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/runresult"
)

func newRunCommand() *cobra.Command {
	var vms, attach string
	var watch, wait bool
	cmd := &cobra.Command{
		Use:   "run JOB [--vms a,b] [--watch] [--wait]",
		Short: "Start a replication run of JOB (exit 0 success, 3 partial, 1 failed with --wait)",
		Long: "Start ReplicationWorkflow for JOB and print its workflow id. --watch draws\n" +
			"progress bars until the run ends; --wait prints its result (JSON unless\n" +
			"--output text). Both exit 0 on success, 3 partial, 1 failed. Ctrl-C stops\n" +
			"watching or waiting, not the run: it goes on in Temporal, and\n" +
			"`starter run --attach WORKFLOW_ID --watch` (or --wait) follows it again.",
		Args: func(cmd *cobra.Command, args []string) error {
			if attach != "" {
				if len(args) > 0 {
					return fmt.Errorf("run --attach %s follows a run already started: give no JOB", attach)
				}
				return nil
			}
			return cobra.ExactArgs(1)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := outputFormat(cmd, outputText)
			if err != nil {
				return err
			}
			if wait {
				// the result is JSON unless text is asked for
				if format, err = outputFormat(cmd, outputJSON); err != nil {
					return err
				}
			}
			c, cfg, err := dialTemporal(cmd)
			if err != nil {
				return err
			}
			defer c.Close()
			ctx := cmd.Context()
			if attach != "" {
				if !watch && !wait {
					return errors.New("run --attach: give --watch, --wait or both")
				}
				return followRun(cmd, c, c.GetWorkflow(ctx, attach, ""), attach, watch, wait, format)
			}
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
				type started struct {
					WorkflowID string `json:"workflowId"`
					RunID      string `json:"runId"`
				}
				return emit(cmd, outputText, started{id, run.GetRunID()}, func(w io.Writer) error {
					_, err := fmt.Fprintln(w, id)
					return err
				})
			}
			return followRun(cmd, c, run, id, watch, wait, format)
		},
	}
	cmd.Flags().StringVar(&vms, "vms", "", "narrow the run to these VMs (names or ids, comma-separated)")
	cmd.Flags().BoolVar(&watch, "watch", false, "draw progress bars until the run ends")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait for the run and print its result (JSON unless --output text)")
	cmd.Flags().StringVar(&attach, "attach", "", "follow a run already started (its workflow id) instead of starting one")
	return cmd
}

// followRun draws the progress of run (watch), waits for its result and
// prints it (wait, in format), and exits by its status. Ctrl-C leaves the
// run going and says how to follow it again.
func followRun(cmd *cobra.Command, c client.Client, run client.WorkflowRun, id string, watch, wait bool, format string) error {
	ctx := cmd.Context()
	if watch {
		stop, watched := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(watched)
			watchProgress(ctx, c, id, stop, cmd)
		}()
		// The bars' last frame is drawn before the result or a message.
		defer func() {
			close(stop)
			select { // never let drawing hold the exit up
			case <-watched:
			case <-time.After(2 * time.Second):
			}
		}()
	}
	var res contract.ReplicationResult
	if err := run.Get(ctx, &res); err != nil {
		if ctx.Err() != nil {
			return interrupted(fmt.Sprintf("the run goes on as workflow %s: follow it with `starter run --attach %s --watch`, see its progress with `starter status %s`", id, id, id))
		}
		return withExitCode(1, fmt.Errorf("run %s failed: %w", id, err))
	}
	if wait {
		if err := runresult.Complete(ctx, c, id, &res); err != nil {
			fmt.Fprintf(cmd.ErrOrStderr(), "the result counts %d VMs it does not list: %v\n", res.VMsOmitted, err)
		}
		var err error
		if format == outputJSON {
			err = printJSON(cmd, res)
		} else {
			err = writeRunResult(cmd.OutOrStdout(), res)
		}
		if err != nil {
			return err
		}
	}
	return statusExit(res.Status)
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
		Short: "Print the progress of a run (the progress query), as JSON unless --output text",
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
			return emit(cmd, outputJSON, p, func(w io.Writer) error { return writeRunResult(w, p) })
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
			p.Shutdown() // draws the last frame and ends the bars' line
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
