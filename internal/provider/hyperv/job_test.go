package hyperv

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/replicator/replicator/internal/provider"
)

func TestWaitJobOutcomes(t *testing.T) {
	const id = "0C1D2E3F-4A5B-4C6D-8E7F-9A0B1C2D3E4F"
	for _, tc := range []struct {
		name      string
		states    []object
		kind      methodKind
		wantErr   string // "" for success
		retryable bool
		sentinel  error
	}{
		{"completed", []object{jobObject(id, jobNew, 0, 0, ""), jobObject(id, jobRunning, 50, 0, ""), jobObject(id, jobCompleted, 100, 0, "")}, kindGeneric, "", false, nil},
		{"terminated", []object{jobObject(id, jobRunning, 10, 0, ""), jobObject(id, jobTerminated, 10, 0, "The operation was cancelled.")}, kindGeneric, "was terminated", true, nil},
		{"killed", []object{jobObject(id, jobKilled, 10, 0, "")}, kindGeneric, "was killed", true, nil},
		{"exception access denied", []object{jobObject(id, jobException, 0, 32769, "Access denied.")}, kindGeneric, "access denied: Access denied.", false, nil},
		{"exception out of memory", []object{jobObject(id, jobException, 0, 32778, "Not enough memory in the system to start the virtual machine.")}, kindGeneric, "out of memory", true, nil},
		{"exception without code", []object{jobObject(id, jobException, 0, 0, "Failed to create checkpoint.")}, kindGeneric, "code 32768: failed: Failed to create checkpoint.", true, nil},
		{"exception file not found while reading changes", []object{jobObject(id, jobException, 0, 32779, "The RCT file is missing.")}, kindChanges, "file not found", false, provider.ErrNoChangeTracking},
		{"exception invalid parameter on a checkpoint", []object{jobObject(id, jobException, 0, 4, "")}, kindCheckpoint, "code 4: invalid parameter", false, provider.ErrCheckpointNotFound},
		{"exception invalid state of the snapshot service", []object{jobObject(id, jobException, 0, 5, "The VM is being backed up.")}, kindGeneric, "code 5: invalid state: The VM is being backed up.", true, nil},
		{"exception not supported by the snapshot service", []object{jobObject(id, jobException, 0, 1, "")}, kindGeneric, "code 1: not supported", false, nil},
		{"completed with warnings", []object{jobObject(id, jobRunning, 50, 0, ""), jobObject(id, jobCompletedWithWarnings, 100, 0, "The guest could not be quiesced.")}, kindGeneric, "", false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			f.jobs[jobPath(id)] = tc.states
			p, _ := testProvider(f, "", nil)
			warning, err := p.waitJob(context.Background(), "CreateSnapshot of VM web01", "CreateSnapshot", jobPath(id), tc.kind)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				last := tc.states[len(tc.states)-1]
				if d := last.str("ErrorDescription"); d != "" && !strings.Contains(warning, d) {
					t.Errorf("warning = %q, want the job's description %q", warning, d)
				}
				if st, _ := last.int("JobState"); st == jobCompleted && warning != "" {
					t.Errorf("warning %q from a job completed without warnings", warning)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "CreateSnapshot of VM web01") {
				t.Fatalf("err = %v, want it to name the operation and %q", err, tc.wantErr)
			}
			if Retryable(err) != tc.retryable {
				t.Errorf("retryable = %v, want %v", Retryable(err), tc.retryable)
			}
			if tc.sentinel != nil && !errors.Is(err, tc.sentinel) {
				t.Errorf("err does not wrap %v", tc.sentinel)
			}
		})
	}
}

func TestWaitJobTimeoutTerminatesJob(t *testing.T) {
	const id = "0C1D2E3F-4A5B-4C6D-8E7F-9A0B1C2D3E4F"
	f := newFake(t)
	f.jobs[jobPath(id)] = []object{jobObject(id, jobRunning, 35, 0, "")} // stays running
	f.methods["RequestStateChange"] = func(invocation) (result, error) { return result{ReturnValue: 0}, nil }
	p, clk := testProvider(f, "", nil)
	_, err := p.waitJob(context.Background(), "CreateSnapshot of VM web01", "CreateSnapshot", jobPath(id), kindGeneric)
	var he *Error
	if !errors.As(err, &he) || !he.Retryable() || !strings.Contains(err.Error(), "still running at 35%") {
		t.Fatalf("err = %v", err)
	}
	var total time.Duration
	for _, d := range clk.slept {
		if d > 8*time.Second {
			t.Errorf("slept %v, more than the maximum poll interval", d)
		}
		total += d
	}
	if total < time.Minute {
		t.Errorf("gave up after %v, before the 1m job timeout", total)
	}
	calls := f.callsOf("RequestStateChange")
	if len(calls) != 1 || calls[0].Path != jobPath(id) || calls[0].In["RequestedState"] != uint16(4) {
		t.Fatalf("RequestStateChange calls %+v, want one asking the job to terminate", calls)
	}
}

func TestWaitJobCancelled(t *testing.T) {
	const id = "0C1D2E3F-4A5B-4C6D-8E7F-9A0B1C2D3E4F"
	f := newFake(t)
	f.jobs[jobPath(id)] = []object{jobObject(id, jobRunning, 35, 0, "")}
	p, _ := testProvider(f, "", nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.waitJob(ctx, "op", "CreateSnapshot", jobPath(id), kindGeneric); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

func TestWaitJobVanished(t *testing.T) {
	f := newFake(t)
	p, _ := testProvider(f, "", nil)
	_, err := p.waitJob(context.Background(), "op", "CreateSnapshot", jobPath("gone"), kindGeneric)
	if err == nil || !strings.Contains(err.Error(), "poll job") {
		t.Fatalf("err = %v", err)
	}
}

func TestClassifyReturnTable(t *testing.T) {
	for _, tc := range []struct {
		code      uint32
		kind      methodKind
		meaning   string
		retryable bool
		sentinel  error
	}{
		{32768, kindGeneric, "failed", true, nil},
		{32769, kindGeneric, "access denied", false, nil},
		{32770, kindGeneric, "not supported", false, nil},
		{32770, kindChanges, "not supported", false, provider.ErrNoChangeTracking},
		{32771, kindGeneric, "status is unknown", true, nil},
		{32772, kindGeneric, "timeout", true, nil},
		{32773, kindGeneric, "invalid parameter", false, nil},
		{32773, kindChanges, "invalid parameter", false, provider.ErrNoChangeTracking},
		{32774, kindGeneric, "system is in use", true, nil},
		{32775, kindGeneric, "invalid state for this operation", true, nil},
		{32776, kindGeneric, "incorrect data type", false, nil},
		{32777, kindGeneric, "system is not available", true, nil},
		{32778, kindGeneric, "out of memory", true, nil},
		{32779, kindGeneric, "file not found", false, nil},
		{32779, kindChanges, "file not found", false, provider.ErrNoChangeTracking},
		{32779, kindCheckpoint, "file not found", false, provider.ErrCheckpointNotFound},
		{12345, kindGeneric, "unknown return value", true, nil},
	} {
		e := classifyReturn("GetVirtualDiskChanges of disk d0", "GetVirtualDiskChanges", tc.code, tc.kind, "")
		msg := e.Error()
		if !strings.Contains(msg, tc.meaning) || !strings.Contains(msg, "GetVirtualDiskChanges of disk d0") {
			t.Errorf("%d: message %q lacks %q or the operation", tc.code, msg, tc.meaning)
		}
		if e.Retryable() != tc.retryable || Retryable(e) != tc.retryable {
			t.Errorf("%d (kind %d): retryable %v, want %v", tc.code, tc.kind, e.Retryable(), tc.retryable)
		}
		wantWord := "(not retryable)"
		if tc.retryable {
			wantWord = "(retryable)"
		}
		if !strings.HasSuffix(msg, wantWord) {
			t.Errorf("%d: message %q does not end with %s", tc.code, msg, wantWord)
		}
		if tc.sentinel != nil && !errors.Is(e, tc.sentinel) {
			t.Errorf("%d (kind %d): does not wrap %v", tc.code, tc.kind, tc.sentinel)
		}
		if tc.sentinel == nil {
			for _, s := range []error{provider.ErrNoChangeTracking, provider.ErrCheckpointNotFound, provider.ErrVMNotFound, provider.ErrHostUnreachable} {
				if errors.Is(e, s) {
					t.Errorf("%d (kind %d): wraps %v", tc.code, tc.kind, s)
				}
			}
		}
	}
}

func TestClassifyHRESULT(t *testing.T) {
	cause := errors.New("Exception occurred.")
	for _, tc := range []struct {
		hr        uint32
		retryable bool
		sentinel  error
		text      string
	}{
		{hrRPCServerUnavailable, true, provider.ErrHostUnreachable, "did not answer"},
		{hrRPCCallFailed, true, provider.ErrHostUnreachable, "did not answer"},
		{hrWbemTransportFailure, true, provider.ErrHostUnreachable, "did not answer"},
		{hrAccessDenied, false, nil, "access denied"},
		{hrLogonFailure, false, nil, "password file"},
		{hrWbemInvalidNamespace, false, nil, "Hyper-V role"},
		{hrWbemNotFound, false, errObjectNotFound, "not found"},
		{0x80004005, true, nil, "0x80004005"},
	} {
		e := classifyHRESULT("connect", tc.hr, cause)
		if e.Retryable() != tc.retryable {
			t.Errorf("0x%08X: retryable %v", tc.hr, e.Retryable())
		}
		if tc.sentinel != nil && !errors.Is(e, tc.sentinel) {
			t.Errorf("0x%08X: does not wrap %v", tc.hr, tc.sentinel)
		}
		if !strings.Contains(e.Error(), tc.text) {
			t.Errorf("0x%08X: %q lacks %q", tc.hr, e.Error(), tc.text)
		}
	}
}

// The snapshot service has its own table (0–6); the 32768+ codes mean
// nothing there, and 1–6 mean nothing to the image management service.
func TestClassifyReturnPerService(t *testing.T) {
	for _, tc := range []struct {
		method    string
		code      uint32
		kind      methodKind
		meaning   string
		retryable bool
		sentinel  error
	}{
		{"CreateSnapshot", 1, kindGeneric, "not supported", false, nil},
		{"CreateSnapshot", 2, kindGeneric, "failed", true, nil},
		{"CreateSnapshot", 3, kindGeneric, "timeout", true, nil},
		{"CreateSnapshot", 4, kindGeneric, "invalid parameter", false, nil},
		{"CreateSnapshot", 5, kindGeneric, "invalid state", true, nil},
		{"CreateSnapshot", 6, kindGeneric, "invalid type", false, nil},
		{"DestroySnapshot", 4, kindCheckpoint, "invalid parameter", false, provider.ErrCheckpointNotFound},
		{"ConvertToReferencePoint", 32769, kindCheckpoint, "unknown return value", true, nil},
		{"GetVirtualDiskChanges", 2, kindChanges, "unknown return value", true, nil},
		{"ModifySystemSettings", 32769, kindGeneric, "access denied", false, nil},
		{"DestroyReferencePoint", 32775, kindGeneric, "invalid state for this operation", true, nil},
	} {
		e := classifyReturn("op", tc.method, tc.code, tc.kind, "")
		if !strings.Contains(e.Error(), tc.meaning) || e.Retryable() != tc.retryable {
			t.Errorf("%s %d: %q retryable %v, want %q retryable %v", tc.method, tc.code, e.Error(), e.Retryable(), tc.meaning, tc.retryable)
		}
		if tc.sentinel != nil && !errors.Is(e, tc.sentinel) {
			t.Errorf("%s %d: does not wrap %v", tc.method, tc.code, tc.sentinel)
		}
	}
}
