package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/replica"
)

func init() { commands = append(commands, newFailoverCommand, newExportCommand) }

func newExportCommand() *cobra.Command {
	var point, out, format string
	cmd := &cobra.Command{
		Use:   "export JOB VM [--point ID] --out FILE [--format raw|vhdx]",
		Short: "Write the replica's disks at a restore point as standalone disks",
		Long: "Write every disk of the replica of VM (a name or an id) in JOB at a restore\n" +
			"point (default: the newest) as a standalone raw or dynamic VHDX disk. FILE names\n" +
			"the first disk; further disks get -1, -2 … before the extension. The format\n" +
			"defaults to vhdx when FILE ends in .vhdx, else raw. Existing files are never\n" +
			"overwritten. Prints what was written as JSON.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return exportReplica(cmd, args[0], args[1], point, out, format)
		},
	}
	cmd.Flags().StringVar(&point, "point", "", "restore point id (default: the newest)")
	cmd.Flags().StringVar(&out, "out", "", "file of the first disk (required)")
	cmd.Flags().StringVar(&format, "format", "", "raw or vhdx (default: from the extension of --out, else raw)")
	return cmd
}

func exportReplica(cmd *cobra.Command, job, vm, point, out, format string) error {
	if out == "" {
		return errors.New("export: --out FILE is required")
	}
	if format == "" {
		format = replica.FormatRaw
		if strings.EqualFold(filepath.Ext(out), ".vhdx") {
			format = replica.FormatVHDX
		}
	}
	if format != replica.FormatRaw && format != replica.FormatVHDX {
		return fmt.Errorf("export: --format %q: raw or vhdx", format)
	}
	r, err := replicaFromArgs(cmd, job, vm)
	if err != nil {
		return err
	}
	pts, err := r.Points()
	if err != nil {
		return err
	}
	p, err := pickPoint(pts, point)
	if err != nil {
		return fmt.Errorf("export %s %s: %w", job, vm, err)
	}
	written, err := failoverDisks(cmd, r, p, out, format)
	if err != nil {
		return err
	}
	return printJSON(cmd, written)
}

func newFailoverCommand() *cobra.Command {
	var point, out, format string
	cmd := &cobra.Command{
		Use:   "failover JOB VM [--point ID]",
		Short: "Start the replica VM of VM on a restore point (default: the newest)",
		Long: "Fail the replica of VM (a name or an id) in JOB over: the replica VM on the\n" +
			"target's host gets new differencing disks on the restore point (the point\n" +
			"itself is never written), the job's network mapping and re-IP rules, and is\n" +
			"started; the replica goes to state failover and replication skips it until\n" +
			"`failover undo` or `failback commit`. Runs FailoverWorkflow and prints its\n" +
			"result as JSON; a refused operation exits 1 and changes nothing.\n\n" +
			"With --out FILE it is `export` (kept for scripts written before export).",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out != "" || format != "" {
				return exportReplica(cmd, args[0], args[1], point, out, format)
			}
			return runReplicaOp(cmd, contract.FailoverWorkflow, contract.ReplicaOpInput{Job: args[0], VM: args[1], Point: point})
		},
	}
	cmd.Flags().StringVar(&point, "point", "", "restore point id (default: the newest)")
	cmd.Flags().StringVar(&out, "out", "", "export instead: file of the first disk")
	cmd.Flags().StringVar(&format, "format", "", "with --out: raw or vhdx")
	cmd.AddCommand(&cobra.Command{
		Use:   "undo JOB VM",
		Short: "Power the replica VM off, discard what it wrote in failover, back to ready",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runReplicaOp(cmd, contract.UndoFailoverWorkflow, contract.ReplicaOpInput{Job: args[0], VM: args[1]})
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "permanent JOB VM",
		Short: "Make the failed-over replica VM a standalone VM and delete the replica's restore points",
		Long: "Run PermanentFailoverWorkflow: refused unless the replica is in failover; the\n" +
			"replica VM gets disks of its own, the replica goes to state permanent, its\n" +
			"restore points are deleted and the job no longer replicates the source VM.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runReplicaOp(cmd, contract.PermanentFailoverWorkflow, contract.ReplicaOpInput{Job: args[0], VM: args[1]})
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "planned JOB VM",
		Short: "Shut the source VM down, replicate it a last time, then fail over to that point",
		Long: "Run PlannedFailoverWorkflow: refused unless the replica is ready; the source VM\n" +
			"is shut down, a final incremental run replicates it, and the replica VM starts\n" +
			"on that run's point, so that nothing written before the shutdown is lost.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runWorkflowOp(cmd, contract.PlannedFailoverWorkflow, contract.ReplicaOpInput{Job: args[0], VM: args[1]}, new(contract.PlannedFailoverResult))
		},
	})
	plan := &cobra.Command{
		Use:   "plan NAME",
		Short: "Fail the VMs of a failover plan over in order, with its delays",
		Long: "Run FailoverPlanWorkflow: the VMs of the plan NAME of the configuration\n" +
			"(failoverPlans) fail over one after the other, waiting each VM's delay before\n" +
			"the next. A VM that fails stops the plan. Prints the result as JSON; exit 0\n" +
			"when every VM failed over, 3 when some did, 1 when none did.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runPlan(cmd, contract.FailoverPlanWorkflow, args[0])
		},
	}
	plan.AddCommand(&cobra.Command{
		Use:   "undo NAME",
		Short: "Undo the failover of every VM of a plan, last first",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runPlan(cmd, contract.UndoFailoverPlanWorkflow, args[0])
		},
	})
	cmd.AddCommand(plan)
	return cmd
}

// runPlan runs a plan workflow under the plan's workflow id and prints its result.
func runPlan(cmd *cobra.Command, workflowType, name string) error {
	c, cfg, err := dialTemporal(cmd)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, ok := cfg.FailoverPlan(name); !ok {
		return fmt.Errorf("failover plan %q is not in the configuration (failoverPlans)", name)
	}
	id := contract.FailoverPlanWorkflowID(name)
	run, err := c.ExecuteWorkflow(cmd.Context(), client.StartWorkflowOptions{
		ID: id, TaskQueue: cfg.Temporal.TaskQueue,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
	}, workflowType, contract.FailoverPlanInput{Plan: name})
	if err != nil {
		var started *serviceerror.WorkflowExecutionAlreadyStarted
		if errors.As(err, &started) {
			return fmt.Errorf("failover plan %s is running already (workflow %s); wait for it", name, id)
		}
		return fmt.Errorf("starting %s: %w", workflowType, err)
	}
	var res contract.FailoverPlanResult
	if err := run.Get(cmd.Context(), &res); err != nil {
		return withExitCode(1, errors.New(failureText(err)))
	}
	if err := printJSON(cmd, res); err != nil {
		return err
	}
	return statusExit(res.Status)
}

// runReplicaOp runs a lifecycle workflow of one replica under the replica's
// workflow id, waits for it and prints its result. A failure (a refused
// state, an unknown point or replica) prints the reason and exits 1.
func runReplicaOp(cmd *cobra.Command, workflowType string, in contract.ReplicaOpInput) error {
	return runWorkflowOp(cmd, workflowType, in, new(contract.ReplicaOpResult))
}

// runWorkflowOp is runReplicaOp with the workflow's own result type.
func runWorkflowOp(cmd *cobra.Command, workflowType string, input any, res any) error {
	var in contract.ReplicaOpInput
	switch v := input.(type) {
	case contract.ReplicaOpInput:
		in = v
	case contract.FailbackInput:
		in = contract.ReplicaOpInput{Job: v.Job, VM: v.VM}
	}
	c, cfg, err := dialTemporal(cmd)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, ok := cfg.Job(in.Job); !ok {
		return fmt.Errorf("job %q is not in the configuration", in.Job)
	}
	id := contract.ReplicaOpWorkflowID(in.Job, in.VM)
	run, err := c.ExecuteWorkflow(cmd.Context(), client.StartWorkflowOptions{
		ID: id, TaskQueue: cfg.Temporal.TaskQueue,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
	}, workflowType, input)
	if err != nil {
		var started *serviceerror.WorkflowExecutionAlreadyStarted
		if errors.As(err, &started) {
			return fmt.Errorf("another operation on the replica of %s in job %s is running (workflow %s); wait for it", in.VM, in.Job, id)
		}
		return fmt.Errorf("starting %s: %w", workflowType, err)
	}
	if err := run.Get(cmd.Context(), res); err != nil {
		return withExitCode(1, errors.New(failureText(err)))
	}
	return printJSON(cmd, res)
}

// failureText is the reason a workflow failed as the activity that refused
// gave it, without the layers Temporal adds around it.
func failureText(err error) string {
	var app *temporal.ApplicationError
	if errors.As(err, &app) {
		return app.Message()
	}
	return err.Error()
}

// failoverDisk is one file failover wrote.
type failoverDisk struct {
	Disk        string `json:"disk"`
	File        string `json:"file"`
	Format      string `json:"format"`
	VirtualSize int64  `json:"virtualSize"`
	Point       string `json:"point"`
}

func pickPoint(pts []replica.Point, id string) (replica.Point, error) {
	if len(pts) == 0 {
		return replica.Point{}, errors.New("the replica has no complete restore point")
	}
	if id == "" {
		return pts[len(pts)-1], nil
	}
	for _, p := range pts {
		if p.ID == id {
			return p, nil
		}
	}
	ids := make([]string, len(pts))
	for i, p := range pts {
		ids[i] = p.ID
	}
	return replica.Point{}, fmt.Errorf("no restore point %q (points: %s)", id, strings.Join(ids, ", "))
}

// diskFileName names the file of disk i: FILE for the first, FILE-i.ext after.
func diskFileName(out string, i int) string {
	if i == 0 {
		return out
	}
	ext := filepath.Ext(out)
	return fmt.Sprintf("%s-%d%s", strings.TrimSuffix(out, ext), i, ext)
}

// failoverDisks writes every disk of p; on failure it removes what this call
// wrote, so that a retry starts clean.
func failoverDisks(cmd *cobra.Command, r *replica.Replica, p replica.Point, out, format string) ([]failoverDisk, error) {
	var plan []failoverDisk
	for i, d := range p.Disks {
		f := diskFileName(out, i)
		if _, err := os.Lstat(f); err == nil {
			return nil, fmt.Errorf("failover: %s exists; remove it or choose another --out", f)
		}
		plan = append(plan, failoverDisk{Disk: d.ID, File: f, Format: format, VirtualSize: d.VirtualSize, Point: p.ID})
	}
	for i, fd := range plan {
		if err := r.Materialize(cmd.Context(), p.ID, fd.Disk, fd.File, format); err != nil {
			for _, done := range plan[:i] {
				os.Remove(done.File)
			}
			return nil, fmt.Errorf("failover: %w", err)
		}
	}
	return plan, nil
}
