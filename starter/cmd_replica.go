package main

import (
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/replicator/replicator/internal/replica"
)

func init() { commands = append(commands, newReplicaCommand) }

func newReplicaCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "replica",
		Short: "Replicas on the target's datastore and their disaster-recovery state",
	}
	cmd.AddCommand(newReplicaListCommand())
	return cmd
}

// replicaRow is one replica as `replica ls --json` prints it.
type replicaRow struct {
	Job   string        `json:"job"`
	VM    string        `json:"vm"`
	VMID  string        `json:"vmId"`
	State replica.State `json:"state"`
	Since *time.Time    `json:"since,omitempty"`
	// Point is the point the replica VM runs on (failover, failback).
	Point       string `json:"point,omitempty"`
	NewestPoint string `json:"newestPoint"`
	Points      int    `json:"points"`
	ReplicaVM   string `json:"replicaVm"`
	Host        string `json:"host,omitempty"`
	Error       string `json:"error,omitempty"`
}

func newReplicaListCommand() *cobra.Command {
	var asJSON bool
	var output string
	cmd := &cobra.Command{
		Use:     "ls [--json]",
		Aliases: []string{"list"},
		Short:   "List every replica: job, VM, state, newest restore point, replica VM",
		Long: "List every replica of the datastore (agent.datastore of the configuration):\n" +
			"its job and VM, its state (ready, failover, failback, permanent) and since\n" +
			"when, the point a failed-over replica VM runs on, the newest restore point and\n" +
			"the replica VM registered on the target's host. A replica whose metadata\n" +
			"cannot be read is listed with the error.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := datastoreFromConfig(cmd)
			if err != nil {
				return err
			}
			refs, err := st.Replicas()
			if err != nil {
				return err
			}
			rows := []replicaRow{}
			for _, ref := range refs {
				rows = append(rows, describeReplica(st, ref))
			}
			if asJSON || output == "json" {
				return printJSON(cmd, rows)
			}
			if output != "" && output != "text" {
				return fmt.Errorf("replica ls: --output %q: text or json", output)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "JOB\tVM\tSTATE\tSINCE\tNEWEST POINT\tREPLICA VM")
			for _, r := range rows {
				since := "-"
				if r.Since != nil {
					since = r.Since.Local().Format("2006-01-02 15:04:05")
				}
				state := string(r.State)
				if r.Point != "" {
					state += " (" + r.Point + ")"
				}
				if r.Error != "" {
					state = "unreadable: " + r.Error
				}
				vm := r.ReplicaVM
				if vm == "" {
					vm = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Job, r.VM, state, since, orDash(r.NewestPoint), vm)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (alias of --output json)")
	cmd.Flags().StringVar(&output, "output", "text", "text or json")
	return cmd
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func describeReplica(st *replica.Store, ref replica.ReplicaRef) replicaRow {
	row := replicaRow{Job: ref.Job, VM: ref.VMName, VMID: ref.VMID}
	r, err := st.Replica(ref.Job, ref.VMID)
	if err == nil {
		var l replica.Lifecycle
		if l, err = r.Lifecycle(); err == nil {
			row.State, row.Point, row.ReplicaVM, row.Host = l.State, l.Point, l.ReplicaVM, l.Host
			if !l.Since.IsZero() {
				s := l.Since
				row.Since = &s
			}
			var pts []replica.Point
			if pts, err = r.Points(); err == nil {
				row.Points = len(pts)
				if n := len(pts); n > 0 {
					row.NewestPoint = pts[n-1].ID
				}
			}
		}
	}
	if err != nil {
		row.Error = err.Error()
	}
	return row
}

// datastoreFromConfig opens the agent datastore of the configuration.
func datastoreFromConfig(cmd *cobra.Command) (*replica.Store, error) {
	cfg, err := loadConfig(cmd)
	if err != nil {
		return nil, err
	}
	if cfg.Agent.Datastore == "" {
		return nil, errors.New("the configuration has no agent.datastore: run this where the target agent keeps its replicas")
	}
	// An encrypted datastore opens only with its key, even to list.
	key, err := replica.LoadKeyFile(cfg.Agent.EncryptionKeyFile)
	if err != nil {
		return nil, fmt.Errorf("agent.encryptionKeyFile: %w", err)
	}
	st, err := replica.OpenEncrypted(cfg.Agent.Datastore, false, key)
	if err != nil {
		return nil, fmt.Errorf("datastore (agent.datastore): %w", err)
	}
	return st, nil
}
