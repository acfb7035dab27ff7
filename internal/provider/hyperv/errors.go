package hyperv

import (
	"errors"
	"fmt"

	"github.com/replicator/replicator/internal/provider"
)

// ErrRequiresWindows is returned by New on systems other than Windows.
var ErrRequiresWindows = errors.New("hyperv provider requires Windows")

// errObjectNotFound: Get found no object at that path (WBEM_E_NOT_FOUND).
var errObjectNotFound = errors.New("wmi object not found")

// Return values of the methods of Msvm_ImageManagementService (
// GetVirtualDiskChanges, GetVirtualHardDiskSettingData),
// Msvm_VirtualSystemManagementService (ModifySystemSettings) and
// Msvm_VirtualSystemReferencePointService (DestroyReferencePoint): 0, 4096
// and the 32768+ table, as learn.microsoft.com documents each method
// (hyperv_v2/msvm-imagemanagementservice-getvirtualdiskchanges,
// msvm-virtualsystemmanagementservice-modifysystemsettings,
// msvm-virtualsystemreferencepointservice-destroyreferencepoint).
const (
	rcCompleted        = 0
	rcJobStarted       = 4096
	rcFailed           = 32768
	rcAccessDenied     = 32769
	rcNotSupported     = 32770
	rcStatusUnknown    = 32771
	rcTimeout          = 32772
	rcInvalidParameter = 32773
	rcSystemInUse      = 32774
	rcInvalidState     = 32775
	rcIncorrectType    = 32776
	rcNotAvailable     = 32777
	rcOutOfMemory      = 32778
	rcFileNotFound     = 32779
)

// Return values of the methods of Msvm_VirtualSystemSnapshotService
// (CreateSnapshot, DestroySnapshot, ConvertToReferencePoint): a table of its
// own, 0 to 6 and 4096 (learn.microsoft.com, hyperv_v2/
// msvm-virtualsystemsnapshotservice-createsnapshot, -destroysnapshot,
// -converttoreferencepoint).
const (
	rcSnapNotSupported     = 1
	rcSnapFailed           = 2
	rcSnapTimeout          = 3
	rcSnapInvalidParameter = 4
	rcSnapInvalidState     = 5
	rcSnapInvalidType      = 6
)

// returnCode describes one return value: its meaning and whether trying the
// same operation again later can succeed.
type returnCode struct {
	meaning   string
	retryable bool
}

// returnTable maps the return values of one service's methods.
type returnTable map[uint32]returnCode

// genericReturns is the 32768+ table of the image management, system
// management and reference point services.
var genericReturns = returnTable{
	rcFailed:           {"failed", true},
	rcAccessDenied:     {"access denied", false},
	rcNotSupported:     {"not supported", false},
	rcStatusUnknown:    {"status is unknown", true},
	rcTimeout:          {"timeout", true},
	rcInvalidParameter: {"invalid parameter", false},
	rcSystemInUse:      {"system is in use", true},
	rcInvalidState:     {"invalid state for this operation", true},
	rcIncorrectType:    {"incorrect data type", false},
	rcNotAvailable:     {"system is not available", true},
	rcOutOfMemory:      {"out of memory", true},
	rcFileNotFound:     {"file not found", false},
}

// snapshotReturns is the table of Msvm_VirtualSystemSnapshotService. An
// invalid state (the VM is busy: another checkpoint, a backup, a migration)
// passes; a timeout may too.
var snapshotReturns = returnTable{
	rcSnapNotSupported:     {"not supported", false},
	rcSnapFailed:           {"failed", true},
	rcSnapTimeout:          {"timeout", true},
	rcSnapInvalidParameter: {"invalid parameter", false},
	rcSnapInvalidState:     {"invalid state", true},
	rcSnapInvalidType:      {"invalid type", false},
}

// returnTableOf gives the return-value table of a method by the service
// that declares it.
func returnTableOf(method string) returnTable {
	switch method {
	case "CreateSnapshot", "DestroySnapshot", "ConvertToReferencePoint", "ApplySnapshot", "ClearSnapshotState":
		return snapshotReturns
	default:
		return genericReturns
	}
}

// Error is a failed Hyper-V operation: what was done to what, the WMI return
// value or job error code, and whether trying again later can help.
// It wraps a provider sentinel (ErrVMNotFound, ErrCheckpointNotFound,
// ErrNoChangeTracking, ErrHostUnreachable) where one applies.
type Error struct {
	Op          string // e.g. `CreateSnapshot of VM "web01" (4C4C…)`
	Code        uint32 // WMI return value, job ErrorCode, or HRESULT; 0 if none
	Description string // the code's meaning, and the job's ErrorDescription if any
	retryable   bool
	err         error
}

func (e *Error) Error() string {
	kind := "not retryable"
	if e.retryable {
		kind = "retryable"
	}
	msg := "hyperv: " + e.Op
	if e.Code != 0 {
		msg += fmt.Sprintf(": code %d", e.Code)
	}
	if e.Description != "" {
		msg += ": " + e.Description
	}
	if e.err != nil {
		msg += ": " + e.err.Error()
	}
	return msg + " (" + kind + ")"
}

// Unwrap gives the wrapped sentinel or cause.
func (e *Error) Unwrap() error { return e.err }

// Retryable says whether the same operation can succeed when tried again later.
func (e *Error) Retryable() bool { return e.retryable }

// Retryable reports whether err is worth retrying: Hyper-V errors say so
// themselves; a host that did not answer is retryable; anything else is not.
func Retryable(err error) bool {
	var he *Error
	if errors.As(err, &he) {
		return he.retryable
	}
	return errors.Is(err, provider.ErrHostUnreachable)
}

// methodKind selects how a return value maps to provider sentinels.
type methodKind int

const (
	kindGeneric    methodKind = iota
	kindChanges               // GetVirtualDiskChanges: tracking lost means ErrNoChangeTracking
	kindCheckpoint            // operations on an existing checkpoint
)

// classifyReturn turns a non-success return value (or job error code) of
// method into an *Error, reading it in the table of the method's service.
// 0 and 4096 are not errors and must not reach it.
func classifyReturn(op, method string, code uint32, kind methodKind, description string) *Error {
	table := returnTableOf(method)
	rc, known := table[code]
	e := &Error{Op: op, Code: code, retryable: true}
	if known {
		e.retryable = rc.retryable
		e.Description = rc.meaning
	} else {
		// An unlisted code: a later attempt may succeed, and the activity's
		// retry policy bounds how often it is tried.
		e.Description = "unknown return value"
	}
	if description != "" {
		e.Description += ": " + description
	}
	snapshotTable := table[rcSnapFailed].meaning != ""
	switch {
	case kind == kindChanges && (code == rcNotSupported || code == rcFileNotFound || code == rcInvalidParameter):
		// RCT disabled, its .rct/.mrt files gone, or the limit id no longer
		// known: the caller falls back to comparing digests.
		e.err = provider.ErrNoChangeTracking
		e.retryable = false
	case kind == kindCheckpoint && !snapshotTable && code == rcFileNotFound:
		e.err = provider.ErrCheckpointNotFound
		e.retryable = false
	case kind == kindCheckpoint && snapshotTable && code == rcSnapInvalidParameter:
		// The AffectedSnapshot reference no longer names a snapshot: it was
		// deleted between the lookup and the call.
		e.err = provider.ErrCheckpointNotFound
		e.retryable = false
	}
	return e
}

// HRESULTs of COM and WMI that the Windows layer hands to classifyHRESULT.
const (
	hrAccessDenied         = 0x80070005 // E_ACCESSDENIED
	hrRPCServerUnavailable = 0x800706BA // RPC_S_SERVER_UNAVAILABLE
	hrRPCCallFailed        = 0x800706BE // RPC_S_CALL_FAILED
	hrRPCCallFailedDNE     = 0x800706BF // RPC_S_CALL_FAILED_DNE
	hrLogonFailure         = 0x8007052E // ERROR_LOGON_FAILURE
	hrWbemNotFound         = 0x80041002 // WBEM_E_NOT_FOUND
	hrWbemAccessDenied     = 0x80041003 // WBEM_E_ACCESS_DENIED
	hrWbemInvalidNamespace = 0x8004100E // WBEM_E_INVALID_NAMESPACE
	hrWbemInvalidClass     = 0x80041010 // WBEM_E_INVALID_CLASS
	hrWbemInvalidQuery     = 0x80041017 // WBEM_E_INVALID_QUERY
	hrWbemTransportFailure = 0x80041015 // WBEM_E_TRANSPORT_FAILURE
	hrWbemShuttingDown     = 0x80041033 // WBEM_E_SHUTTING_DOWN
)

// classifyHRESULT turns a COM/WMI failure of a query, a connection or a
// method call into an *Error.
func classifyHRESULT(op string, hr uint32, cause error) *Error {
	e := &Error{Op: op, Code: hr, err: cause}
	switch hr {
	case hrRPCServerUnavailable, hrRPCCallFailed, hrRPCCallFailedDNE, hrWbemTransportFailure, hrWbemShuttingDown:
		e.Description = "host did not answer"
		e.err = fmt.Errorf("%w: %v", provider.ErrHostUnreachable, cause)
		e.retryable = true
	case hrAccessDenied, hrWbemAccessDenied, hrLogonFailure:
		e.Description = "access denied (check the host's username and password file, and membership of Hyper-V Administrators)"
	case hrWbemInvalidNamespace, hrWbemInvalidClass:
		e.Description = `namespace root\virtualization\v2 or its classes are missing: is the Hyper-V role installed?`
	case hrWbemNotFound:
		e.Description = "object not found"
		e.err = fmt.Errorf("%w: %v", errObjectNotFound, cause)
	case hrWbemInvalidQuery:
		e.Description = "invalid WQL query"
	default:
		e.Description = fmt.Sprintf("HRESULT 0x%08X", hr)
		e.retryable = true
	}
	return e
}
