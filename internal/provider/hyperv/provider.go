package hyperv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/replicator/replicator/internal/disk"
	"github.com/replicator/replicator/internal/provider"
)

// Options tune the provider; the zero value is usable.
type Options struct {
	// JobTimeout bounds the wait for one WMI job (a checkpoint with VSS in
	// the guest can take minutes). Default 30 minutes.
	JobTimeout time.Duration
	// PollInterval is the first interval between job polls; it doubles up
	// to MaxPollInterval. Defaults 250 ms and 5 s.
	PollInterval    time.Duration
	MaxPollInterval time.Duration
	// Logger receives warnings (a VM whose details could not be read, a
	// previous reference point that could not be destroyed). Default slog.Default().
	Logger *slog.Logger
}

// Provider is one Hyper-V host reached through WMI.
type Provider struct {
	c               wmiClient
	remoteHost      string // "" for the local host
	log             *slog.Logger
	jobTimeout      time.Duration
	pollInterval    time.Duration
	maxPollInterval time.Duration
	now             func() time.Time
	sleep           func(context.Context, time.Duration) error
	// shares opens SMB sessions to a remote host's shares with shareUser's
	// credentials ("" : the worker's own account).
	shares    shareConnector
	shareUser string
}

// ownAccount reaches shares with the worker's own account: no session of its own.
type ownAccount struct{}

func (ownAccount) connect(ctx context.Context, share string) error { return nil }

var _ provider.Provider = (*Provider)(nil)

func newProvider(c wmiClient, remoteHost string, o Options) *Provider {
	p := &Provider{
		c:               c,
		remoteHost:      remoteHost,
		log:             o.Logger,
		jobTimeout:      o.JobTimeout,
		pollInterval:    o.PollInterval,
		maxPollInterval: o.MaxPollInterval,
		now:             time.Now,
		sleep:           sleepCtx,
		shares:          ownAccount{},
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	if p.jobTimeout <= 0 {
		p.jobTimeout = 30 * time.Minute
	}
	if p.pollInterval <= 0 {
		p.pollInterval = 250 * time.Millisecond
	}
	if p.maxPollInterval < p.pollInterval {
		p.maxPollInterval = max(5*time.Second, p.pollInterval)
	}
	return p
}

// isLocalHost says whether a configured WMI host means this machine.
func isLocalHost(h string) bool {
	h = strings.TrimSpace(h)
	return h == "" || h == "." || strings.EqualFold(h, "localhost") || h == "127.0.0.1" || h == "::1"
}

// Close releases the WMI connection.
func (p *Provider) Close() error { return p.c.Close() }

// Host describes the Hyper-V host.
func (p *Provider) Host(ctx context.Context) (provider.Host, error) {
	const op = "query host"
	svcs, err := p.c.Query(ctx, selectAll(classManagementService))
	if err != nil {
		return provider.Host{}, fmt.Errorf("%s: %w", op, err)
	}
	if len(svcs) == 0 {
		return provider.Host{}, &Error{Op: op, Description: classManagementService + " not found: is the Hyper-V role installed?"}
	}
	version, err := p.c.OSVersion(ctx)
	if err != nil {
		return provider.Host{}, fmt.Errorf("%s: Windows version: %w", op, err)
	}
	return provider.Host{Name: svcs[0].str("SystemName"), Kind: "hyperv", Version: version}, nil
}

// VMs lists the virtual machines of the host, sorted by name. A VM whose
// disks cannot be read is still listed (without disks) and a warning is
// logged: one VM's trouble never hides the others.
func (p *Provider) VMs(ctx context.Context) ([]provider.VM, error) {
	const op = "list VMs"
	systems, err := p.c.Query(ctx, selectAll(classComputerSystem))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	q, err := selectWhere(classSettingData, "VirtualSystemType", systemTypeRealized)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	settings, err := p.c.Query(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	byVM := make(map[string]object, len(settings))
	for _, s := range settings {
		byVM[strings.ToUpper(s.str("VirtualSystemIdentifier"))] = s
	}
	var vms []provider.VM
	for _, sys := range systems {
		vssd, ok := byVM[strings.ToUpper(sys.str("Name"))]
		if !ok {
			continue // the host itself, or a VM being created
		}
		vm, err := p.describeVM(ctx, sys, vssd)
		if err != nil {
			p.log.Warn("hyperv: cannot read the disks of a VM", "vm", vm.Name, "id", vm.ID, "err", err)
		}
		vms = append(vms, vm)
	}
	sort.Slice(vms, func(i, j int) bool {
		if vms[i].Name != vms[j].Name {
			return vms[i].Name < vms[j].Name
		}
		return vms[i].ID < vms[j].ID
	})
	return vms, nil
}

// describeVM maps a VM with its disks and says why it cannot be replicated,
// if it cannot. The VM is returned even when its disks cannot be read.
func (p *Provider) describeVM(ctx context.Context, sys, vssd object) (provider.VM, error) {
	vm := mapVM(sys, vssd)
	disks, err := p.disksOf(ctx, vssd.Path)
	vm.Disks = disks
	var reasons []string
	if r := configurationVersionReason(vm.ConfigurationVersion); r != "" {
		reasons = append(reasons, r)
	}
	for _, d := range disks {
		if d.Format != "vhdx" {
			reasons = append(reasons, fmt.Sprintf("disk %s (%s) is a %s file: only VHDX disks have resilient change tracking and recovery checkpoints (convert it with Convert-VHD)", d.ID, d.Path, formatName(d.Format)))
		}
	}
	pass, perr := p.passThroughDisksOf(ctx, vssd.Path)
	for _, d := range pass {
		reasons = append(reasons, fmt.Sprintf("disk %s (%s) is a pass-through disk: Hyper-V cannot checkpoint it (attach a VHDX instead)", d.ID, d.Path))
	}
	vm.Unsupported = strings.Join(reasons, "; ")
	return vm, errors.Join(err, perr)
}

// minRCTConfigurationVersion is the first VM configuration version with
// resilient change tracking (Windows Server 2016; learn.microsoft.com,
// "Hyper-V backup approaches" and "Supported virtual machine configuration
// versions").
const minRCTConfigurationVersion = 6.2

// configurationVersionReason says why a configuration version rules out
// RCT-based replication, or "" when it does not.
func configurationVersionReason(version string) string {
	v, err := strconv.ParseFloat(strings.TrimSpace(version), 64)
	if err != nil || v >= minRCTConfigurationVersion {
		return "" // unknown versions are left to the host to judge
	}
	return fmt.Sprintf("configuration version %s has no resilient change tracking (6.2 or later is needed: Update-VMVersion)", version)
}

func formatName(format string) string {
	switch format {
	case "vhd":
		return "VHD"
	case "vhds":
		return "VHD Set (shared)"
	default:
		return "non-VHDX (" + format + ")"
	}
}

// passThroughDisksOf lists the physical disks attached to a setting data
// (Msvm_ResourceAllocationSettingData of subtype Physical Disk Drive).
func (p *Provider) passThroughDisksOf(ctx context.Context, settingsPath string) ([]diskRef, error) {
	rasds, err := associators(ctx, p.c, settingsPath, classResourceAllocation)
	if err != nil {
		return nil, err
	}
	var refs []diskRef
	for _, r := range rasds {
		if r.str("ResourceSubType") != resourceSubTypePhysicalDisk {
			continue
		}
		path := strings.Join(r.strs("HostResource"), ",")
		refs = append(refs, diskRef{ID: diskIDOf(r.str("InstanceID")), Path: path})
	}
	return refs, nil
}

// mapVM maps Msvm_ComputerSystem and its realized Msvm_VirtualSystemSettingData.
func mapVM(sys, vssd object) provider.VM {
	state, _ := sys.int("EnabledState")
	return provider.VM{
		ID:                   sys.str("Name"),
		Name:                 sys.str("ElementName"),
		State:                stateName(state),
		Generation:           generationOf(vssd.str("VirtualSystemSubType")),
		ConfigurationVersion: vssd.str("Version"),
	}
}

// stateName maps Msvm_ComputerSystem.EnabledState of root\virtualization\v2
// to the provider's states: 2 Enabled (running), 3 Disabled (off), 6 Enabled
// but Offline (saved), 9 Quiesce (paused); 10 Starting and 32773–32779 are
// transitions (learn.microsoft.com, hyperv_v2/msvm-computersystem). The
// 32768 (paused) and 32769 (suspended) of the v1 namespace do not occur.
func stateName(enabledState int64) string {
	switch enabledState {
	case 2:
		return "running"
	case 3:
		return "off"
	case 6:
		return "saved"
	case 9:
		return "paused"
	default: // Unknown, Other, Shutting Down, Starting, Snapshotting, Saving, Stopping, Pausing, Resuming…
		return "other"
	}
}

// generationOf reads "Microsoft:Hyper-V:SubType:1" or ":2".
func generationOf(subType string) int {
	switch {
	case strings.HasSuffix(subType, ":SubType:1"):
		return 1
	case strings.HasSuffix(subType, ":SubType:2"):
		return 2
	default:
		return 0
	}
}

// diskRef is one virtual hard disk of a setting data (the VM's, or a checkpoint's).
type diskRef struct {
	ID   string
	Path string
}

// diskRefsOf lists the virtual hard disks attached to a setting data.
func (p *Provider) diskRefsOf(ctx context.Context, settingsPath string) ([]diskRef, error) {
	sasds, err := associators(ctx, p.c, settingsPath, classStorageAllocation)
	if err != nil {
		return nil, err
	}
	var refs []diskRef
	for _, s := range sasds {
		if s.str("ResourceSubType") != resourceSubTypeVirtualHD {
			continue // DVD images, pass-through disks
		}
		hr := s.strs("HostResource")
		if len(hr) == 0 || hr[0] == "" {
			continue
		}
		refs = append(refs, diskRef{ID: diskIDOf(s.str("InstanceID")), Path: hr[0]})
	}
	sort.Slice(refs, func(i, j int) bool { return refs[i].ID < refs[j].ID })
	return refs, nil
}

// disksOf lists the disks of a setting data with their virtual sizes.
func (p *Provider) disksOf(ctx context.Context, settingsPath string) ([]provider.Disk, error) {
	refs, err := p.diskRefsOf(ctx, settingsPath)
	if err != nil {
		return nil, err
	}
	disks := make([]provider.Disk, 0, len(refs))
	var errs []error
	for _, r := range refs {
		d := provider.Disk{ID: r.ID, Path: r.Path, Format: formatOf(r.Path)}
		info, err := p.vhdInfo(ctx, r.Path)
		if err != nil {
			errs = append(errs, err)
		} else {
			d.VirtualSize = info.size
		}
		disks = append(disks, d)
	}
	return disks, errors.Join(errs...)
}

// diskIDOf derives a disk id that is stable across checkpoints from the
// InstanceID of a Msvm_StorageAllocationSettingData,
// "Microsoft:<VM or snapshot GUID>\<controller>\<controller index>\<location>\L":
// the part after the GUID names the controller slot, which a checkpoint keeps.
func diskIDOf(instanceID string) string {
	parts := strings.Split(strings.TrimPrefix(instanceID, instanceIDPrefix), `\`)
	if len(parts) > 2 {
		parts = parts[1:]
		if last := parts[len(parts)-1]; last == "L" || last == "D" {
			parts = parts[:len(parts)-1]
		}
	}
	id := sanitizeID(strings.Join(parts, "-"))
	if id == "" {
		return "disk"
	}
	return id
}

// sanitizeID keeps letters, digits, '-' and '_' so the id is safe as a file name.
func sanitizeID(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		default:
			b.WriteRune('_')
		}
	}
	return b.String()
}

// formatOf names the format of a virtual disk file by its extension.
func formatOf(p string) string {
	switch strings.ToLower(path.Ext(strings.ReplaceAll(p, `\`, "/"))) {
	case ".vhdx", ".avhdx":
		return "vhdx"
	case ".vhd", ".avhd":
		return "vhd"
	case ".vhds":
		return "vhds"
	default:
		return "raw"
	}
}

// vhdInfo is what GetVirtualHardDiskSettingData says of a disk file.
type vhdInfo struct {
	size          int64
	virtualDiskID string
	parent        string // ParentPath of a differencing disk, as the host names it
}

func (p *Provider) vhdInfo(ctx context.Context, diskPath string) (vhdInfo, error) {
	op := fmt.Sprintf("GetVirtualHardDiskSettingData of %s", diskPath)
	ims, err := p.servicePath(ctx, classImageManagement)
	if err != nil {
		return vhdInfo{}, fmt.Errorf("%s: %w", op, err)
	}
	res, err := p.call(ctx, op, kindGeneric, ims, "GetVirtualHardDiskSettingData", map[string]any{"Path": diskPath}, []string{"SettingData", "Job"})
	if err != nil {
		return vhdInfo{}, err
	}
	sd, err := parseEmbeddedInstance(asString(res.Out["SettingData"]))
	if err != nil {
		return vhdInfo{}, &Error{Op: op, Description: err.Error()}
	}
	size, ok := sd.int("MaxInternalSize")
	if !ok || size <= 0 {
		return vhdInfo{}, &Error{Op: op, Description: fmt.Sprintf("MaxInternalSize %v is not a size", sd.prop("MaxInternalSize"))}
	}
	return vhdInfo{size: size, virtualDiskID: sd.str("VirtualDiskId"), parent: sd.str("ParentPath")}, nil
}

// servicePath returns the path of the single instance of a service class.
func (p *Provider) servicePath(ctx context.Context, class string) (string, error) {
	svcs, err := p.c.Query(ctx, selectAll(class))
	if err != nil {
		return "", err
	}
	if len(svcs) == 0 || svcs[0].Path == "" {
		return "", &Error{Op: "find " + class, Description: "not found: is the Hyper-V role installed?"}
	}
	return svcs[0].Path, nil
}

// findVM returns the Msvm_ComputerSystem of a VM id, or ErrVMNotFound.
func (p *Provider) findVM(ctx context.Context, vmID string) (object, error) {
	q, err := selectWhere(classComputerSystem, "Name", vmID)
	if err != nil {
		return object{}, fmt.Errorf("find VM %q: %w", vmID, err)
	}
	objs, err := p.c.Query(ctx, q)
	if err != nil {
		return object{}, fmt.Errorf("find VM %q: %w", vmID, err)
	}
	if len(objs) == 0 {
		return object{}, &Error{Op: fmt.Sprintf("find VM %q", vmID), err: provider.ErrVMNotFound}
	}
	return objs[0], nil
}

// findCheckpoint returns the Msvm_VirtualSystemSettingData of a checkpoint
// of the VM, or ErrCheckpointNotFound.
func (p *Provider) findCheckpoint(ctx context.Context, vmID, checkpointID string) (object, error) {
	op := fmt.Sprintf("find checkpoint %s of VM %s", checkpointID, vmID)
	q, err := selectWhere(classSettingData, "InstanceID", settingDataInstanceID(checkpointID))
	if err != nil {
		return object{}, fmt.Errorf("%s: %w", op, err)
	}
	objs, err := p.c.Query(ctx, q)
	if err != nil {
		return object{}, fmt.Errorf("%s: %w", op, err)
	}
	for _, o := range objs {
		t := o.str("VirtualSystemType")
		if (t == systemTypeRecovery || t == systemTypeSnapshot) && strings.EqualFold(o.str("VirtualSystemIdentifier"), vmID) {
			return o, nil
		}
	}
	return object{}, &Error{Op: op, err: provider.ErrCheckpointNotFound}
}

// CreateCheckpoint creates a recovery checkpoint (SnapshotType 32768) of the
// VM, named opts.Name, and returns its frozen disks. A VM that cannot be
// replicated (see VM.Unsupported) is refused before anything is made. An
// application-consistent checkpoint that the guest cannot give (no backup
// integration service, VSS failing) is taken again crash-consistent, with a
// warning.
func (p *Provider) CreateCheckpoint(ctx context.Context, vmID string, opts provider.CheckpointOptions) (provider.Checkpoint, error) {
	sys, err := p.findVM(ctx, vmID)
	if err != nil {
		return provider.Checkpoint{}, err
	}
	name := sys.str("ElementName")
	op := fmt.Sprintf("CreateSnapshot of VM %q (%s)", name, vmID)
	vssd, err := p.realizedSettings(ctx, vmID)
	if err != nil {
		return provider.Checkpoint{}, fmt.Errorf("%s: %w", op, err)
	}
	vm, err := p.describeVM(ctx, sys, vssd)
	if err != nil {
		return provider.Checkpoint{}, fmt.Errorf("%s: %w", op, err)
	}
	if vm.Unsupported != "" {
		return provider.Checkpoint{}, &Error{Op: op, Description: vm.Unsupported, err: provider.ErrUnsupported}
	}
	svc, err := p.servicePath(ctx, classSnapshotService)
	if err != nil {
		return provider.Checkpoint{}, fmt.Errorf("%s: %w", op, err)
	}
	made := opts.Consistency
	snap, warning, err := p.createSnapshot(ctx, op, svc, sys.Path, opts.Consistency, opts.FullBackup)
	if err != nil && opts.Consistency == provider.ApplicationConsistent && ctx.Err() == nil && Retryable(err) {
		// As Hyper-V's own production checkpoints do (the "with fallback"
		// kind), a guest that cannot freeze gets a crash-consistent point
		// rather than none. A permanent refusal (access denied, not
		// supported) would refuse the second attempt too.
		appErr := err
		made = provider.CrashConsistent
		snap, warning, err = p.createSnapshot(ctx, op, svc, sys.Path, provider.CrashConsistent, opts.FullBackup)
		warning = provider.JoinWarnings(fmt.Sprintf("application-consistent checkpoint failed (%v); took a crash-consistent one", appErr), warning)
	}
	if err != nil {
		return provider.Checkpoint{}, err
	}
	if opts.Name != "" && snap.str("ElementName") != opts.Name {
		if err := p.rename(ctx, snap, opts.Name); err != nil {
			// Replicator releases, reuses and sweeps only the checkpoints
			// that carry its name: an unnamed one would be left behind.
			// It is destroyed now and the attempt fails (retryably, as the
			// rename's error says).
			p.log.Warn("hyperv: cannot name the checkpoint; destroying it", "vm", name, "checkpoint", snap.str("InstanceID"), "err", err)
			if derr := p.ReleaseCheckpoint(ctx, vmID, checkpointIDOf(snap.str("InstanceID"))); derr != nil {
				return provider.Checkpoint{}, fmt.Errorf("%w; destroying the unnamed checkpoint also failed: %v", err, derr)
			}
			return provider.Checkpoint{}, err
		} else if named, err := p.c.Get(ctx, snap.Path); err == nil {
			snap = named
		}
	}
	cp, err := p.checkpointOf(ctx, vmID, snap)
	if err != nil {
		return provider.Checkpoint{}, err
	}
	cp.Warning, cp.Consistency = warning, made
	return cp, nil
}

// createSnapshot runs CreateSnapshot at one consistency level and returns
// the snapshot's setting data and the job's warning.
func (p *Provider) createSnapshot(ctx context.Context, op, svc, vmPath string, c provider.Consistency, full bool) (object, string, error) {
	backupType := guestBackupTypeCopy
	if full {
		backupType = guestBackupTypeFull
	}
	settings, err := p.c.EmbeddedInstance(ctx, classSnapshotSettingData, map[string]any{
		"ConsistencyLevel":            consistencyLevel(c),
		"IgnoreNonSnapshottableDisks": true,
		"GuestBackupType":             backupType,
	})
	if err != nil {
		return object{}, "", fmt.Errorf("%s: snapshot settings: %w", op, err)
	}
	res, err := p.call(ctx, op, kindGeneric, svc, "CreateSnapshot", map[string]any{
		"AffectedSystem":   vmPath,
		"SnapshotSettings": settings,
		"SnapshotType":     snapshotTypeRecovery,
	}, []string{"ResultingSnapshot", "Job"})
	if err != nil {
		return object{}, "", err
	}
	snap, err := p.resultingObject(ctx, op, res, "ResultingSnapshot", classSettingData)
	return snap, res.warning, err
}

// rename sets a setting data's ElementName through
// Msvm_VirtualSystemManagementService.ModifySystemSettings, which takes the
// whole instance with the property changed (learn.microsoft.com,
// hyperv_v2/msvm-virtualsystemmanagementservice-modifysystemsettings).
func (p *Provider) rename(ctx context.Context, settings object, name string) error {
	op := fmt.Sprintf("ModifySystemSettings (ElementName %q) of %s", name, settings.str("InstanceID"))
	svc, err := p.servicePath(ctx, classManagementService)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	text, err := p.c.ModifiedInstance(ctx, settings.Path, map[string]any{"ElementName": name})
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	_, err = p.call(ctx, op, kindGeneric, svc, "ModifySystemSettings", map[string]any{"SystemSettings": text}, []string{"Job"})
	return err
}

// realizedSettings returns the VM's own (realized) Msvm_VirtualSystemSettingData.
func (p *Provider) realizedSettings(ctx context.Context, vmID string) (object, error) {
	q, err := selectWhere(classSettingData, "VirtualSystemIdentifier", vmID)
	if err != nil {
		return object{}, err
	}
	objs, err := p.c.Query(ctx, q)
	if err != nil {
		return object{}, err
	}
	for _, o := range objs {
		if o.str("VirtualSystemType") == systemTypeRealized {
			return o, nil
		}
	}
	return object{}, &Error{Op: "read settings of VM " + vmID, err: provider.ErrVMNotFound}
}

// Values of CreateSnapshot and Msvm_VirtualSystemSnapshotSettingData
// (learn.microsoft.com, hyperv_v2/msvm-virtualsystemsnapshotsettingdata):
// SnapshotType 32768 makes a recovery checkpoint (Microsoft's
// xHyper-VBackup sample); ConsistencyLevel 1 application-consistent, 2
// crash-consistent; GuestBackupType 2 is a copy backup, which leaves the
// guest applications' logs alone (a replica is not the backup of record), 1 a
// full backup.
const (
	snapshotTypeRecovery   = uint16(32768)
	consistencyApplication = uint16(1)
	consistencyCrash       = uint16(2)
	guestBackupTypeCopy    = uint16(2)
	guestBackupTypeFull    = uint16(1)
)

func consistencyLevel(c provider.Consistency) uint16 {
	if c == provider.ApplicationConsistent {
		return consistencyApplication
	}
	return consistencyCrash
}

// resultingObject finds the object a method created: from its REF out
// parameter when the method completed at once, else through the job's
// Msvm_AffectedJobElement association.
func (p *Provider) resultingObject(ctx context.Context, op string, res result, outParam, class string) (object, error) {
	if ref := asString(res.Out[outParam]); ref != "" {
		o, err := p.c.Get(ctx, ref)
		if err != nil {
			return object{}, fmt.Errorf("%s: read %s: %w", op, outParam, err)
		}
		return o, nil
	}
	job := asString(res.Out["Job"])
	q, err := associatorsOf(job, class)
	if err != nil {
		return object{}, &Error{Op: op, Description: "neither " + outParam + " nor a job was returned"}
	}
	objs, err := p.c.Query(ctx, q)
	if err != nil {
		return object{}, fmt.Errorf("%s: read %s from job: %w", op, outParam, err)
	}
	if len(objs) == 0 {
		return object{}, &Error{Op: op, Description: "the job completed but names no " + class}
	}
	return objs[0], nil
}

// checkpointOf builds the provider's view of a checkpoint setting data.
func (p *Provider) checkpointOf(ctx context.Context, vmID string, snap object) (provider.Checkpoint, error) {
	id := checkpointIDOf(snap.str("InstanceID"))
	cp := provider.Checkpoint{ID: id, Name: snap.str("ElementName"), VMID: vmID}
	if ct := snap.str("CreationTime"); ct != "" {
		t, err := parseCIMDateTime(ct)
		if err != nil {
			return provider.Checkpoint{}, &Error{Op: "read checkpoint " + id, Description: err.Error()}
		}
		cp.Created = t
	}
	disks, err := p.disksOf(ctx, snap.Path)
	if err != nil {
		return provider.Checkpoint{}, fmt.Errorf("read disks of checkpoint %s of VM %s: %w", id, vmID, err)
	}
	for _, d := range disks {
		cp.Disks = append(cp.Disks, provider.CheckpointDisk{DiskID: d.ID, Path: d.Path, VirtualSize: d.VirtualSize})
	}
	return cp, nil
}

// Checkpoint returns an existing checkpoint, or ErrCheckpointNotFound.
func (p *Provider) Checkpoint(ctx context.Context, vmID, checkpointID string) (provider.Checkpoint, error) {
	snap, err := p.findCheckpoint(ctx, vmID, checkpointID)
	if err != nil {
		return provider.Checkpoint{}, err
	}
	return p.checkpointOf(ctx, vmID, snap)
}

// Checkpoints lists the VM's checkpoints (standard and recovery), oldest first.
func (p *Provider) Checkpoints(ctx context.Context, vmID string) ([]provider.Checkpoint, error) {
	op := fmt.Sprintf("list checkpoints of VM %s", vmID)
	q, err := selectWhere(classSettingData, "VirtualSystemIdentifier", vmID)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	objs, err := p.c.Query(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	var out []provider.Checkpoint
	for _, o := range objs {
		if t := o.str("VirtualSystemType"); t != systemTypeRecovery && t != systemTypeSnapshot {
			continue
		}
		cp, err := p.checkpointOf(ctx, vmID, o)
		if err != nil {
			return nil, err
		}
		out = append(out, cp)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// checkpointDisk returns one disk of a checkpoint, or ErrCheckpointNotFound
// when the checkpoint has no disk of that id.
func (p *Provider) checkpointDisk(ctx context.Context, vmID, checkpointID, diskID string) (provider.CheckpointDisk, error) {
	cp, err := p.Checkpoint(ctx, vmID, checkpointID)
	if err != nil {
		return provider.CheckpointDisk{}, err
	}
	for _, d := range cp.Disks {
		if d.DiskID == diskID {
			return d, nil
		}
	}
	return provider.CheckpointDisk{}, &Error{Op: fmt.Sprintf("find disk %s of checkpoint %s of VM %s", diskID, checkpointID, vmID), err: provider.ErrCheckpointNotFound}
}

// OpenDisk opens the frozen disk file of a checkpoint (on a remote host,
// through its administrative share).
func (p *Provider) OpenDisk(ctx context.Context, vmID, checkpointID, diskID string) (disk.Image, error) {
	d, err := p.checkpointDisk(ctx, vmID, checkpointID, diskID)
	if err != nil {
		return nil, err
	}
	name := hostFilePath(p.remoteHost, d.Path)
	if f := formatOf(d.Path); f != "vhdx" {
		return nil, &Error{Op: fmt.Sprintf("open disk %s of checkpoint %s", name, checkpointID), Description: "only VHDX disks can be read; convert this " + f + " disk to VHDX (Convert-VHD)"}
	}
	img, err := p.openHostFile(ctx, d.Path)
	if err != nil {
		return nil, fmt.Errorf("open disk %s of checkpoint %s: %w", name, checkpointID, err)
	}
	return img, nil
}

// ChangedRanges returns the ranges of a checkpoint's disk that changed since
// the reference point, through Resilient Change Tracking.
func (p *Provider) ChangedRanges(ctx context.Context, vmID, checkpointID, diskID, referencePoint string) ([]disk.Extent, error) {
	op := fmt.Sprintf("GetVirtualDiskChanges of disk %s of VM %s", diskID, vmID)
	if referencePoint == "" {
		return nil, &Error{Op: op, Description: "no reference point", err: provider.ErrNoChangeTracking}
	}
	d, err := p.checkpointDisk(ctx, vmID, checkpointID, diskID)
	if err != nil {
		return nil, err
	}
	rp, err := p.findReferencePoint(ctx, referencePoint)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if rp.Path == "" || !strings.EqualFold(rp.str("VirtualSystemIdentifier"), vmID) {
		return nil, &Error{Op: op, Description: "reference point " + referencePoint + " is gone", err: provider.ErrNoChangeTracking}
	}
	info, err := p.vhdInfo(ctx, d.Path)
	if err != nil {
		return nil, err
	}
	rctID, err := rctIDFor(rp, diskID, info.virtualDiskID)
	if err != nil {
		return nil, &Error{Op: op, Description: err.Error(), err: provider.ErrNoChangeTracking}
	}
	ims, err := p.servicePath(ctx, classImageManagement)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return p.diskChanges(ctx, op, ims, d.Path, rctID, info.size)
}

// rctIDFor picks the RCT id of one disk from a reference point, whose
// VirtualDiskIdentifiers and ResilientChangeTrackingIdentifiers are
// index-aligned. VirtualDiskIdentifiers hold the InstanceIDs of the VM's
// Msvm_StorageAllocationSettingData (learn.microsoft.com, hyperv_v2/
// msvm-virtualsystemreferencepoint; Bareos' Hyper-V plugin resolves them so
// on real hosts): the controller slot they name is the disk's id. A VHDX
// VirtualDiskId GUID is accepted as well, for hosts that give one.
func rctIDFor(rp object, diskID, virtualDiskID string) (string, error) {
	disks := rp.strs("VirtualDiskIdentifiers")
	rcts := rp.strs("ResilientChangeTrackingIdentifiers")
	if len(disks) != len(rcts) {
		return "", fmt.Errorf("reference point %s lists %d disks but %d RCT ids", rp.str("InstanceID"), len(disks), len(rcts))
	}
	norm := func(s string) string { return strings.ToUpper(strings.Trim(s, "{}")) }
	for i, d := range disks {
		if rcts[i] == "" {
			continue
		}
		if strings.HasPrefix(d, instanceIDPrefix) && strings.Contains(d, `\`) && diskIDOf(d) == diskID {
			return rcts[i], nil
		}
		if virtualDiskID != "" && norm(d) == norm(virtualDiskID) {
			return rcts[i], nil
		}
	}
	return "", fmt.Errorf("reference point %s has no RCT id for disk %s", rp.str("InstanceID"), diskID)
}

// findReferencePoint returns the reference point of that InstanceID, or a
// zero object when it does not exist.
func (p *Provider) findReferencePoint(ctx context.Context, instanceID string) (object, error) {
	q, err := selectWhere(classReferencePoint, "InstanceID", instanceID)
	if err != nil {
		return object{}, err
	}
	objs, err := p.c.Query(ctx, q)
	if err != nil {
		return object{}, err
	}
	if len(objs) == 0 {
		return object{}, nil
	}
	return objs[0], nil
}

// ConvertToReferencePoint turns the checkpoint into a reference point (which
// deletes the checkpoint), and only then destroys the previous reference
// point, so that a failed conversion leaves the previous baseline usable.
// The new reference point's InstanceID is returned.
func (p *Provider) ConvertToReferencePoint(ctx context.Context, vmID, checkpointID, previousReferencePoint string) (string, error) {
	snap, err := p.findCheckpoint(ctx, vmID, checkpointID)
	if err != nil {
		return "", err
	}
	op := fmt.Sprintf("ConvertToReferencePoint of checkpoint %s of VM %s", checkpointID, vmID)
	svc, err := p.servicePath(ctx, classSnapshotService)
	if err != nil {
		return "", fmt.Errorf("%s: %w", op, err)
	}
	res, err := p.call(ctx, op, kindCheckpoint, svc, "ConvertToReferencePoint", map[string]any{
		"AffectedSnapshot": snap.Path,
	}, []string{"ResultingReferencePoint", "Job"})
	if err != nil {
		return "", err
	}
	rp, err := p.resultingObject(ctx, op, res, "ResultingReferencePoint", classReferencePoint)
	if err != nil {
		return "", err
	}
	newID := rp.str("InstanceID")
	if newID == "" {
		return "", &Error{Op: op, Description: "the reference point has no InstanceID"}
	}
	if previousReferencePoint != "" && previousReferencePoint != newID {
		if err := p.destroyReferencePoint(ctx, vmID, previousReferencePoint); err != nil {
			// The new baseline is in place; an old reference point left
			// behind only costs its tracking files, so this is not a failure
			// of the run.
			p.log.Warn("hyperv: cannot destroy the previous reference point", "vm", vmID, "referencePoint", previousReferencePoint, "err", err)
		}
	}
	return newID, nil
}

func (p *Provider) destroyReferencePoint(ctx context.Context, vmID, instanceID string) error {
	op := fmt.Sprintf("DestroyReferencePoint %s of VM %s", instanceID, vmID)
	rp, err := p.findReferencePoint(ctx, instanceID)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if rp.Path == "" {
		return nil // already gone
	}
	svc, err := p.servicePath(ctx, classReferencePointSvc)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	_, err = p.call(ctx, op, kindGeneric, svc, "DestroyReferencePoint", map[string]any{"AffectedReferencePoint": rp.Path}, []string{"Job"})
	return err
}

// ReleaseCheckpoint destroys the checkpoint (Hyper-V merges its differencing
// disks back). A checkpoint that no longer exists is not an error.
func (p *Provider) ReleaseCheckpoint(ctx context.Context, vmID, checkpointID string) error {
	snap, err := p.findCheckpoint(ctx, vmID, checkpointID)
	if errors.Is(err, provider.ErrCheckpointNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	op := fmt.Sprintf("DestroySnapshot of checkpoint %s of VM %s", checkpointID, vmID)
	svc, err := p.servicePath(ctx, classSnapshotService)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	_, err = p.call(ctx, op, kindCheckpoint, svc, "DestroySnapshot", map[string]any{"AffectedSnapshot": snap.Path}, []string{"Job"})
	if errors.Is(err, provider.ErrCheckpointNotFound) {
		return nil
	}
	return err
}
