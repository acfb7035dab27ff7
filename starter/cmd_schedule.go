package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/replicator/replicator/internal/contract"
)

// scheduleID names the schedule of a job.
func scheduleID(job string) string { return contract.ScheduleID(job) }

func newScheduleCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "schedule", Short: "Temporal Schedules of jobs (overlap policy skip)"}
	var cron string
	var interval, catchup time.Duration
	create := &cobra.Command{
		Use:   "create JOB (--cron EXPR | --interval D)",
		Short: "Run JOB on a schedule; a run still going when the next is due makes it skip",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (cron == "") == (interval == 0) {
				return fmt.Errorf("give exactly one of --cron or --interval")
			}
			c, cfg, err := dialTemporal(cmd)
			if err != nil {
				return err
			}
			defer c.Close()
			job := args[0]
			if _, ok := cfg.Job(job); !ok {
				return fmt.Errorf("job %q is not in the configuration", job)
			}
			spec := client.ScheduleSpec{}
			if cron != "" {
				spec.CronExpressions = []string{cron}
			} else {
				spec.Intervals = []client.ScheduleIntervalSpec{{Every: interval}}
			}
			_, err = c.ScheduleClient().Create(cmd.Context(), client.ScheduleOptions{
				ID:            scheduleID(job),
				Spec:          spec,
				Overlap:       enums.SCHEDULE_OVERLAP_POLICY_SKIP,
				CatchupWindow: catchup,
				Action: &client.ScheduleWorkflowAction{
					ID:        job,
					Workflow:  contract.ReplicationWorkflow,
					Args:      []interface{}{contract.ReplicationInput{Job: job}},
					TaskQueue: cfg.Temporal.TaskQueue,
					// The Web UI shows it on every run the schedule starts.
					StaticSummary: "job " + job + " · started by schedule " + scheduleID(job),
				},
			})
			if err != nil {
				return fmt.Errorf("creating schedule %s: %w", scheduleID(job), err)
			}
			type created struct {
				ScheduleID string `json:"scheduleId"`
			}
			return emit(cmd, outputText, created{scheduleID(job)}, func(w io.Writer) error {
				_, err := fmt.Fprintln(w, scheduleID(job))
				return err
			})
		},
	}
	create.Flags().StringVar(&cron, "cron", "", "cron expression, e.g. \"*/15 * * * *\"")
	create.Flags().DurationVar(&interval, "interval", 0, "interval, e.g. 15m")
	create.Flags().DurationVar(&catchup, "catchup-window", 10*time.Minute, "how late a missed run may still start (after an outage)")

	list := &cobra.Command{
		Use: "list", Short: "List the schedules of jobs: id, paused, next runs (--output json for scripts)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := dialTemporal(cmd)
			if err != nil {
				return err
			}
			defer c.Close()
			it, err := c.ScheduleClient().List(cmd.Context(), client.ScheduleListOptions{})
			if err != nil {
				return err
			}
			type entry struct {
				ID     string   `json:"id"`
				Paused bool     `json:"paused"`
				Next   []string `json:"nextRuns"`
			}
			out := []entry{}
			for it.HasNext() {
				s, err := it.Next()
				if err != nil {
					return err
				}
				e := entry{ID: s.ID, Paused: s.Paused, Next: []string{}}
				for _, t := range s.NextActionTimes {
					e.Next = append(e.Next, t.UTC().Format(time.RFC3339))
				}
				out = append(out, e)
			}
			return emit(cmd, outputText, out, func(w io.Writer) error {
				if len(out) == 0 {
					_, err := fmt.Fprintln(w, "no schedules")
					return err
				}
				t := newTable(w, "SCHEDULE", "PAUSED", "NEXT RUNS")
				for _, e := range out {
					t.row(e.ID, fmt.Sprint(e.Paused), strings.Join(e.Next, ", "))
				}
				return t.flush()
			})
		},
	}
	handle := func(use, short string, do func(cmd *cobra.Command, h client.ScheduleHandle) error) *cobra.Command {
		return &cobra.Command{
			Use: use + " JOB", Short: short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, _, err := dialTemporal(cmd)
				if err != nil {
					return err
				}
				defer c.Close()
				h := c.ScheduleClient().GetHandle(cmd.Context(), scheduleID(args[0]))
				if err := do(cmd, h); err != nil {
					return fmt.Errorf("schedule %s: %w", scheduleID(args[0]), err)
				}
				return nil
			},
		}
	}
	pause := handle("pause", "Pause the schedule of JOB", func(cmd *cobra.Command, h client.ScheduleHandle) error {
		return h.Pause(cmd.Context(), client.SchedulePauseOptions{Note: "paused with starter"})
	})
	unpause := handle("unpause", "Unpause the schedule of JOB", func(cmd *cobra.Command, h client.ScheduleHandle) error {
		return h.Unpause(cmd.Context(), client.ScheduleUnpauseOptions{Note: "unpaused with starter"})
	})
	trigger := handle("trigger", "Run JOB now through its schedule (skipped if a run is going)", func(cmd *cobra.Command, h client.ScheduleHandle) error {
		return h.Trigger(cmd.Context(), client.ScheduleTriggerOptions{Overlap: enums.SCHEDULE_OVERLAP_POLICY_SKIP})
	})
	del := handle("delete", "Delete the schedule of JOB", func(cmd *cobra.Command, h client.ScheduleHandle) error {
		return h.Delete(cmd.Context())
	})
	cmd.AddCommand(create, list, pause, unpause, trigger, del)
	return cmd
}
