package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/replica"
)

func init() { commands = append(commands, newPointsCommand) }

func newPointsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "points JOB VM",
		Short: "List the complete restore points of a replica, oldest first, as JSON",
		Long: "List the restore points of the replica of VM (a name or an id) in JOB, oldest\n" +
			"first: id, time, complete, size (bytes the point's own files hold), source\n" +
			"checkpoint, change tracking and disks. A point still being written is not listed.",
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
			return printJSON(cmd, pts)
		},
	}
}

// replicaFromArgs finds the replica of vm (name or id) in job in the agent
// datastore of the configuration (--config, or the --dev stack under
// --data-dir).
func replicaFromArgs(cmd *cobra.Command, job, vm string) (*replica.Replica, error) {
	flag := func(name string) string {
		if f := cmd.Flag(name); f != nil {
			return f.Value.String()
		}
		return ""
	}
	cfg, err := config.Load(config.LoadOptions{File: flag("config"), DataDir: flag("data-dir")})
	if err != nil {
		return nil, err
	}
	if cfg.Agent.Datastore == "" {
		return nil, errors.New("the configuration has no agent.datastore: run this where the target agent keeps its replicas")
	}
	key, err := replica.LoadKeyFile(cfg.Agent.EncryptionKeyFile)
	if err != nil {
		return nil, fmt.Errorf("agent.encryptionKeyFile: %w", err)
	}
	st, err := replica.OpenEncrypted(cfg.Agent.Datastore, false, key)
	if err != nil {
		return nil, fmt.Errorf("datastore (agent.datastore): %w", err)
	}
	return st.Find(job, vm)
}

func printJSON(cmd *cobra.Command, v any) error {
	enc := json.NewEncoder(cmd.OutOrStdout())
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
