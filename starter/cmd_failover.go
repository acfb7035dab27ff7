package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/bytesize"
	"github.com/replicator/replicator/internal/contract"
)

// The disaster-recovery lifecycle of a replica (failover, failback and their
// undo, commit, permanent and planned forms) and of failover plans: each
// command runs one workflow under a fixed id (one operation per replica or
// plan at a time), waits for it, and prints its result.

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
			"result; a refused operation exits 1 and changes nothing.\n\n" +
			"With --out FILE it is `export` (kept for scripts written before export).",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out != "" || format != "" {
				return exportReplica(cmd, args[0], args[1], point, out, format)
			}
			return runOperation(cmd, replicaOp(contract.FailoverWorkflow, contract.ReplicaOpInput{Job: args[0], VM: args[1], Point: point}))
		},
	}
	cmd.Flags().StringVar(&point, "point", "", "restore point id (default: the newest)")
	cmd.Flags().StringVar(&out, "out", "", "export instead: file of the first disk")
	cmd.Flags().StringVar(&format, "format", "", "with --out: raw or vhdx")
	plan := planCommand("plan NAME", "Fail the VMs of a failover plan over in order, with its delays",
		"Run FailoverPlanWorkflow: the VMs of the plan NAME of the configuration\n"+
			"(failoverPlans) fail over one after the other, waiting each VM's delay before\n"+
			"the next. A VM that fails stops the plan. Prints the result; exit 0 when every\n"+
			"VM failed over, 3 when some did, 1 when none did.",
		contract.FailoverPlanWorkflow)
	plan.AddCommand(planCommand("undo NAME", "Undo the failover of every VM of a plan, last first", "", contract.UndoFailoverPlanWorkflow))
	cmd.AddCommand(
		replicaOpCommand("undo", "Power the replica VM off, discard what it wrote in failover, back to ready", "",
			contract.UndoFailoverWorkflow),
		replicaOpCommand("permanent", "Make the failed-over replica VM a standalone VM and delete the replica's restore points",
			"Run PermanentFailoverWorkflow: refused unless the replica is in failover; the\n"+
				"replica VM gets disks of its own, the replica goes to state permanent, its\n"+
				"restore points are deleted and the job no longer replicates the source VM.",
			contract.PermanentFailoverWorkflow),
		&cobra.Command{
			Use:   "planned JOB VM",
			Short: "Shut the source VM down, replicate it a last time, then fail over to that point",
			Long: "Run PlannedFailoverWorkflow: refused unless the replica is ready; the source VM\n" +
				"is shut down, a final incremental run replicates it, and the replica VM starts\n" +
				"on that run's point, so that nothing written before the shutdown is lost.",
			Args: cobra.ExactArgs(2),
			RunE: func(cmd *cobra.Command, args []string) error {
				res := new(contract.PlannedFailoverResult)
				op := replicaOp(contract.PlannedFailoverWorkflow, contract.ReplicaOpInput{Job: args[0], VM: args[1]})
				op.result = res
				op.text = func(w io.Writer) error {
					fmt.Fprint(w, "final run: ")
					if err := writeRunResult(w, res.FinalRun); err != nil {
						return err
					}
					return writeReplicaOp(w, res.Failover)
				}
				return runOperation(cmd, op)
			},
		},
		plan,
	)
	return cmd
}

func newFailbackCommand() *cobra.Command {
	var toHost, as string
	cmd := &cobra.Command{
		Use:   "failback JOB VM [--to-host HOST --as NAME]",
		Short: "Send what the replica VM changed in failover back to the original VM and start it",
		Long: "Run FailbackWorkflow: refused unless the replica is in failover. The replica VM\n" +
			"is powered off, the original VM too; exactly the blocks the replica VM wrote\n" +
			"in failover (its differencing children know them, nothing is scanned) travel\n" +
			"back through the data channel (compressed, mutual TLS) into the original VM,\n" +
			"which is started; the replica goes to failback. Then `failback commit` (back\n" +
			"to ready, replication resumes incrementally) or `failback undo` (back to\n" +
			"failover). With --to-host and --as, a new VM NAME is made on that source host\n" +
			"with the replica VM's hardware and receives every block the replica VM holds;\n" +
			"the original VM is left alone. Prints the result; a refusal exits 1 and\n" +
			"changes nothing.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			res := new(contract.FailbackResult)
			op := replicaOp(contract.FailbackWorkflow, contract.ReplicaOpInput{Job: args[0], VM: args[1]})
			op.input = contract.FailbackInput{Job: args[0], VM: args[1], ToHost: toHost, As: as}
			op.result = res
			op.text = func(w io.Writer) error {
				if err := writeReplicaOp(w, res.Replica); err != nil {
					return err
				}
				_, err := fmt.Fprintf(w, "sent to %s on %s: %s changed, %s sent, %s written\n", orDash(res.ToVM), orDash(res.ToHost),
					bytesize.Text(res.BytesChanged), bytesize.Text(res.BytesSent), bytesize.Text(res.BytesWritten))
				return err
			}
			return runOperation(cmd, op)
		},
	}
	cmd.Flags().StringVar(&toHost, "to-host", "", "fail back to a new VM on this source host (with --as)")
	cmd.Flags().StringVar(&as, "as", "", "name of the new VM with --to-host")
	cmd.AddCommand(
		replicaOpCommand("commit", "Back to ready: the replica VM returns to the newest point, replication resumes", "",
			contract.CommitFailbackWorkflow),
		replicaOpCommand("undo", "Back to failover: the original VM is shut down, the replica VM started again", "",
			contract.UndoFailbackWorkflow),
	)
	return cmd
}

// replicaOpCommand is `VERB JOB VM`: the lifecycle workflow workflowType on
// one replica, printing the replica's new state.
func replicaOpCommand(verb, short, long, workflowType string) *cobra.Command {
	return &cobra.Command{
		Use: verb + " JOB VM", Short: short, Long: long, Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runOperation(cmd, replicaOp(workflowType, contract.ReplicaOpInput{Job: args[0], VM: args[1]}))
		},
	}
}

// planCommand is `plan NAME` or `plan undo NAME`: workflowType over the
// failover plan NAME of the configuration.
func planCommand(use, short, long, workflowType string) *cobra.Command {
	return &cobra.Command{
		Use: use, Short: short, Long: long, Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			res := new(contract.FailoverPlanResult)
			return runOperation(cmd, operation{
				workflowType: workflowType,
				id:           contract.FailoverPlanWorkflowID(name),
				input:        contract.FailoverPlanInput{Plan: name},
				check: func(cfg *config.Config) error {
					if _, ok := cfg.FailoverPlan(name); !ok {
						return fmt.Errorf("failover plan %q is not in the configuration (failoverPlans)", name)
					}
					return nil
				},
				busy:   fmt.Sprintf("failover plan %s is running already", name),
				result: res,
				text:   func(w io.Writer) error { return writePlanResult(w, *res) },
				exit:   func() error { return statusExit(res.Status) },
			})
		},
	}
}

// operation is one lifecycle workflow run by a command.
type operation struct {
	workflowType string
	id           string // workflow id: one operation per replica or plan at a time
	input        any
	check        func(*config.Config) error // refuses names the configuration lacks
	busy         string                     // what the conflict means, when id is running already
	result       any                        // the workflow's result, decoded into
	text         func(io.Writer) error      // the result for people
	exit         func() error               // the exit code from the result; nil: 0
}

// replicaOp is the operation workflowType on the replica of in.VM in in.Job,
// whose result is the replica's new state.
func replicaOp(workflowType string, in contract.ReplicaOpInput) operation {
	res := new(contract.ReplicaOpResult)
	return operation{
		workflowType: workflowType,
		id:           contract.ReplicaOpWorkflowID(in.Job, in.VM),
		input:        in,
		check: func(cfg *config.Config) error {
			if _, ok := cfg.Job(in.Job); !ok {
				return fmt.Errorf("job %q is not in the configuration", in.Job)
			}
			return nil
		},
		busy:   fmt.Sprintf("another operation on the replica of %s in job %s is running", in.VM, in.Job),
		result: res,
		text:   func(w io.Writer) error { return writeReplicaOp(w, *res) },
	}
}

// runOperation starts op's workflow (refusing a second one under the same
// id), waits for it and prints its result. A failure (a refused state, an
// unknown point or replica) prints the reason and exits 1. Ctrl-C stops the
// waiting, not the operation: it goes on in Temporal, and the message says
// where to follow it.
func runOperation(cmd *cobra.Command, op operation) error {
	if _, err := outputFormat(cmd, outputText); err != nil {
		return err
	}
	c, cfg, err := dialTemporal(cmd)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := op.check(cfg); err != nil {
		return err
	}
	ctx := cmd.Context()
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: op.id, TaskQueue: cfg.Temporal.TaskQueue,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
	}, op.workflowType, op.input)
	if err != nil {
		var started *serviceerror.WorkflowExecutionAlreadyStarted
		if errors.As(err, &started) {
			return fmt.Errorf("%s (workflow %s); wait for it", op.busy, op.id)
		}
		if ctx.Err() != nil {
			return interrupted(fmt.Sprintf("%s may have started as workflow %s: see `temporal workflow describe --workflow-id %s`", op.workflowType, op.id, op.id))
		}
		return fmt.Errorf("starting %s: %w", op.workflowType, err)
	}
	if err := run.Get(ctx, op.result); err != nil {
		if ctx.Err() != nil {
			return interrupted(fmt.Sprintf("%s goes on as workflow %s (run %s): see the replicas' states with `starter replica ls`, or wait for its result with `temporal workflow result --workflow-id %s`",
				op.workflowType, op.id, run.GetRunID(), op.id))
		}
		return withExitCode(1, errors.New(failureText(err)))
	}
	if err := emit(cmd, outputText, op.result, op.text); err != nil {
		return err
	}
	if op.exit != nil {
		return op.exit()
	}
	return nil
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
