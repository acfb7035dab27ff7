package main

import (
	"io"

	"github.com/spf13/cobra"

	"github.com/replicator/replicator/internal/replica"
)

func newPointsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "points JOB VM",
		Short: "List the complete restore points of a replica, oldest first (JSON unless --output text)",
		Long: "List the restore points of the replica of VM (a name or an id) in JOB, oldest\n" +
			"first: id, time, complete, size (bytes the point's own files hold), source\n" +
			"checkpoint, change tracking and disks. A point still being written is not listed.\n" +
			"Prints JSON, as scripts have always read it; --output text prints a table.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := replicaFromArgs(cmd, args[0], args[1])
			if err != nil {
				return err
			}
			pts, err := r.Points()
			if err != nil {
				return err
			}
			return emit(cmd, outputJSON, pts, func(w io.Writer) error { return writePoints(w, pts) })
		},
	}
}

// replicaFromArgs finds the replica of vm (name or id) in job in the agent
// datastore of the configuration (--config, or the --dev stack under
// --data-dir).
func replicaFromArgs(cmd *cobra.Command, job, vm string) (*replica.Replica, error) {
	cfg, err := loadConfig(cmd)
	if err != nil {
		return nil, err
	}
	st, err := openDatastore(cfg)
	if err != nil {
		return nil, err
	}
	return st.Find(job, vm)
}
