package main

import (
	"github.com/spf13/cobra"

	"github.com/replicator/replicator/internal/contract"
)

func init() { commands = append(commands, newFailbackCommand) }

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
			"the original VM is left alone. Prints the result as JSON; a refusal exits 1\n" +
			"and changes nothing.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			in := contract.FailbackInput{Job: args[0], VM: args[1], ToHost: toHost, As: as}
			return runWorkflowOp(cmd, contract.FailbackWorkflow, in, new(contract.FailbackResult))
		},
	}
	cmd.Flags().StringVar(&toHost, "to-host", "", "fail back to a new VM on this source host (with --as)")
	cmd.Flags().StringVar(&as, "as", "", "name of the new VM with --to-host")
	cmd.AddCommand(&cobra.Command{
		Use:   "commit JOB VM",
		Short: "Back to ready: the replica VM returns to the newest point, replication resumes",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runReplicaOp(cmd, contract.CommitFailbackWorkflow, contract.ReplicaOpInput{Job: args[0], VM: args[1]})
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "undo JOB VM",
		Short: "Back to failover: the original VM is shut down, the replica VM started again",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runReplicaOp(cmd, contract.UndoFailbackWorkflow, contract.ReplicaOpInput{Job: args[0], VM: args[1]})
		},
	})
	return cmd
}
