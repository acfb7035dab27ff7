package main

import (
	"github.com/spf13/cobra"
)

func init() { commands = append(commands, newVerifyCommand) }

func newVerifyCommand() *cobra.Command {
	var point string
	cmd := &cobra.Command{
		Use:   "verify JOB VM [--point ID]",
		Short: "Re-read a restore point and check every block against its recorded digest",
		Long: "Re-read every block of the replica of VM (a name or an id) in JOB at a restore\n" +
			"point (default: the newest) and compare it with the digest recorded when it was\n" +
			"written. Prints the report as JSON; exits 0 only if every block matches, else\n" +
			"names the first bad block (disk, index, byte offset).",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := replicaFromArgs(cmd, args[0], args[1])
			if err != nil {
				return err
			}
			rep, verr := r.Verify(cmd.Context(), point)
			if rep.Point != "" {
				if err := printJSON(cmd, rep); err != nil {
					return err
				}
			}
			if verr != nil {
				return withExitCode(1, verr)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&point, "point", "", "restore point id (default: the newest)")
	return cmd
}
