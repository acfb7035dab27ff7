package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/replica"
)

func newReplicaCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "replica",
		Short: "Replicas on the target's datastore and their disaster-recovery state",
	}
	cmd.AddCommand(newReplicaListCommand())
	return cmd
}

// replicaRow is one replica as `replica ls --output json` prints it.
type replicaRow struct {
	Job   string        `json:"job"`
	VM    string        `json:"vm"`
	VMID  string        `json:"vmId"`
	State replica.State `json:"state"`
	Since *time.Time    `json:"since,omitempty"`
	// Point is the point the replica VM runs on (failover, failback).
	Point       string `json:"point,omitempty"`
	NewestPoint string `json:"newestPoint"`
	// NewestPointTime is when the source froze the newest point's data (its
	// checkpoint); LagSeconds is that point's age now: the recovery point
	// lag, what a failover now would lose. Both absent without a point.
	NewestPointTime *time.Time `json:"newestPointTime,omitempty"`
	LagSeconds      *float64   `json:"lagSeconds,omitempty"`
	// RPOSeconds is the job's rpo (absent when the job has none or is no
	// longer configured); RPOExceeded says a ready replica's lag passed it.
	// A replica in failover, failback or permanent is not replicated, so
	// its lag is shown but never counts as a breach.
	RPOSeconds  float64 `json:"rpoSeconds,omitempty"`
	RPOExceeded bool    `json:"rpoExceeded"`
	Points      int     `json:"points"`
	ReplicaVM   string  `json:"replicaVm"`
	Host        string  `json:"host,omitempty"`
	Error       string  `json:"error,omitempty"`
}

func newReplicaListCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "ls [--output text|json]",
		Aliases: []string{"list"},
		Short:   "List every replica: job, VM, state, newest restore point and its lag, replica VM",
		Long: "List every replica of the datastore (agent.datastore of the configuration):\n" +
			"its job and VM, its state (ready, failover, failback, permanent) and since\n" +
			"when, the point a failed-over replica VM runs on, the newest restore point,\n" +
			"its lag (the age of the newest point's checkpoint: what a failover now would\n" +
			"lose) against the job's rpo, marked when a ready replica is past it, and the\n" +
			"replica VM registered on the target's host. A replica whose metadata cannot\n" +
			"be read is listed with the error. --output json (or --json) prints a list of\n" +
			"{job, vm, vmId, state, since, point, newestPoint, newestPointTime,\n" +
			"lagSeconds, rpoSeconds, rpoExceeded, points, replicaVm, host, error}.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			st, err := openDatastore(cfg)
			if err != nil {
				return err
			}
			refs, err := st.Replicas()
			if err != nil {
				return err
			}
			now := time.Now()
			rows := []replicaRow{}
			for _, ref := range refs {
				var rpo time.Duration
				if job, ok := cfg.Job(ref.Job); ok {
					rpo = job.RPO
				}
				rows = append(rows, describeReplica(st, ref, now, rpo))
			}
			return emit(cmd, outputText, rows, func(w io.Writer) error { return writeReplicas(w, rows) })
		},
	}
	return cmd
}

// writeReplicas prints the replicas as a table for people.
func writeReplicas(w io.Writer, rows []replicaRow) error {
	t := newTable(w, "JOB", "VM", "STATE", "SINCE", "NEWEST POINT", "LAG", "RPO", "REPLICA VM")
	for _, r := range rows {
		since := "-"
		if r.Since != nil {
			since = localTime(*r.Since)
		}
		state := string(r.State)
		if r.Point != "" {
			state += " (" + r.Point + ")"
		}
		if r.Error != "" {
			state = "unreadable: " + r.Error
		}
		lag, rpo := "-", "-"
		if r.LagSeconds != nil {
			lag = lagText(*r.LagSeconds)
			if r.RPOExceeded {
				lag += " PAST RPO"
			}
		}
		if r.RPOSeconds > 0 {
			rpo = (time.Duration(r.RPOSeconds * float64(time.Second))).String()
		}
		t.row(r.Job, r.VM, state, since, r.NewestPoint, lag, rpo, r.ReplicaVM)
	}
	return t.flush()
}

// lagText prints a lag for people: seconds under a minute, then coarser.
func lagText(seconds float64) string {
	d := time.Duration(seconds * float64(time.Second))
	switch {
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	default:
		return d.Round(time.Minute).String()
	}
}

// describeReplica reads one replica's state and points; its lag is the
// newest point's age at now, held against rpo (0: the job has none).
func describeReplica(st *replica.Store, ref replica.ReplicaRef, now time.Time, rpo time.Duration) replicaRow {
	row := replicaRow{Job: ref.Job, VM: ref.VMName, VMID: ref.VMID, RPOSeconds: rpo.Seconds()}
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
					newest := pts[n-1]
					row.NewestPoint = newest.ID
					if !newest.Time.IsZero() {
						at := newest.Time
						lag := max(now.Sub(at), 0).Seconds()
						row.NewestPointTime, row.LagSeconds = &at, &lag
						ready := l.State == replica.StateReady || l.State == ""
						row.RPOExceeded = ready && rpo > 0 && now.Sub(at) > rpo
					}
				}
			}
		}
	}
	if err != nil {
		row.Error = err.Error()
	}
	return row
}

// openDatastore opens the agent datastore of the configuration.
func openDatastore(cfg *config.Config) (*replica.Store, error) {
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
