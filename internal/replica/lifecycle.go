package replica

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/replicator/replicator/internal/atomicfile"
)

// State is where a replica is in its disaster-recovery lifecycle.
type State string

// States of a replica. Replication writes only a ready replica; the others
// belong to a replica VM that runs (or ran) on one of its points.
const (
	// StateReady: restore points are written by replication runs; the
	// replica VM, if any, is registered powered off on the newest point.
	StateReady State = "ready"
	// StateFailover: the replica VM runs on differencing children of a
	// point; replication skips the VM.
	StateFailover State = "failover"
	// StateFailback: what the replica VM wrote went back to the source (or
	// a new VM); waiting for commit (back to ready) or undo (back to failover).
	StateFailback State = "failback"
	// StatePermanent: the replica VM became a standalone VM; the replica
	// takes no more restore points.
	StatePermanent State = "permanent"
)

// maxHistory bounds the transitions a replica keeps in its metadata.
const maxHistory = 64

// Lifecycle is a replica's state and what goes with it, kept in replica.json
// so that it changes atomically with everything else there.
type Lifecycle struct {
	State State `json:"state"`
	// Since is when the replica entered State.
	Since time.Time `json:"since"`
	// Point is the restore point the replica VM runs on (failover, failback).
	Point string `json:"point,omitempty"`
	// Operation is the workflow that made the last change: a retried
	// activity of the same operation finds its own change done.
	Operation string `json:"operation,omitempty"`
	// ReplicaVM is the replica VM's name on the target's host (Host); VMPoint
	// the restore point its disks were last registered on.
	ReplicaVM string `json:"replicaVm,omitempty"`
	Host      string `json:"host,omitempty"`
	VMPoint   string `json:"vmPoint,omitempty"`
	// Failback is what a failback sent, kept until commit or undo.
	Failback *FailbackRecord `json:"failback,omitempty"`
	// History lists the latest transitions, oldest first.
	History []Transition `json:"history,omitempty"`
}

// FailbackRecord says where a failback went.
type FailbackRecord struct {
	Host string `json:"host"`
	VM   string `json:"vm"`
	// New is true when the failback made a new VM instead of writing the original.
	New bool `json:"new,omitempty"`
}

// Transition is one change of state.
type Transition struct {
	From      State     `json:"from"`
	To        State     `json:"to"`
	Point     string    `json:"point,omitempty"`
	Time      time.Time `json:"time"`
	Operation string    `json:"operation,omitempty"`
}

// StateError is an operation refused because of the replica's state.
type StateError struct {
	Job, VM   string
	State     State
	Since     time.Time
	Operation string // what was refused, e.g. "failover"
	Want      []State
}

func (e *StateError) Error() string {
	since := ""
	if !e.Since.IsZero() {
		since = " since " + e.Since.UTC().Format(time.RFC3339)
	}
	if e.Operation == "replication" && e.State == StatePermanent {
		return fmt.Sprintf("skipped: the replica of %s in job %s was failed over permanently%s; the replica VM is a standalone VM now (remove %s from the job, or its replica folder to replicate it anew)",
			e.VM, e.Job, since, e.VM)
	}
	if e.Operation == "replication" {
		return fmt.Sprintf("skipped: the replica of %s in job %s is in state %s%s; replication resumes after `failover undo` or `failback commit`",
			e.VM, e.Job, e.State, since)
	}
	return fmt.Sprintf("%s of %s in job %s refused: the replica is in state %s%s (%s needs %s)",
		e.Operation, e.VM, e.Job, e.State, since, e.Operation, joinStates(e.Want))
}

// Is makes errors.Is(err, ErrWrongState) true.
func (e *StateError) Is(target error) bool { return target == ErrWrongState }

// ErrWrongState is matched by every StateError.
var ErrWrongState = errors.New("replica in the wrong state")

func joinStates(s []State) string {
	out := ""
	for i, x := range s {
		switch {
		case i == 0:
		case i == len(s)-1:
			out += " or "
		default:
			out += ", "
		}
		out += string(x)
	}
	return out
}

func (m *metadata) lifecycle() Lifecycle {
	if m.Lifecycle == nil {
		return Lifecycle{State: StateReady}
	}
	l := *m.Lifecycle
	l.History = append([]Transition(nil), l.History...)
	if l.Failback != nil {
		f := *l.Failback
		l.Failback = &f
	}
	return l
}

func (s State) valid() bool {
	switch s {
	case StateReady, StateFailover, StateFailback, StatePermanent:
		return true
	}
	return false
}

// Lifecycle returns the replica's state as its metadata records it.
func (r *Replica) Lifecycle() (Lifecycle, error) {
	_, m, err := r.load()
	if err != nil {
		return Lifecycle{}, err
	}
	return m.lifecycle(), nil
}

// Info returns the VM as the writer's metadata records it.
func (w *Writer) Info() (VMInfo, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.meta == nil {
		return VMInfo{}, fmt.Errorf("replica %s: %w", w.l, ErrNoReplica)
	}
	return w.meta.VM, nil
}

// Lifecycle returns the state as the writer holds it.
func (w *Writer) Lifecycle() (Lifecycle, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.hasReplica(); err != nil {
		return Lifecycle{}, err
	}
	return w.meta.lifecycle(), nil
}

// SetLifecycle replaces the lifecycle record in one atomic metadata write.
// A change of state is added to the history with now as its time. The
// point, when set, must be a listed restore point.
func (w *Writer) SetLifecycle(l Lifecycle, now time.Time) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.hasReplica(); err != nil {
		return err
	}
	if !l.State.valid() {
		return fmt.Errorf("replica %s: state %q is not one of ready, failover, failback, permanent", w.l, l.State)
	}
	if l.Point != "" {
		if _, p := w.meta.point(l.Point); p == nil {
			return fmt.Errorf("replica %s: restore point %q: %w", w.l, l.Point, ErrNoPoint)
		}
	}
	old := w.meta.lifecycle()
	if old.State != l.State || old.Point != l.Point {
		l.Since = now.UTC()
		l.History = append(old.History, Transition{From: old.State, To: l.State, Point: l.Point, Time: now.UTC(), Operation: l.Operation})
		if n := len(l.History); n > maxHistory {
			l.History = l.History[n-maxHistory:]
		}
	} else {
		l.Since, l.History = old.Since, old.History
	}
	return w.update(func(m *metadata) error { m.Lifecycle = &l; return nil })
}

// PointConfig returns the VM configuration recorded with a point ("" =
// newest): the provider's JSON, or nil when the source did not report one.
func (r *Replica) PointConfig(pointID string) (json.RawMessage, error) {
	_, _, p, err := r.findPoint(pointID)
	if err != nil {
		return nil, err
	}
	return p.Config, nil
}

// RemovePoints deletes every restore point of a replica failed over for
// good: the metadata first lists no point (one atomic write), then the
// points' files and digests are removed. The metadata stays, with its
// state, so that replication keeps refusing the replica and `replica ls`
// still shows it. Calling it again removes what a crash left.
func (w *Writer) RemovePoints() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.hasReplica(); err != nil {
		return err
	}
	if l := w.meta.lifecycle(); l.State != StatePermanent {
		return &StateError{Job: w.r.job, VM: w.meta.VM.Name, State: l.State, Since: l.Since, Operation: "removing restore points", Want: []State{StatePermanent}}
	}
	if w.ses != nil {
		w.ses.done = true
		w.ses = nil
	}
	if err := w.update(func(m *metadata) error {
		m.Points, m.Session, m.Merge = nil, nil, nil
		return nil
	}); err != nil {
		return err
	}
	dir := string(w.l)
	for _, p := range []string{filepath.Join(dir, "disks"), filepath.Join(dir, "digests"), filepath.Join(dir, referenceFile)} {
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("remove restore points of %s: %w", dir, err)
		}
	}
	return atomicfile.SyncDir(dir)
}
