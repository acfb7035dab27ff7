// Package activities adapts Temporal to the packages that do the work. Each
// activity is a thin method: it decodes its input, calls the provider, the
// data path or the agent, heartbeats, and turns errors into retryable or
// non-retryable Temporal errors in one place (errors.go). Source activities
// run on the proxy (task queue source-<host>), target activities in the
// target agent (target-<target>), LoadJob wherever job workflows run.
package activities

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/blockplan"
	"github.com/replicator/replicator/internal/codec"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/disk"
	"github.com/replicator/replicator/internal/diskimage"
	"github.com/replicator/replicator/internal/exclude"
	"github.com/replicator/replicator/internal/guest"
	"github.com/replicator/replicator/internal/metrics"
	"github.com/replicator/replicator/internal/provider"
	"github.com/replicator/replicator/internal/throttle"
	"github.com/replicator/replicator/internal/transfer"
)

// Source holds what the proxy's activities need: the providers of the source
// hosts it serves, the client TLS of the data channel, a Temporal client for
// progress signals, and the configuration (re-read for guest settings).
type Source struct {
	Providers map[string]provider.Provider
	TLS       *tls.Config
	Client    client.Client
	Config    func() (*config.Config, error)
	Logger    *slog.Logger
	Metrics   *metrics.DataPath
	// ProgressInterval is how often a transfer signals its figures to the job run.
	ProgressInterval time.Duration

	throttleMu sync.Mutex
	throttles  map[string]*throttle.Throttle // by target name, shared by all its transfers
}

// throttle returns the target's shared throttle with the rules of the
// configuration as it is now (nil when the target has none).
func (s *Source) throttle(target string) (*throttle.Throttle, error) {
	if s.Config == nil {
		return nil, nil
	}
	cfg, err := s.Config()
	if err != nil {
		return nil, nonRetryable(contract.ErrTypeBadConfig, err)
	}
	t, ok := cfg.Target(target)
	if !ok {
		return nil, nil
	}
	rules, err := t.ThrottleRules()
	if err != nil {
		return nil, nonRetryable(contract.ErrTypeBadConfig, fmt.Errorf("targets[%s].%w", target, err))
	}
	s.throttleMu.Lock()
	defer s.throttleMu.Unlock()
	th := s.throttles[target]
	if len(rules) == 0 && th == nil {
		return nil, nil
	}
	if th == nil {
		if s.throttles == nil {
			s.throttles = map[string]*throttle.Throttle{}
		}
		th = throttle.New(rules)
		s.throttles[target] = th
	} else {
		// Transfers running now follow an edited configuration too.
		th.SetRules(rules)
	}
	return th, nil
}

func (s *Source) provider(host string) (provider.Provider, error) {
	p, ok := s.Providers[host]
	if !ok {
		return nil, nonRetryable(contract.ErrTypeBadConfig, fmt.Errorf("this proxy serves no source host %q", host))
	}
	return p, nil
}

// CheckSource checks that the source host answers.
func (s *Source) CheckSource(ctx context.Context, host string) (provider.Host, error) {
	p, err := s.provider(host)
	if err != nil {
		return provider.Host{}, err
	}
	h, err := p.Host(ctx)
	return h, classify(err)
}

// Inventory lists the VMs of the host that the patterns (names, ids, "*") select.
func (s *Source) Inventory(ctx context.Context, in contract.InventoryInput) ([]contract.VM, error) {
	pick, err := s.inventorySelection(in)
	if err != nil {
		return nil, err
	}
	p, err := s.provider(in.Host)
	if err != nil {
		return nil, err
	}
	vms, err := p.VMs(ctx)
	if err != nil {
		return nil, classify(err)
	}
	var out []contract.VM
	for _, vm := range vms {
		if !pick(vm) {
			continue
		}
		out = append(out, s.inventoryVM(ctx, p, vm))
	}
	return out, nil
}

func (s *Source) inventoryVM(ctx context.Context, p provider.Provider, vm provider.VM) contract.VM {
	c := contract.VM{ID: vm.ID, Name: vm.Name, State: vm.State, Generation: vm.Generation, Disks: []contract.Disk{},
		Unsupported: vm.Unsupported}
	c.Config = s.vmConfig(ctx, p, vm)
	for _, d := range vm.Disks {
		c.Disks = append(c.Disks, contract.Disk{ID: d.ID, VirtualSize: d.VirtualSize, SectorSize: sectorSize(d.Path)})
	}
	return c
}

// InventoryPage is Inventory one page at a time, in VM id order: the VMs the
// patterns select whose id sorts after in.After, at most in.Limit of them and
// no more than contract.InventoryPageBytes of JSON (always at least one), so
// that a host of thousands of VMs never answers in one payload past
// Temporal's warning. The first page also counts the VMs selected and names
// the patterns without a wildcard that select none.
func (s *Source) InventoryPage(ctx context.Context, in contract.InventoryInput) (contract.InventoryPage, error) {
	if in.Limit < 1 {
		return contract.InventoryPage{}, nonRetryable(contract.ErrTypeBadInput, fmt.Errorf("inventory page of host %q: limit %d, want at least 1", in.Host, in.Limit))
	}
	pick, err := s.inventorySelection(in)
	if err != nil {
		return contract.InventoryPage{}, err
	}
	p, err := s.provider(in.Host)
	if err != nil {
		return contract.InventoryPage{}, err
	}
	vms, err := p.VMs(ctx)
	if err != nil {
		return contract.InventoryPage{}, classify(err)
	}
	var sel []provider.VM
	for _, vm := range vms {
		if pick(vm) {
			sel = append(sel, vm)
		}
	}
	// A selection that fits one page keeps the host's order, as Inventory
	// answers; pages follow VM ids.
	sorted := in.After != "" || len(sel) > in.Limit
	if sorted {
		slices.SortFunc(sel, func(a, b provider.VM) int { return strings.Compare(a.ID, b.ID) })
	}
	page := s.inventoryPage(ctx, p, sel, in.After, in.Limit)
	if page.More && !sorted {
		slices.SortFunc(sel, func(a, b provider.VM) int { return strings.Compare(a.ID, b.ID) })
		page = s.inventoryPage(ctx, p, sel, in.After, in.Limit)
	}
	if in.After == "" {
		page.Total = len(sel)
		page.Missing = missingPatterns(sel, in.Patterns)
	}
	return page, nil
}

// inventoryPage is the page of the selected VMs after the id after.
func (s *Source) inventoryPage(ctx context.Context, p provider.Provider, sel []provider.VM, after string, limit int) contract.InventoryPage {
	page := contract.InventoryPage{VMs: []contract.VM{}}
	size := 0
	for _, vm := range sel {
		if after != "" && vm.ID <= after {
			continue
		}
		if len(page.VMs) == limit {
			page.More = true
			break
		}
		c := s.inventoryVM(ctx, p, vm)
		b, _ := json.Marshal(c)
		// Each disk past two also weighs what the run lists of it while the
		// VM is pending (about 240 bytes of result per disk): a page of VMs
		// with many disks is smaller, so that the page and its VMs' pending
		// results together stay under the payload warning.
		w := len(b) + 240*max(0, len(c.Disks)-2)
		if len(page.VMs) > 0 && size+w > contract.InventoryPageBytes {
			page.More = true
			break
		}
		size += w
		page.VMs = append(page.VMs, c)
	}
	return page
}

// missingPatterns are the patterns without a wildcard that select none of vms.
func missingPatterns(vms []provider.VM, patterns []string) []string {
	var missing []string
	for _, want := range patterns {
		if strings.ContainsAny(want, "*?[") {
			continue
		}
		if !slices.ContainsFunc(vms, func(vm provider.VM) bool { return vm.ID == want || strings.EqualFold(vm.Name, want) }) {
			missing = append(missing, want)
		}
	}
	return missing
}

// sectorSize reads a disk's logical sector size so that the replica keeps it
// (a GPT sits at LBA 1: a replica with another sector size would not boot).
func sectorSize(p string) int {
	img, err := diskimage.Open(p)
	if err != nil {
		return 0 // the replica then takes 512, Hyper-V's default
	}
	defer img.Close()
	return img.SectorSize()
}

// inventorySelection is what picks an inventory's VMs: its patterns, within
// the selection of its job as this worker's configuration has it (a run's
// input names VMs, but only of its job).
func (s *Source) inventorySelection(in contract.InventoryInput) (func(provider.VM) bool, error) {
	if in.Job == "" {
		return func(vm provider.VM) bool { return selected(vm, in.Patterns) }, nil
	}
	job, err := sourceJob(s.Config, in.Job, in.Host)
	if err != nil {
		return nil, err
	}
	return func(vm provider.VM) bool { return selected(vm, in.Patterns) && selected(vm, job.VMs) }, nil
}

func selected(vm provider.VM, patterns []string) bool {
	for _, p := range patterns {
		if p == "*" || p == vm.ID || strings.EqualFold(p, vm.Name) {
			return true
		}
		if ok, _ := path.Match(p, vm.Name); ok {
			return true
		}
	}
	return false
}

// CreateCheckpoint freezes the VM's disks, with guest processing around the
// checkpoint when the job asks for it. A checkpoint named by ReuseID that still
// exists is reused: an interrupted restore point continues from it. With
// in.Sweep, the job's other checkpoints of the VM are then removed (see
// SweepCheckpoints); a sweep that fails is reported in the result and never
// fails the activity, whose checkpoint exists: retrying would take another.
func (s *Source) CreateCheckpoint(ctx context.Context, in contract.CheckpointInput) (contract.CheckpointResult, error) {
	cp, err := s.createCheckpoint(ctx, in)
	if err != nil || !in.Sweep {
		return cp, err
	}
	removed, serr := s.SweepCheckpoints(ctx, contract.SweepInput{Host: in.Host, Job: in.Job, VMID: in.VMID, Keep: cp.ID})
	cp.Removed = removed
	if serr != nil {
		cp.SweepError = serr.Error()
	}
	return cp, nil
}

func (s *Source) createCheckpoint(ctx context.Context, in contract.CheckpointInput) (contract.CheckpointResult, error) {
	job, err := sourceJob(s.Config, in.Job, in.Host)
	if err != nil {
		return contract.CheckpointResult{}, err
	}
	p, err := s.provider(in.Host)
	if err != nil {
		return contract.CheckpointResult{}, err
	}
	if _, err := jobVM(ctx, p, job, in.VMID); err != nil {
		return contract.CheckpointResult{}, err
	}
	if in.ReuseID != "" {
		cp, err := p.Checkpoint(ctx, in.VMID, in.ReuseID)
		switch {
		case err == nil && provider.MadeByJob(cp.Name, in.Job):
			return contract.CheckpointResult{ID: cp.ID, Reused: true, Taken: cp.Created}, nil
		case err == nil:
			// The id the replica's open point carries names a checkpoint
			// this job did not make (an administrator's, another job's):
			// it is neither read nor released; the run takes its own.
			s.log().Warn("the interrupted point's checkpoint is not one this job made; taking a new one",
				"vm", in.VMName, "checkpoint", in.ReuseID, "name", cp.Name)
		case !errors.Is(err, provider.ErrCheckpointNotFound):
			return contract.CheckpointResult{}, classify(err)
		}
		s.log().Info("the interrupted run's checkpoint is gone; taking a new one", "vm", in.VMName, "checkpoint", in.ReuseID)
	}
	var cp provider.Checkpoint
	var takeErr error
	// The job's consistency is the host's own freeze of the guest (Hyper-V:
	// the backup integration service). A guest already quiesced by
	// pre-freeze commands is not frozen a second time: its checkpoint is
	// asked crash-consistent and is application-consistent by those
	// commands.
	hostLevel := provider.CrashConsistent
	if job.Consistency != "crash" {
		hostLevel = provider.ApplicationConsistent
	}
	take := func(ctx context.Context, guestFrozen provider.Consistency) error {
		level := hostLevel
		if guestFrozen == provider.ApplicationConsistent {
			level = provider.CrashConsistent
		}
		takeErr = heartbeatWhile(ctx, func() error {
			var err error
			cp, err = p.CreateCheckpoint(ctx, in.VMID, provider.CheckpointOptions{Name: provider.CheckpointName(in.Job, in.VMName), Consistency: level, FullBackup: job.GuestBackupType == "full"})
			return err
		})
		return takeErr
	}
	if !job.GuestProcessing.Enabled {
		if err := take(ctx, provider.CrashConsistent); err != nil {
			return contract.CheckpointResult{}, classify(err)
		}
		return contract.CheckpointResult{ID: cp.ID, Consistency: consistencyName(cp.Consistency), Warning: cp.Warning, Taken: cp.Created}, nil
	}
	runner, err := guestRunner(job.GuestProcessing, in.VMName, s.log())
	if err != nil {
		return contract.CheckpointResult{}, nonRetryable(contract.ErrTypeBadConfig, err)
	}
	var consistency provider.Consistency
	var warning string
	err = heartbeatWhile(ctx, func() error {
		var err error
		consistency, warning, err = guest.Process(ctx, runner, in.VMName, job.GuestProcessing.OnFailure, take)
		return err
	})
	if err != nil {
		if takeErr != nil && errors.Is(err, takeErr) {
			// The host's failure, not the guest's: retryable or not as the host says.
			return contract.CheckpointResult{}, classify(err)
		}
		return contract.CheckpointResult{}, nonRetryable(contract.ErrTypeBadInput, err)
	}
	if consistency != provider.ApplicationConsistent {
		consistency = cp.Consistency
	}
	return contract.CheckpointResult{ID: cp.ID, Warning: provider.JoinWarnings(warning, cp.Warning), Consistency: consistencyName(consistency), Taken: cp.Created}, nil
}

// guestRunner is the runner of the VM's guest processing method.
func guestRunner(g config.GuestProcessing, vm string, log *slog.Logger) (guest.Runner, error) {
	switch m := g.MethodFor(vm); m {
	case "ssh":
		return guest.NewSSHRunner(g, log)
	case "powershell-direct":
		r, err := guest.NewPowerShellDirect(g, g.PowerShellDirect.User, g.PowerShellDirect.PasswordFile, log)
		if err != nil {
			return nil, fmt.Errorf("guest processing of VM %s (powershell-direct): %w", vm, err)
		}
		return r, nil
	default:
		return nil, fmt.Errorf("guest processing of VM %s: unknown method %q", vm, m)
	}
}

func consistencyName(c provider.Consistency) string {
	if c == provider.ApplicationConsistent {
		return "application"
	}
	return "crash"
}

// TransferDisk sends one disk of a checkpoint to the target agent: only the
// changed blocks (CBT, else the replica's digests, else everything allocated),
// without zero blocks, swap and excluded files, compressed. It heartbeats the
// acknowledged position; a retry resumes from the agent's durable position.
func (s *Source) TransferDisk(ctx context.Context, in contract.TransferInput) (contract.DiskResult, error) {
	_, job, spec, err := configuredJob(s.Config, in.Job.Name)
	if err != nil {
		return contract.DiskResult{}, err
	}
	// How the proxy reaches the target (address, stall timeout) is the
	// proxy's view (targets[] are as seen from the proxy): across sites the
	// jobs worker's file, which the run carries, may name the agent
	// otherwise. Those two come from this file alone and are not compared,
	// so a forged address is never dialled; every other setting must match.
	carried := in.Job
	carried.TargetAddress, carried.TargetStallTimeout = spec.TargetAddress, spec.TargetStallTimeout
	if err := checkSpec(carried, spec); err != nil {
		return contract.DiskResult{}, err
	}
	in.Job = spec
	p, err := s.provider(in.Job.Source)
	if err != nil {
		return contract.DiskResult{}, err
	}
	vm, err := jobVM(ctx, p, job, in.VMID)
	if err != nil {
		return contract.DiskResult{}, err
	}
	if !slices.ContainsFunc(vm.Disks, func(d provider.Disk) bool { return d.ID == in.DiskID }) {
		return contract.DiskResult{}, nonRetryable(contract.ErrTypeBadInput, fmt.Errorf("VM %q has no disk %q", vm.Name, in.DiskID))
	}
	log := s.log().With("job", in.Job.Name, "vm", in.VMID, "disk", in.DiskID, "checkpoint", in.CheckpointID,
		"attempt", activity.GetInfo(ctx).Attempt)
	img, err := p.OpenDisk(ctx, in.VMID, in.CheckpointID, in.DiskID)
	if err != nil {
		return contract.DiskResult{}, classify(err)
	}
	defer img.Close()

	level, err := codec.ParseLevel(in.Job.Compression)
	if err != nil {
		return contract.DiskResult{}, nonRetryable(contract.ErrTypeBadConfig, err)
	}
	opts := transfer.SendOptions{
		Job: in.Job.Name, VMID: in.VMID, DiskID: in.DiskID, CheckpointID: in.CheckpointID, Token: in.Token,
		BlockSize: in.Job.BlockSize, Compression: level,
		ZeroBlocksAsData: !in.Job.ExcludeZero,
	}
	excluded, warning := s.exclusions(ctx, in, img, log)
	mode, plan := s.plan(ctx, p, in, img, s.unexcluded(ctx, in, img, excluded, log), log)
	if mode == contract.TrackingDigest {
		opts.CompareDigests = true
	}

	res := contract.DiskResult{ID: in.DiskID, Status: contract.StatusRunning, ChangeTracking: mode, Size: img.Size(), Warning: warning}
	var mu sync.Mutex
	lastSignal := time.Time{}
	// Each signal adds events to the job run's history, which only continues
	// as new between VMs: once a minute per disk keeps a day-long transfer of
	// a few disks far below Temporal's history limits. Heartbeats (every few
	// seconds, no history) carry the live position to the workflow's retries.
	interval := s.ProgressInterval
	if interval <= 0 {
		interval = time.Minute
	}
	progress := func(pr transfer.Progress) {
		mu.Lock()
		defer mu.Unlock()
		res = diskResult(res, pr.Result)
		activity.RecordHeartbeat(ctx, res)
		if s.Client != nil && in.ParentWorkflowID != "" && time.Since(lastSignal) >= interval {
			lastSignal = time.Now()
			_ = s.Client.SignalWorkflow(ctx, in.ParentWorkflowID, "", contract.ProgressSignal,
				contract.ProgressUpdate{VMID: in.VMID, Disk: res})
		}
	}
	target, err := s.sender(in.Job)
	if err != nil {
		return contract.DiskResult{}, err
	}
	log.Info("transfer starting", "changeTracking", mode, "excludedRanges", len(excluded))
	// The transfer stops by itself when the backup window closes, rather than
	// when the cancellation reaches it with the next heartbeat. Heartbeats keep
	// using the activity's own ctx.
	sendCtx := ctx
	if !in.Deadline.IsZero() {
		var cancel context.CancelFunc
		sendCtx, cancel = context.WithDeadline(ctx, in.Deadline)
		defer cancel()
	}
	// A network blip is ridden out here, reconnecting within seconds and
	// resuming from the acknowledged position; a longer outage fails the
	// attempt and Temporal retries it with its own backoff.
	r, err := target.SendDiskWithRetry(sendCtx, img, plan, excluded, opts, progress,
		transfer.RetryPolicy{Attempts: 5, Backoff: 500 * time.Millisecond, MaxBackoff: 5 * time.Second})
	mu.Lock()
	res = diskResult(res, r)
	out := res
	mu.Unlock()
	s.Metrics.Add(in.Job.Name, r.BytesRead, r.BytesSent, r.BytesWritten, r.BlocksZero, r.BlocksExcluded, r.BlocksUnchanged, r.ResumedFromByte > 0)
	if err != nil {
		log.Warn("transfer stopped", "error", err, "acknowledged", r.Acknowledged)
		if ctx.Err() != nil {
			out.Status = contract.StatusPartial
			return out, temporal.NewCanceledError(out)
		}
		if sendCtx.Err() != nil {
			out.Status = contract.StatusPartial
			return out, temporal.NewNonRetryableApplicationError("backup window closed at "+in.Deadline.UTC().Format(time.RFC3339)+"; the next run continues from the acknowledged position",
				contract.ErrTypeWindowClosed, err, out)
		}
		return out, classify(err)
	}
	out.Status = contract.StatusSuccess
	out.Position = out.Size
	log.Info("transfer done", "bytesRead", out.BytesRead, "bytesSent", out.BytesSent, "resumedFrom", out.ResumedFromByte)
	return out, nil
}

// plan picks the change-tracking mode of a disk: the provider's changed
// ranges against the reference point that matches the replica's newest point;
// else the replica's digests; else every allocated block.
//
// unexcluded are ranges the previous point left out and this one does not:
// change tracking does not list them (they did not change), so they are
// added to its changes. Digests find them by themselves (the replica holds
// zeros there), and a full plan sends them anyway.
func (s *Source) plan(ctx context.Context, p provider.Provider, in contract.TransferInput, img disk.Image, unexcluded []disk.Extent, log *slog.Logger) (string, blockplan.Plan) {
	mode := in.Job.ChangeTracking
	if !in.HasPreviousPoint {
		// The first point starts from an empty disk: unallocated space is zero there already.
		return contract.TrackingFull, blockplan.Full(img.Size(), in.Job.BlockSize, img.Allocated())
	}
	if mode == "full" {
		// Over an existing point every block is rewritten, unallocated ones as
		// zeros: the previous point may hold data there.
		return contract.TrackingFull, blockplan.All(img.Size(), in.Job.BlockSize)
	}
	if (mode == "auto" || mode == "rct") && in.ReferencePoint != "" {
		changed, err := p.ChangedRanges(ctx, in.VMID, in.CheckpointID, in.DiskID, in.ReferencePoint)
		if err == nil {
			if len(unexcluded) > 0 {
				changed = disk.Merge(append(changed, unexcluded...), img.Size())
			}
			return contract.TrackingRCT, blockplan.Changed(img.Size(), in.Job.BlockSize, changed)
		}
		log.Warn("changed block tracking is not available; comparing digests", "error", err)
	}
	return contract.TrackingDigest, nil
}

// exclusions maps swap, page files and the job's excluded paths to byte
// ranges. A disk that cannot be analyzed is sent whole: never less.
//
// exclude.paths apply to NTFS only: a partition with another file system
// gives a warning (and a metric, on the transfer's first attempt) instead of
// a rule dropped in silence.
func (s *Source) exclusions(ctx context.Context, in contract.TransferInput, img disk.Image, log *slog.Logger) ([]disk.Extent, string) {
	if !in.Job.ExcludeSwap && len(in.Job.ExcludePaths) == 0 {
		return nil, ""
	}
	parts, ranges, err := exclude.Analyze(ctx, img, img.Size(), img.SectorSize(), exclude.Options{Swap: in.Job.ExcludeSwap, Paths: in.Job.ExcludePaths})
	if err != nil {
		log.Warn("guest file systems could not be analyzed; nothing is excluded", "error", err)
		return nil, ""
	}
	var warning string
	if len(in.Job.ExcludePaths) > 0 {
		var where []string
		for _, p := range parts {
			if !pathRulesCannotApply(p) {
				continue
			}
			where = append(where, fmt.Sprintf("partition %d (%s)", p.Index, p.Filesystem))
			if !activity.IsActivity(ctx) || activity.GetInfo(ctx).Attempt == 1 {
				s.Metrics.ExclusionNotApplied(in.Job.Name, p.Filesystem)
			}
		}
		if len(where) > 0 {
			warning = fmt.Sprintf("exclude.paths apply to NTFS only: on disk %s, %s sent with every file",
				in.DiskID, strings.Join(where, ", "))
			log.Warn("exclude.paths cannot apply to these file systems; their files are sent", "partitions", where)
		}
	}
	out := make([]disk.Extent, 0, len(ranges))
	for _, r := range ranges {
		out = append(out, disk.Extent{Offset: r.Offset, Length: r.Length})
	}
	return out, warning
}

// pathRulesCannotApply says whether a partition holds a file system whose
// files exclude.paths cannot find (every one but NTFS). Swap holds no files,
// and a small FAT partition is a boot or EFI partition, not a place for data.
func pathRulesCannotApply(p exclude.Partition) bool {
	switch p.Filesystem {
	case "", "ntfs", "swap":
		return false
	case "vfat":
		return p.Length > 1<<30
	}
	return true
}

// unexcluded returns what the previous point excluded and this transfer
// sends (excluded is this transfer's exclusions): a path removed from
// exclude.paths, or exclude.swap turned off. Without it the replica would keep
// the zeros the earlier exclusion left there until a digest or full run.
func (s *Source) unexcluded(ctx context.Context, in contract.TransferInput, img disk.Image, excluded []disk.Extent, log *slog.Logger) []disk.Extent {
	prev := in.PreviousExclusions
	now := contract.Exclusions{Swap: in.Job.ExcludeSwap, Paths: in.Job.ExcludePaths}
	if !in.HasPreviousPoint || prev == nil || prev.Equal(now) || (!prev.Swap && len(prev.Paths) == 0) {
		return nil
	}
	_, before, err := exclude.Analyze(ctx, img, img.Size(), img.SectorSize(), exclude.Options{Swap: prev.Swap, Paths: prev.Paths})
	if err != nil {
		// Unknown: send the whole disk's allocated ranges rather than less.
		log.Warn("what the previous point excluded cannot be told; its whole disk is sent again", "error", err)
		return img.Allocated()
	}
	var was []disk.Extent
	for _, r := range before {
		was = append(was, disk.Extent{Offset: r.Offset, Length: r.Length})
	}
	out := subtract(disk.Merge(was, img.Size()), disk.Merge(excluded, img.Size()))
	if len(out) > 0 {
		log.Info("exclusions changed since the previous point; sending what it left out", "ranges", len(out))
	}
	return out
}

// subtract returns the parts of a not in b; both sorted and merged.
func subtract(a, b []disk.Extent) []disk.Extent {
	var out []disk.Extent
	j := 0
	for _, e := range a {
		start, end := e.Offset, e.End()
		for j < len(b) && b[j].End() <= start {
			j++
		}
		for k := j; k < len(b) && b[k].Offset < end; k++ {
			if b[k].Offset > start {
				out = append(out, disk.Extent{Offset: start, Length: b[k].Offset - start})
			}
			start = max(start, b[k].End())
		}
		if start < end {
			out = append(out, disk.Extent{Offset: start, Length: end - start})
		}
	}
	return out
}

func (s *Source) sender(job contract.JobSpec) (*transfer.Sender, error) {
	// targets[] is where replicas live as seen from the proxy: in a
	// deployment across sites the proxy's own file says how it reaches the
	// agent, which the jobs worker's file (that the run carries) may not know.
	if s.Config != nil {
		if cfg, err := s.Config(); err == nil {
			if t, ok := cfg.Target(job.Target); ok && t.Address != "" {
				job.TargetAddress = t.Address
				if t.StallTimeout > 0 {
					job.TargetStallTimeout = t.StallTimeout
				}
			}
		}
	}
	if job.TargetAddress == "" {
		return nil, nonRetryable(contract.ErrTypeBadConfig, fmt.Errorf("target %q has no address", job.Target))
	}
	if s.TLS == nil {
		return nil, nonRetryable(contract.ErrTypeBadConfig, errors.New("the proxy has no TLS certificate for the data channel (config tls)"))
	}
	snd := &transfer.Sender{Address: job.TargetAddress, TLS: s.TLS, StallTimeout: job.TargetStallTimeout}
	th, err := s.throttle(job.Target)
	if err != nil {
		return nil, err
	}
	if th != nil {
		snd.Limit = th
	}
	return snd, nil
}

func diskResult(d contract.DiskResult, r transfer.Result) contract.DiskResult {
	d.BytesRead = r.BytesRead
	d.BytesSent = r.BytesSent
	d.BytesWritten = r.BytesWritten
	d.BlocksChanged = r.BlocksChanged
	d.BlocksZero = r.BlocksZero
	d.BlocksExcluded = r.BlocksExcluded
	d.ResumedFromByte = r.ResumedFromByte
	if r.Acknowledged > d.Position {
		d.Position = r.Acknowledged
	}
	return d
}

// ConvertToReferencePoint turns the checkpoint into the next reference point.
func (s *Source) ConvertToReferencePoint(ctx context.Context, in contract.ReferencePointInput) (string, error) {
	p, err := s.provider(in.Host)
	if err != nil {
		return "", err
	}
	if err := ownCheckpoint(ctx, p, in.VMID, in.CheckpointID); err != nil {
		if errors.Is(err, provider.ErrCheckpointNotFound) {
			return "", classify(err)
		}
		return "", err
	}
	var ref string
	err = heartbeatWhile(ctx, func() error {
		var err error
		ref, err = p.ConvertToReferencePoint(ctx, in.VMID, in.CheckpointID, in.Previous)
		return err
	})
	return ref, classify(err)
}

// ReleaseCheckpoint discards a checkpoint.
func (s *Source) ReleaseCheckpoint(ctx context.Context, in contract.ReleaseInput) error {
	p, err := s.provider(in.Host)
	if err != nil {
		return err
	}
	if err := ownCheckpoint(ctx, p, in.VMID, in.CheckpointID); err != nil {
		if errors.Is(err, provider.ErrCheckpointNotFound) {
			return nil // releasing a missing checkpoint is not an error
		}
		return err
	}
	return classify(heartbeatWhile(ctx, func() error { return p.ReleaseCheckpoint(ctx, in.VMID, in.CheckpointID) }))
}

// ownCheckpoint refuses a checkpoint that replicator did not make (its name
// is not CheckpointName's): whatever id an input carries, an administrator's
// checkpoint is never released or turned into a reference point.
func ownCheckpoint(ctx context.Context, p provider.Provider, vmID, checkpointID string) error {
	cp, err := p.Checkpoint(ctx, vmID, checkpointID)
	if err != nil {
		if errors.Is(err, provider.ErrCheckpointNotFound) {
			return err
		}
		return classify(err)
	}
	if !provider.MadeByReplicator(cp.Name) {
		return nonRetryable(contract.ErrTypeBadInput, fmt.Errorf(
			"checkpoint %s of VM %s is named %q: replicator releases and converts only the checkpoints it made (named \"replicator <job> <vm>\")",
			checkpointID, vmID, cp.Name))
	}
	return nil
}

// SweepCheckpoints removes the checkpoints the job made of the VM (named by
// provider.CheckpointName) except in.Keep, the one a restore point continues
// from. Checkpoints of other jobs and of administrators are never touched.
// It returns the ids it removed. A failed or cancelled run, an activity retried
// after its checkpoint existed, or a host job that finished after its
// activity was cancelled can each leave one behind: no later run would reuse
// it, and on Hyper-V every checkpoint keeps a differencing disk growing.
func (s *Source) SweepCheckpoints(ctx context.Context, in contract.SweepInput) ([]string, error) {
	p, err := s.provider(in.Host)
	if err != nil {
		return nil, err
	}
	cps, err := p.Checkpoints(ctx, in.VMID)
	if err != nil {
		return nil, classify(err)
	}
	removed := []string{}
	for _, cp := range cps {
		if cp.ID == in.Keep || !provider.MadeByJob(cp.Name, in.Job) {
			continue
		}
		if err := p.ReleaseCheckpoint(ctx, in.VMID, cp.ID); err != nil {
			return removed, classify(fmt.Errorf("removing checkpoint %s (%q) of VM %s: %w", cp.ID, cp.Name, in.VMID, err))
		}
		s.log().Info("removed a checkpoint no run will reuse", "job", in.Job, "vm", in.VMID, "checkpoint", cp.ID, "name", cp.Name)
		removed = append(removed, cp.ID)
	}
	return removed, nil
}

// ProbeDataChannel opens the target's data channel as a transfer would (TCP,
// mutual TLS with the proxy's certificate) and pings the agent, before the
// run takes any checkpoint. Its errors name the setting at fault.
func (s *Source) ProbeDataChannel(ctx context.Context, in contract.ProbeInput) (int, error) {
	key := fmt.Sprintf("targets[%s].address", in.Target)
	// The proxy dials the address its own file gives, as transfers do (see
	// sender); the run's is the fallback.
	if s.Config != nil {
		if cfg, err := s.Config(); err == nil {
			if t, ok := cfg.Target(in.Target); ok && t.Address != "" {
				in.Address = t.Address
			}
		}
	}
	if in.Address == "" {
		return 0, nonRetryable(contract.ErrTypeBadConfig, fmt.Errorf("%s is empty", key))
	}
	if s.TLS == nil {
		return 0, nonRetryable(contract.ErrTypeBadConfig, errors.New("the proxy has no TLS certificate for the data channel (config tls)"))
	}
	v, err := transfer.Probe(ctx, in.Address, s.TLS, 10*time.Second)
	if err == nil {
		return v, nil
	}
	var pe *transfer.ProbeError
	if !errors.As(err, &pe) {
		return 0, classify(err)
	}
	var msg string
	switch pe.Fault {
	case transfer.FaultUnreachable:
		msg = fmt.Sprintf("%s %s cannot be reached from the proxy: %v", key, in.Address, pe.Err)
		if pe.Refused {
			msg = fmt.Sprintf("%s %s: connection refused, nothing listens there", key, in.Address)
		}
		if in.AgentListen != "" {
			msg += fmt.Sprintf("; the agent of target %s is running and listens on %s (its agent.listen): %s is wrong", in.Target, in.AgentListen, key)
		}
	case transfer.FaultNotAgent:
		msg = fmt.Sprintf("%s %s answers, but not as a replicator agent (%v): %s is wrong", key, in.Address, pe.Err, key)
	case transfer.FaultUntrustedAgent:
		msg = fmt.Sprintf("the agent at %s %s presents a certificate the proxy does not trust (%v): its certificate must be signed by the CA in the proxy's tls.ca", key, in.Address, pe.Err)
	case transfer.FaultRefusedSender:
		msg = fmt.Sprintf("the agent at %s %s refused the proxy's certificate (%v): the proxy's tls.cert must be signed by the CA in the agent's tls.ca", key, in.Address, pe.Err)
	}
	if pe.Fault == transfer.FaultUnreachable && !pe.Refused && in.AgentListen == "" {
		// A timeout or an unknown name may pass: Temporal retries this.
		return 0, temporal.NewApplicationError(msg, contract.ErrTypeDataChannel)
	}
	return 0, temporal.NewNonRetryableApplicationError(msg, contract.ErrTypeDataChannel, nil)
}

func (s *Source) log() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// vmConfig reads the VM's virtual hardware to keep with its restore points.
// A host that cannot say does not stop replication: the point then carries
// no configuration and a replica VM gets the provider's defaults.
func (s *Source) vmConfig(ctx context.Context, p provider.Provider, vm provider.VM) json.RawMessage {
	c, err := p.VMConfig(ctx, vm.ID)
	if err == nil {
		err = c.Check()
	}
	if err != nil {
		if s.Logger != nil {
			s.Logger.Warn("the VM's configuration could not be read; its restore points carry none", "vm", vm.Name, "id", vm.ID, "error", err)
		}
		return nil
	}
	b, err := json.Marshal(c)
	if err != nil {
		return nil
	}
	return b
}
