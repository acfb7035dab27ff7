package replica

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/replicator/replicator/internal/atomicfile"
	"github.com/replicator/replicator/internal/contract"
	"os"
	"time"
)

// metaVersion is the version of replica.json this release writes. It reads
// every version up to it; a later release must keep reading version 1.
const metaVersion = 1

const metaFile = "replica.json"

// VMInfo is what the replica knows of its VM.
type VMInfo struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Generation int        `json:"generation"`
	Disks      []DiskInfo `json:"disks"`
	// Config is the VM's configuration as the source host reported it
	// (provider.VMConfig as JSON); each committed point keeps a copy.
	Config json.RawMessage `json:"config,omitempty"`
}

// DiskInfo is one virtual disk of the VM.
type DiskInfo struct {
	ID         string `json:"id"`
	Size       int64  `json:"size"`
	SectorSize int    `json:"sectorSize"`
}

// metadata is the content of replica.json.
type metadata struct {
	Version int    `json:"version"`
	Job     string `json:"job"`
	VM      VMInfo `json:"vm"`
	// NextSeq numbers restore points so that their ids sort in creation order.
	NextSeq int64          `json:"nextSeq"`
	Points  []pointRecord  `json:"points"`
	Session *sessionRecord `json:"session,omitempty"`
	Merge   *mergeIntent   `json:"merge,omitempty"`
	// Lifecycle is the replica's disaster-recovery state (lifecycle.go);
	// nil means ready.
	Lifecycle *Lifecycle `json:"lifecycle,omitempty"`
}

// pointRecord is one complete restore point.
type pointRecord struct {
	ID             string            `json:"id"`
	Time           time.Time         `json:"time"`
	RunID          string            `json:"runId,omitempty"`
	CheckpointID   string            `json:"checkpointId"`
	ChangeTracking string            `json:"changeTracking"`
	BlockSize      int64             `json:"blockSize"`
	Disks          []pointDiskRecord `json:"disks"`
	// Exclusions is what the point was made without (nil: not recorded).
	Exclusions *contract.Exclusions `json:"exclusions,omitempty"`
	// Config is the VM's configuration when the point was taken.
	Config json.RawMessage `json:"config,omitempty"`
}

// pointDiskRecord locates one disk of a point: its VHDX chain, leaf first,
// down to the base (file names inside disks/<disk-id>/), and its digest file
// (inside digests/<disk-id>/).
type pointDiskRecord struct {
	ID         string   `json:"id"`
	Size       int64    `json:"size"`
	SectorSize int      `json:"sectorSize"`
	Chain      []string `json:"chain"`
	Digests    string   `json:"digests"`
}

// sessionRecord is the restore point being written.
type sessionRecord struct {
	PointID        string              `json:"pointId"`
	RunID          string              `json:"runId,omitempty"`
	CheckpointID   string              `json:"checkpointId"`
	ChangeTracking string              `json:"changeTracking"`
	BlockSize      int64               `json:"blockSize"`
	Started        time.Time           `json:"started"`
	CheckpointTime time.Time           `json:"checkpointTime"`
	Disks          []sessionDiskRecord `json:"disks"`
	// TokenHash is the SHA-256 of the session token the data channel must
	// present (hex); only its hash is kept, so the metadata cannot be
	// replayed as a credential.
	TokenHash  string               `json:"tokenHash,omitempty"`
	Exclusions *contract.Exclusions `json:"exclusions,omitempty"`
}

type sessionDiskRecord struct {
	pointDiskRecord
	// Position is the durable resume position: every byte the run meant to
	// write below it is on disk with its digest.
	Position int64 `json:"position"`
	Complete bool  `json:"complete"`
}

// mergeIntent is a retention merge recorded before any file is touched:
// for each disk, Child is merged into Base, then every file in Relink (whose
// parent was Child) is linked to Base, then Child is removed from every chain
// and deleted. Each step is idempotent and is redone by the next writer.
type mergeIntent struct {
	Point string            `json:"point"`
	Disks []mergeDiskIntent `json:"disks"`
}

type mergeDiskIntent struct {
	ID     string   `json:"id"`
	Child  string   `json:"child"`
	Base   string   `json:"base"`
	Relink []string `json:"relink,omitempty"`
}

// MetadataError is a replica.json that cannot be used.
type MetadataError struct {
	Path   string
	Offset int64 // byte offset of a syntax error, -1 if none
	Reason string
	Err    error
}

func (e *MetadataError) Error() string {
	if e.Offset >= 0 {
		return fmt.Sprintf("replica metadata %s: at byte %d: %s", e.Path, e.Offset, e.Reason)
	}
	return fmt.Sprintf("replica metadata %s: %s", e.Path, e.Reason)
}

func (e *MetadataError) Unwrap() error { return e.Err }

// ErrNoReplica is returned when a replica has no metadata yet.
var ErrNoReplica = errors.New("no replica")

func loadMeta(path string) (*metadata, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", path, ErrNoReplica)
	}
	if err != nil {
		return nil, fmt.Errorf("read replica metadata %s: %w", path, err)
	}
	var probe struct {
		Version *int `json:"version"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return nil, metaSyntaxError(path, err)
	}
	if probe.Version == nil {
		return nil, &MetadataError{Path: path, Offset: -1, Reason: "no version field: not a replica metadata file"}
	}
	if *probe.Version < 1 || *probe.Version > metaVersion {
		return nil, &MetadataError{Path: path, Offset: -1, Reason: fmt.Sprintf("version %d is not supported by this release (it reads 1 to %d)", *probe.Version, metaVersion)}
	}
	m := new(metadata)
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(m); err != nil {
		return nil, metaSyntaxError(path, err)
	}
	if err := m.check(); err != nil {
		return nil, &MetadataError{Path: path, Offset: -1, Reason: err.Error(), Err: err}
	}
	return m, nil
}

func metaSyntaxError(path string, err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return &MetadataError{Path: path, Offset: se.Offset, Reason: "damaged: " + se.Error(), Err: err}
	case errors.As(err, &te):
		return &MetadataError{Path: path, Offset: te.Offset, Reason: fmt.Sprintf("damaged: field %s: %v", te.Field, te), Err: err}
	default:
		return &MetadataError{Path: path, Offset: -1, Reason: "damaged: " + err.Error(), Err: err}
	}
}

// check validates what later code relies on, so that a hand-edited or damaged
// file gives a clear error instead of a path outside the replica.
func (m *metadata) check() error {
	if err := CheckName("vm", m.VM.ID); err != nil {
		return err
	}
	diskOK := func(where string, d pointDiskRecord) error {
		if err := CheckName("disk", d.ID); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		if len(d.Chain) == 0 {
			return fmt.Errorf("%s disk %s: empty chain", where, d.ID)
		}
		for _, f := range append(append([]string(nil), d.Chain...), d.Digests) {
			if err := CheckName("file", f); err != nil {
				return fmt.Errorf("%s disk %s: %w", where, d.ID, err)
			}
		}
		if d.Size <= 0 {
			return fmt.Errorf("%s disk %s: size %d", where, d.ID, d.Size)
		}
		return nil
	}
	seen := map[string]bool{}
	for _, p := range m.Points {
		if err := CheckName("point", p.ID); err != nil {
			return err
		}
		if seen[p.ID] {
			return fmt.Errorf("point %s listed twice", p.ID)
		}
		seen[p.ID] = true
		if p.BlockSize <= 0 {
			return fmt.Errorf("point %s: block size %d", p.ID, p.BlockSize)
		}
		for _, d := range p.Disks {
			if err := diskOK("point "+p.ID, d); err != nil {
				return err
			}
		}
	}
	if s := m.Session; s != nil {
		if err := CheckName("point", s.PointID); err != nil {
			return err
		}
		if s.BlockSize <= 0 {
			return fmt.Errorf("session %s: block size %d", s.PointID, s.BlockSize)
		}
		for _, d := range s.Disks {
			if err := diskOK("session "+s.PointID, d.pointDiskRecord); err != nil {
				return err
			}
		}
	}
	if l := m.Lifecycle; l != nil {
		if !l.State.valid() {
			return fmt.Errorf("lifecycle: state %q is not one of ready, failover, failback, permanent", l.State)
		}
		if len(l.History) > maxHistory {
			return fmt.Errorf("lifecycle: %d transitions (at most %d)", len(l.History), maxHistory)
		}
	}
	if g := m.Merge; g != nil {
		for _, d := range g.Disks {
			for _, f := range append([]string{d.ID, d.Child, d.Base}, d.Relink...) {
				if err := CheckName("merge file", f); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func saveMeta(path string, m *metadata) error {
	m.Version = metaVersion
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("encode replica metadata %s: %w", path, err)
	}
	return atomicfile.WriteFile(path, append(b, '\n'), 0o600)
}

// clone deep-copies metadata so that a failed update leaves memory unchanged.
func (m *metadata) clone() *metadata {
	b, err := json.Marshal(m)
	if err != nil {
		panic(err) // plain data: cannot fail
	}
	c := new(metadata)
	if err := json.Unmarshal(b, c); err != nil {
		panic(err)
	}
	return c
}

func (m *metadata) point(id string) (int, *pointRecord) {
	for i := range m.Points {
		if m.Points[i].ID == id {
			return i, &m.Points[i]
		}
	}
	return -1, nil
}

func (p *pointRecord) disk(id string) *pointDiskRecord {
	for i := range p.Disks {
		if p.Disks[i].ID == id {
			return &p.Disks[i]
		}
	}
	return nil
}

func (s *sessionRecord) disk(id string) *sessionDiskRecord {
	for i := range s.Disks {
		if s.Disks[i].ID == id {
			return &s.Disks[i]
		}
	}
	return nil
}
