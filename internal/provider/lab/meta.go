package lab

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/replicator/replicator/internal/atomicfile"
	"github.com/replicator/replicator/internal/filelock"
	"github.com/replicator/replicator/internal/names"
	"github.com/replicator/replicator/internal/provider"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const (
	metaFile = "vm.json"
	lockFile = "lock"

	// configurationVersion marks the lab's own vm.json layout (Hyper-V reports
	// versions like "10.0"; the lab reports its own).
	configurationVersion = "lab-1"
	// hostVersion is the version the lab host reports.
	hostVersion = "lab-1"
)

// vmRecord is vm.json: everything the lab knows about one VM.
type vmRecord struct {
	ID                   string       `json:"id"`
	Name                 string       `json:"name"`
	State                string       `json:"state"`
	Generation           int          `json:"generation"`
	ConfigurationVersion string       `json:"configurationVersion"`
	Created              time.Time    `json:"created"`
	Disks                []diskRecord `json:"disks"`
	// Config is the VM's virtual hardware (vmconfig.go); nil in VMs made
	// before the lab kept it, which read as the defaults.
	Config *provider.VMConfig `json:"config,omitempty"`
	// ReplicaOf is the source VM id of a replica VM registered by a target
	// (replicahost.go); empty for ordinary lab VMs.
	ReplicaOf string `json:"replicaOf,omitempty"`
	// ChangeInterval numbers the change-tracking interval the VM writes in
	// now. Creating a checkpoint closes it and opens the next one.
	ChangeInterval  int64                  `json:"changeInterval"`
	Checkpoints     []checkpointRecord     `json:"checkpoints"`
	ReferencePoints []referencePointRecord `json:"referencePoints"`
}

// diskRecord is one virtual disk of a VM.
type diskRecord struct {
	// ID is the disk index, stable across checkpoints.
	ID string `json:"id"`
	// File is the file the VM writes to now, relative to the VM folder.
	File        string `json:"file"`
	VirtualSize int64  `json:"virtualSize"`
}

// checkpointRecord is a checkpoint that still holds its frozen files.
type checkpointRecord struct {
	ID      string    `json:"id"`
	Name    string    `json:"name,omitempty"`
	Created time.Time `json:"created"`
	// Consistency is what was asked for: "application" or "crash". The lab
	// has no guest to quiesce, so its data is crash-consistent either way.
	Consistency string `json:"consistency"`
	// Interval is the change interval this checkpoint closed.
	Interval int64                  `json:"interval"`
	Disks    []checkpointDiskRecord `json:"disks"`
}

// checkpointDiskRecord names the files of one disk of a checkpoint.
type checkpointDiskRecord struct {
	DiskID string `json:"diskId"`
	// Frozen is the file the checkpoint froze (relative to the VM folder).
	Frozen string `json:"frozen"`
	// Child is the differencing child created on top of Frozen.
	Child string `json:"child"`
}

// referencePointRecord is the baseline of later changed ranges: the moment
// of the checkpoint it was made from.
type referencePointRecord struct {
	ID string `json:"id"`
	// Name is the name of the checkpoint it was made from.
	Name    string    `json:"name,omitempty"`
	Created time.Time `json:"created"`
	// Interval is the change interval closed by that checkpoint: changes
	// since the reference point are the intervals after it.
	Interval int64 `json:"interval"`
}

func (r *vmRecord) checkpoint(id string) (int, bool) {
	for i := range r.Checkpoints {
		if r.Checkpoints[i].ID == id {
			return i, true
		}
	}
	return -1, false
}

func (r *vmRecord) referencePoint(id string) (int, bool) {
	for i := range r.ReferencePoints {
		if r.ReferencePoints[i].ID == id {
			return i, true
		}
	}
	return -1, false
}

func (r *vmRecord) diskIndex(id string) (int, bool) {
	for i := range r.Disks {
		if r.Disks[i].ID == id {
			return i, true
		}
	}
	return -1, false
}

// validate checks what the lab relies on, so that a hand-edited vm.json fails
// with a clear error instead of a file name that leaves the VM folder.
func (r *vmRecord) validate() error {
	if r.ID == "" || r.Name == "" {
		return errors.New("id and name are required")
	}
	for i, d := range r.Disks {
		if d.ID == "" || !localName(changeMapName(d.ID, 0)) {
			return fmt.Errorf("disks[%d].id %q: not usable in a file name", i, d.ID)
		}
		if !localName(d.File) {
			return fmt.Errorf("disks[%d].file %q: not a file name inside the VM folder", i, d.File)
		}
		if d.VirtualSize <= 0 {
			return fmt.Errorf("disks[%d].virtualSize %d: must be positive", i, d.VirtualSize)
		}
	}
	for i, c := range r.Checkpoints {
		for j, d := range c.Disks {
			if !localName(d.Frozen) || !localName(d.Child) {
				return fmt.Errorf("checkpoints[%d].disks[%d]: file names must stay inside the VM folder", i, j)
			}
		}
	}
	return nil
}

// localName reports whether name is a plain file name (no folder part).
func localName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, `/\`) && filepath.Base(name) == name
}

// validVMName reports whether a VM name is usable as the VM's folder: the
// rule of package names (which, as Hyper-V, allows spaces and any letter),
// and no leading '.', so that a VM's folder is never hidden from a listing.
func validVMName(name string) error {
	if err := names.Check("VM", name); err != nil {
		return err
	}
	if strings.HasPrefix(name, ".") {
		return fmt.Errorf("VM name %q starts with '.'", name)
	}
	return nil
}

// readRecord reads <dir>/vm.json. It needs no lock: vm.json is replaced
// atomically.
func readRecord(dir string) (*vmRecord, error) {
	p := filepath.Join(dir, metaFile)
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	r, err := parseRecord(b)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	return r, nil
}

// parseRecord decodes and checks a vm.json.
func parseRecord(b []byte) (*vmRecord, error) {
	var r vmRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	if err := r.validate(); err != nil {
		return nil, err
	}
	return &r, nil
}

// writeRecord replaces <dir>/vm.json atomically and durably: temp file,
// fsync, rename, fsync of the folder.
func writeRecord(dir string, r *vmRecord) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode vm.json of %s: %w", r.Name, err)
	}
	b = append(b, '\n')
	return atomicfile.WriteFile(filepath.Join(dir, metaFile), b, 0o644)
}

// vmLock is an exclusive flock on <vm>/lock. flock locks belong to an open
// file description, so two locks taken in one process exclude each other too.
type vmLock struct{ f *os.File }

func lockVM(dir string) (*vmLock, error) {
	p := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	if err := filelock.Lock(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	return &vmLock{f: f}, nil
}

func (l *vmLock) unlock() {
	// Closing the file releases the flock.
	l.f.Close()
}

// newUUID returns a random (version 4) UUID in its usual text form.
func newUUID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand since Go 1.24)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// File names inside a VM folder.
func baseDiskName(index int) string { return fmt.Sprintf("disk%d.vhdx", index) }

// childDiskName follows Hyper-V: <disk>_<checkpoint-id>.avhdx.
func childDiskName(frozen, checkpointID string) string {
	stem := strings.TrimSuffix(strings.TrimSuffix(frozen, ".vhdx"), ".avhdx")
	// A child of a child keeps the first disk's stem: disk0_<id2>.avhdx.
	if i := strings.IndexByte(stem, '_'); i > 0 {
		stem = stem[:i]
	}
	return stem + "_" + checkpointID + ".avhdx"
}

// changeMapName is the change map of one disk for one change interval.
func changeMapName(diskID string, interval int64) string {
	return fmt.Sprintf("disk%s.%d.cbt", diskID, interval)
}
