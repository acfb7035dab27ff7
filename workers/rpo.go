package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/metrics"
	"github.com/replicator/replicator/internal/replica"
)

// rpoNote marks, in a schedule's note, a schedule the jobs role keeps for a
// job's rpo: only those are changed or removed when the configuration
// changes; a schedule made with `starter schedule create` is left alone
// unless the job gains an rpo, which then takes it over.
const rpoNote = "kept by the jobs role for rpo "

// rpoInterval is how often a job with rpo runs. A VM's newest restore
// point is at its oldest just before the next run commits: one interval
// plus the run's length after its checkpoint. Half the RPO leaves the other
// half for the run.
func rpoInterval(rpo time.Duration) time.Duration { return rpo / 2 }

// reconcileSchedules makes the Temporal Schedules of jobs match their rpo:
// created or updated for every job with one, removed for jobs that no longer
// have one (or are gone). A run still going when the next is due makes the
// schedule hold that one action (overlap buffer one) and start it as soon as
// the running one ends: runs never overlap, and a run that outlasts the
// interval is followed at once rather than at the next tick, which skip
// would do (up to a whole interval more of lag).
func reconcileSchedules(ctx context.Context, c client.Client, cfg *config.Config, logger *slog.Logger) error {
	sc := c.ScheduleClient()
	want := map[string]*config.Job{}
	for i := range cfg.Jobs {
		if j := &cfg.Jobs[i]; j.RPO > 0 {
			want[contract.ScheduleID(j.Name)] = j
		}
	}
	for id, j := range want {
		if err := keepSchedule(ctx, sc, cfg.Temporal.TaskQueue, id, j, logger); err != nil {
			return fmt.Errorf("jobs[%s].rpo: schedule %s: %w", j.Name, id, err)
		}
	}
	it, err := sc.List(ctx, client.ScheduleListOptions{})
	if err != nil {
		return fmt.Errorf("listing schedules: %w", err)
	}
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			return fmt.Errorf("listing schedules: %w", err)
		}
		if want[e.ID] != nil || !strings.HasPrefix(e.ID, contract.ScheduleID("")) {
			continue
		}
		h := sc.GetHandle(ctx, e.ID)
		d, err := h.Describe(ctx)
		if err != nil {
			return fmt.Errorf("schedule %s: %w", e.ID, err)
		}
		if d.Schedule.State == nil || !strings.HasPrefix(d.Schedule.State.Note, rpoNote) {
			continue // made by an operator
		}
		if err := h.Delete(ctx); err != nil {
			return fmt.Errorf("removing schedule %s (its job has no rpo now): %w", e.ID, err)
		}
		logger.Info("removed the schedule of a job that has no rpo now", "schedule", e.ID)
	}
	return nil
}

func keepSchedule(ctx context.Context, sc client.ScheduleClient, queue, id string, j *config.Job, logger *slog.Logger) error {
	every := rpoInterval(j.RPO)
	note := rpoNote + j.RPO.String()
	action := &client.ScheduleWorkflowAction{
		ID:            j.Name,
		Workflow:      contract.ReplicationWorkflow,
		Args:          []interface{}{contract.ReplicationInput{Job: j.Name}},
		TaskQueue:     queue,
		StaticSummary: "job " + j.Name + " · started by schedule " + id + " (rpo " + j.RPO.String() + ")",
	}
	spec := client.ScheduleSpec{Intervals: []client.ScheduleIntervalSpec{{Every: every}}}
	_, err := sc.Create(ctx, client.ScheduleOptions{
		ID: id, Spec: spec, Action: action, Note: note,
		Overlap: enums.SCHEDULE_OVERLAP_POLICY_BUFFER_ONE,
		// After an outage one run starts at once, not one per missed interval.
		CatchupWindow: max(j.RPO, time.Minute),
	})
	if err == nil {
		logger.Info("created the schedule that keeps the job's rpo", "schedule", id, "rpo", j.RPO, "every", every)
		return nil
	}
	var exists *serviceerror.AlreadyExists
	if !errors.Is(err, temporal.ErrScheduleAlreadyRunning) && !errors.As(err, &exists) {
		return err
	}
	return sc.GetHandle(ctx, id).Update(ctx, client.ScheduleUpdateOptions{
		DoUpdate: func(in client.ScheduleUpdateInput) (*client.ScheduleUpdate, error) {
			s := in.Description.Schedule
			s.Spec = &spec
			s.Action = action
			if s.Policy == nil {
				s.Policy = &client.SchedulePolicies{}
			}
			s.Policy.Overlap = enums.SCHEDULE_OVERLAP_POLICY_BUFFER_ONE
			s.Policy.CatchupWindow = max(j.RPO, time.Minute)
			if s.State == nil {
				s.State = &client.ScheduleState{}
			}
			if !strings.HasPrefix(s.State.Note, rpoNote) {
				logger.Warn("the job's rpo takes over its schedule", "schedule", id, "rpo", j.RPO)
			}
			// An operator's pause stays.
			s.State.Note = note
			logger.Info("updated the schedule that keeps the job's rpo", "schedule", id, "rpo", j.RPO, "every", every)
			return &client.ScheduleUpdate{Schedule: &s}, nil
		},
	})
}

// replicaAges lists the replicas of the store with their newest restore
// point's time and their job's rpo (from the configuration as it is now).
func replicaAges(store *replica.Store, load func() (*config.Config, error)) ([]metrics.Replica, error) {
	refs, err := store.Replicas()
	if err != nil {
		return nil, err
	}
	rpo := map[string]time.Duration{}
	if cfg, err := load(); err == nil {
		for _, j := range cfg.Jobs {
			rpo[j.Name] = j.RPO
		}
	}
	out := make([]metrics.Replica, 0, len(refs))
	for _, ref := range refs {
		rep := metrics.Replica{Job: ref.Job, VM: ref.VMName, RPO: rpo[ref.Job]}
		if rep.VM == "" {
			rep.VM = ref.VMID
		}
		r, err := store.Replica(ref.Job, ref.VMID)
		if err != nil {
			return nil, err
		}
		if pts, err := r.Points(); err == nil && len(pts) > 0 {
			rep.Newest = pts[len(pts)-1].Time
		}
		out = append(out, rep)
	}
	return out, nil
}
