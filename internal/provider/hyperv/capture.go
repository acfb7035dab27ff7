package hyperv

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/replicator/replicator/internal/provider"
)

// Recording is a Hyper-V host's WMI answers in the fixture format of the
// provider's tests (testdata/hv01.json): the answers to queries and gets,
// the setting data of each disk file, the ids that matter, and every method
// call with its result.
type Recording struct {
	Host        string              `json:"host"`
	OSVersion   string              `json:"osVersion"`
	Queries     map[string][]Object `json:"queries"`
	Objects     map[string]Object   `json:"objects"`
	VHDSettings map[string]string   `json:"vhdSettingData"`
	IDs         map[string]string   `json:"ids"`
	Invocations []Invocation        `json:"invocations"`
	// Errors are the operations that failed while capturing, in order.
	Errors []string `json:"errors,omitempty"`
}

// Invocation is one recorded method call.
type Invocation struct {
	Path   string         `json:"path"`
	Method string         `json:"method"`
	In     map[string]any `json:"in"`
	Out    []string       `json:"out"`
	Result Result         `json:"result"`
	Error  string         `json:"error,omitempty"`
}

// recordingWMI records what a WMI client answers.
type recordingWMI struct {
	WMI
	mu  sync.Mutex
	rec *Recording
}

func (r *recordingWMI) Query(ctx context.Context, wql string) ([]Object, error) {
	objs, err := r.WMI.Query(ctx, wql)
	if err == nil {
		r.mu.Lock()
		r.rec.Queries[wql] = objs
		r.mu.Unlock()
	}
	return objs, err
}

func (r *recordingWMI) Get(ctx context.Context, path string) (Object, error) {
	o, err := r.WMI.Get(ctx, path)
	if err == nil {
		r.mu.Lock()
		r.rec.Objects[path] = o
		r.mu.Unlock()
	}
	return o, err
}

func (r *recordingWMI) Invoke(ctx context.Context, path, method string, in map[string]any, out []string) (Result, error) {
	res, err := r.WMI.Invoke(ctx, path, method, in, out)
	inv := Invocation{Path: path, Method: method, In: in, Out: out, Result: res}
	if err != nil {
		inv.Error = err.Error()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rec.Invocations = append(r.rec.Invocations, inv)
	if method == "GetVirtualHardDiskSettingData" && err == nil && res.ReturnValue == rcCompleted {
		r.rec.VHDSettings[asString(in["Path"])] = asString(res.Out["SettingData"])
	}
	return res, err
}

// Capture records the answers the provider relies on from the host behind c
// for one VM (name or id): the host, the VMs with their settings and storage
// allocations, a recovery checkpoint, a reference point, the changed ranges
// of each disk against it, and a method call that fails. What it makes on
// the host (named "replicator capture <vm>") it removes again.
func Capture(ctx context.Context, c WMI, vm string, opts Options) (*Recording, error) {
	rec := &Recording{Queries: map[string][]Object{}, Objects: map[string]Object{}, VHDSettings: map[string]string{}, IDs: map[string]string{}}
	r := &recordingWMI{WMI: c, rec: rec}
	p := newProvider(r, "", opts)
	failed := func(what string, err error) {
		rec.Errors = append(rec.Errors, fmt.Sprintf("%s: %v", what, err))
	}
	h, err := p.Host(ctx)
	if err != nil {
		return nil, fmt.Errorf("capture: %w", err)
	}
	rec.Host = h.Name
	rec.OSVersion = h.Version
	vms, err := p.VMs(ctx)
	if err != nil {
		return nil, fmt.Errorf("capture: %w", err)
	}
	var target *provider.VM
	for i := range vms {
		if vms[i].ID == vm || strings.EqualFold(vms[i].Name, vm) {
			target = &vms[i]
		}
		rec.IDs[vms[i].Name] = vms[i].ID
	}
	if target == nil {
		return nil, fmt.Errorf("capture: VM %q: %w", vm, provider.ErrVMNotFound)
	}
	name := provider.CheckpointName("capture", target.Name)
	cp, err := p.CreateCheckpoint(ctx, target.ID, provider.CheckpointOptions{Name: name, Consistency: provider.CrashConsistent})
	if err != nil {
		failed("CreateCheckpoint", err)
		return rec, nil
	}
	rec.IDs["snapshot"] = cp.ID
	rp, err := p.ConvertToReferencePoint(ctx, target.ID, cp.ID, "")
	if err != nil {
		failed("ConvertToReferencePoint", err)
		_ = p.ReleaseCheckpoint(context.WithoutCancel(ctx), target.ID, cp.ID)
		return rec, nil
	}
	rec.IDs["referencePoint"] = rp
	defer func() {
		if err := p.destroyReferencePoint(context.WithoutCancel(ctx), target.ID, rp); err != nil {
			failed("DestroyReferencePoint", err)
		}
	}()
	cp2, err := p.CreateCheckpoint(ctx, target.ID, provider.CheckpointOptions{Name: name, Consistency: provider.CrashConsistent})
	if err != nil {
		failed("CreateCheckpoint after the reference point", err)
		return rec, nil
	}
	rec.IDs["snapshotAfterReferencePoint"] = cp2.ID
	defer func() {
		if err := p.ReleaseCheckpoint(context.WithoutCancel(ctx), target.ID, cp2.ID); err != nil {
			failed("ReleaseCheckpoint", err)
		}
	}()
	if _, err := p.Checkpoints(ctx, target.ID); err != nil {
		failed("Checkpoints", err)
	}
	for _, d := range cp2.Disks {
		if _, err := p.ChangedRanges(ctx, target.ID, cp2.ID, d.DiskID, rp); err != nil {
			failed("ChangedRanges of disk "+d.DiskID, err)
		}
	}
	// A call that must fail: destroying the VM's own settings as if they
	// were a snapshot. What the host answers (a return value or a failed
	// job) is what the tests of failures need.
	svc, err := p.servicePath(ctx, classSnapshotService)
	if err == nil {
		vssd, err := p.realizedSettings(ctx, target.ID)
		if err == nil {
			_, err = p.call(ctx, "DestroySnapshot of the VM's own settings", kindGeneric, svc, "DestroySnapshot", map[string]any{"AffectedSnapshot": vssd.Path}, []string{"Job"})
			if err == nil {
				err = errors.New("the host accepted it")
			}
			rec.IDs["failedCall"] = "DestroySnapshot"
			failed("DestroySnapshot of the VM's own settings (expected to fail)", err)
		}
	}
	return rec, nil
}
