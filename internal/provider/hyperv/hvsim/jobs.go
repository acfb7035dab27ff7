package hvsim

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/replicator/replicator/internal/atomicfile"
	"github.com/replicator/replicator/internal/provider"
	"github.com/replicator/replicator/internal/provider/hyperv"
)

// Job states of Msvm_ConcreteJob (CIM_ConcreteJob.JobState; 32768 is
// Hyper-V's "completed with warnings", Microsoft's "common utilities for the
// virtualization samples").
const (
	jobRunning               = 4
	jobCompleted             = 7
	jobTerminated            = 8
	jobException             = 10
	jobCompletedWithWarnings = 32768
)

// jobTimeBeforeRemoval is how long an ended job stays visible
// (CIM_Job.TimeBeforeRemoval, whose default is 5 minutes).
const jobTimeBeforeRemoval = 5 * time.Minute

// jobRecord is one job, in .hvsim/jobs/<id>.json.
type jobRecord struct {
	ID      string    `json:"id"`
	Method  string    `json:"method"`
	VMID    string    `json:"vmId"`
	Target  string    `json:"target,omitempty"` // the checkpoint or reference point acted on
	Level   int       `json:"consistencyLevel,omitempty"`
	Started time.Time `json:"started"`
	Due     time.Time `json:"due"`
	Warn    bool      `json:"warn,omitempty"`
	State   int       `json:"state"`
	Ended   time.Time `json:"ended,omitzero"`
	// ErrorCode and ErrorDescription of a failed job; the warning of one
	// completed with warnings.
	ErrorCode        uint32 `json:"errorCode,omitempty"`
	ErrorDescription string `json:"errorDescription,omitempty"`
	// ResultClass and ResultID name the element the job made
	// (Msvm_AffectedJobElement).
	ResultClass string `json:"resultClass,omitempty"`
	ResultID    string `json:"resultId,omitempty"`
}

func (s *Sim) jobsDir() string { return filepath.Join(s.dir, stateDir, "jobs") }

func (s *Sim) jobPath(id string) string { return s.path(classJob, "InstanceID", id) }

// startJob records a job that ends after the configured delay. The caller
// holds the lock.
func (s *Sim) startJob(j jobRecord) (string, error) {
	j.ID = newGUID()
	j.Started = s.now().UTC()
	j.Due = j.Started.Add(s.opts.JobDelay)
	j.Warn = s.opts.JobWarnings
	j.State = jobRunning
	if err := s.writeJob(j); err != nil {
		return "", err
	}
	return s.jobPath(j.ID), nil
}

func (s *Sim) writeJob(j jobRecord) error {
	b, err := json.Marshal(j)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(s.jobsDir(), j.ID+".json"), b, 0o644)
}

func (s *Sim) readJobs() ([]jobRecord, error) {
	entries, err := os.ReadDir(s.jobsDir())
	if err != nil {
		return nil, s.unreachable(err)
	}
	var jobs []jobRecord
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.jobsDir(), e.Name()))
		if err != nil {
			if isNotExist(err) {
				continue
			}
			return nil, s.unreachable(err)
		}
		var j jobRecord
		if err := json.Unmarshal(b, &j); err != nil {
			return nil, fmt.Errorf("hyperv simulator: job %s: %w", e.Name(), err)
		}
		jobs = append(jobs, j)
	}
	return jobs, nil
}

// advanceJobs ends every running job whose time has come, doing its work,
// and forgets ended jobs past their time before removal. The caller holds
// the lock. Work is done when the job ends, not when it starts: until then
// nothing of it is visible, as on a host.
func (s *Sim) advanceJobs(ctx context.Context) error {
	jobs, err := s.readJobs()
	if err != nil {
		return err
	}
	now := s.now()
	for _, j := range jobs {
		if j.State != jobRunning {
			if !j.Ended.IsZero() && now.Sub(j.Ended) > jobTimeBeforeRemoval {
				os.Remove(filepath.Join(s.jobsDir(), j.ID+".json"))
			}
			continue
		}
		if now.Before(j.Due) {
			continue
		}
		s.finish(ctx, &j)
		j.Ended = now.UTC()
		if err := s.writeJob(j); err != nil {
			return err
		}
	}
	return nil
}

// finish does a job's work and sets how it ended.
func (s *Sim) finish(ctx context.Context, j *jobRecord) {
	// A job runs to its end on the host whatever the caller does.
	ctx = context.WithoutCancel(ctx)
	var err error
	switch j.Method {
	case "CreateSnapshot":
		if j.Level == 1 && s.attributes(j.VMID).NoGuestFreeze {
			err = errors.New("the guest could not be quiesced: the backup (volume snapshot) integration service is not available")
			break
		}
		var vm provider.VM
		if vm, err = s.findVM(ctx, j.VMID); err != nil {
			break
		}
		c := provider.CrashConsistent
		if j.Level == 1 {
			c = provider.ApplicationConsistent
		}
		// Hyper-V names a recovery checkpoint "<VM> - Backup - (<time>)".
		var cp provider.Checkpoint
		cp, err = s.lab.CreateCheckpoint(ctx, j.VMID, provider.CheckpointOptions{Name: fmt.Sprintf("%s - Backup - (%s)", vm.Name, j.Started.Format("02.01.2006 - 15:04:05")), Consistency: c})
		j.ResultClass, j.ResultID = classSettingData, cp.ID
	case "DestroySnapshot":
		err = s.lab.ReleaseCheckpoint(ctx, j.VMID, j.Target)
	case "ConvertToReferencePoint":
		var rp string
		rp, err = s.lab.ConvertToReferencePoint(ctx, j.VMID, j.Target, "")
		j.ResultClass, j.ResultID = classReferencePoint, rp
	case "DestroyReferencePoint":
		err = s.lab.DestroyReferencePoint(ctx, j.VMID, j.Target)
	default:
		err = fmt.Errorf("no such job kind %q", j.Method)
	}
	switch {
	case err != nil:
		j.State, j.ErrorCode, j.ErrorDescription = jobException, 32768, fmt.Sprintf("'%s' failed: %v", j.Method, err)
		j.ResultClass, j.ResultID = "", ""
	case j.Warn:
		j.State, j.ErrorDescription = jobCompletedWithWarnings, j.Method+" completed with warnings (simulated host: jobWarnings)"
	default:
		j.State = jobCompleted
	}
}

// jobObjects lists the jobs as Msvm_ConcreteJob.
func (s *Sim) jobObjects() ([]simObject, error) {
	jobs, err := s.readJobs()
	if err != nil {
		return nil, err
	}
	now := s.now()
	var out []simObject
	for _, j := range jobs {
		pct := int32(100)
		if j.State == jobRunning {
			pct = 0
			if total := j.Due.Sub(j.Started); total > 0 {
				pct = int32(min(99, 100*now.Sub(j.Started)/total))
			}
		}
		p := s.jobPath(j.ID)
		out = append(out, simObject{obj: hyperv.Object{Path: p, Class: classJob, Props: map[string]any{
			"InstanceID": j.ID, "ElementName": j.Method, "JobState": int32(j.State), "PercentComplete": pct,
			"ErrorCode": int32(j.ErrorCode), "ErrorDescription": j.ErrorDescription, "StartTime": cimDateTime(j.Started),
		}}})
	}
	return out, nil
}

// affectedBy returns the path of the element a job made
// (Msvm_AffectedJobElement), if the job is one and made one.
func (s *Sim) affectedBy(jobPath string) (string, bool) {
	jobs, err := s.readJobs()
	if err != nil {
		return "", false
	}
	for _, j := range jobs {
		if strings.EqualFold(s.jobPath(j.ID), jobPath) && j.ResultID != "" {
			return s.resultPath(j), true
		}
	}
	return "", false
}

func (s *Sim) resultPath(j jobRecord) string {
	if j.ResultClass == classReferencePoint {
		return s.path(classReferencePoint, "InstanceID", "Microsoft:"+j.VMID+":"+j.ResultID)
	}
	return s.path(classSettingData, "InstanceID", "Microsoft:"+j.ResultID)
}

func newGUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return strings.ToUpper(fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]))
}
