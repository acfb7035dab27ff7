package replica

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/replicator/replicator/internal/atomicfile"
)

// Store is the datastore of a target agent: one folder per job, one replica
// per VM inside it.
type Store struct {
	root   string // absolute, symbolic links resolved
	format chainFormat
}

// Open returns the store rooted at the datastore folder root, creating the
// folder if it does not exist (what the target agent does).
func Open(root string) (*Store, error) { return open(root, true, nil) }

// OpenExisting returns the store rooted at an existing datastore folder and
// creates nothing (what the operator's commands do).
func OpenExisting(root string) (*Store, error) { return open(root, false, nil) }

// OpenEncrypted is Open or OpenExisting (create false) with a key: replicas
// are encrypted at rest with it (nil: not encrypted). A datastore remembers
// whether it is encrypted, and with which key (by its id, in
// encryption.json): it refuses to be opened without its key or with
// another, and a datastore that already holds plain replicas refuses a key.
func OpenEncrypted(root string, create bool, key *Key) (*Store, error) {
	return open(root, create, key)
}

func open(root string, create bool, key *Key) (*Store, error) {
	if root == "" {
		return nil, errors.New("open datastore: no folder given")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("open datastore %s: %w", root, err)
	}
	if create {
		if err := os.MkdirAll(abs, 0o700); err != nil {
			return nil, fmt.Errorf("open datastore %s: %w", abs, err)
		}
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return nil, fmt.Errorf("open datastore %s: %w", abs, err)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return nil, fmt.Errorf("open datastore %s: %w", abs, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("open datastore %s: not a folder", abs)
	}
	st := &Store{root: real, format: vhdxChain{}}
	if err := st.checkEncryption(key, create); err != nil {
		return nil, err
	}
	if key != nil {
		st.format = sealedFormat{inner: vhdxChain{}, key: key}
	}
	return st, nil
}

type encryptionMarker struct {
	Cipher string `json:"cipher"`
	KeyID  string `json:"keyId"`
	Unit   int    `json:"unit"`
}

// checkEncryption compares the key with the datastore's marker, writing the
// marker on first use with a key.
func (s *Store) checkEncryption(key *Key, create bool) error {
	path := filepath.Join(s.root, encryptionFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		var m encryptionMarker
		if err := json.Unmarshal(b, &m); err != nil || m.KeyID == "" {
			return fmt.Errorf("open datastore %s: %s is damaged", s.root, path)
		}
		if key == nil {
			return fmt.Errorf("open datastore %s: its replicas are encrypted (key %s): set agent.encryptionKeyFile", s.root, m.KeyID)
		}
		if m.KeyID != key.ID() {
			return fmt.Errorf("open datastore %s: its replicas are encrypted with key %s, agent.encryptionKeyFile holds key %s", s.root, m.KeyID, key.ID())
		}
		return nil
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("open datastore %s: %w", s.root, err)
	case key == nil:
		return nil
	}
	entries, err := os.ReadDir(s.root)
	if err != nil {
		return fmt.Errorf("open datastore %s: %w", s.root, err)
	}
	for _, e := range entries {
		if e.IsDir() {
			return fmt.Errorf("open datastore %s: it holds replicas that are not encrypted; encryption at rest needs a new datastore", s.root)
		}
	}
	if !create {
		return fmt.Errorf("open datastore %s: it is not encrypted, but a key was given", s.root)
	}
	b, _ = json.Marshal(encryptionMarker{Cipher: "AES-256-GCM", KeyID: key.ID(), Unit: sealUnit})
	return atomicfile.WriteFile(path, append(b, '\n'), 0o600)
}

// Root returns the datastore folder.
func (s *Store) Root() string { return s.root }

// Replica returns the replica of VM vmID in job. Nothing is created until a
// writer locks it. Both names must be single, safe folder names (ErrBadName).
func (s *Store) Replica(job, vmID string) (*Replica, error) {
	if err := CheckName("job", job); err != nil {
		return nil, err
	}
	if err := CheckName("vm", vmID); err != nil {
		return nil, err
	}
	return &Replica{store: s, job: job, vmID: vmID}, nil
}

// Find returns the replica of job whose VM has id or name vm: the id is
// tried first, then the names the replicas recorded. A name that several
// replicas carry is an error listing their ids.
func (s *Store) Find(job, vm string) (*Replica, error) {
	if err := CheckName("job", job); err != nil {
		return nil, err
	}
	if CheckName("vm", vm) == nil {
		if _, err := os.Stat(filepath.Join(s.root, job, vm, metaFile)); err == nil {
			return s.Replica(job, vm)
		}
	}
	refs, err := s.Replicas()
	if err != nil {
		return nil, err
	}
	var ids, all []string
	for _, r := range refs {
		if r.Job != job {
			continue
		}
		all = append(all, fmt.Sprintf("%s (%s)", r.VMName, r.VMID))
		if r.VMName == vm {
			ids = append(ids, r.VMID)
		}
	}
	switch len(ids) {
	case 1:
		return s.Replica(job, ids[0])
	case 0:
		if len(all) == 0 {
			return nil, fmt.Errorf("job %s has no replica in the datastore %s: %w", job, s.root, ErrNoReplica)
		}
		// A replica whose metadata cannot be read has no name to match: it
		// may be the one asked for, so say what is wrong with it.
		var damaged []error
		for _, r := range refs {
			if r.Job == job && r.VMName == "" {
				if _, err := loadMeta(filepath.Join(s.root, r.Job, r.VMID, metaFile)); err != nil {
					damaged = append(damaged, err)
				}
			}
		}
		if len(damaged) > 0 {
			return nil, fmt.Errorf("job %s has no readable replica of a VM named or with id %q (replicas: %s); unreadable: %w",
				job, vm, strings.Join(all, ", "), errors.Join(damaged...))
		}
		return nil, fmt.Errorf("job %s has no replica of a VM named or with id %q (replicas: %s): %w", job, vm, strings.Join(all, ", "), ErrNoReplica)
	default:
		return nil, fmt.Errorf("job %s: several replicas carry the VM name %q (ids %s); give the id", job, vm, strings.Join(ids, ", "))
	}
}

// ReplicaRef names one replica of the datastore.
type ReplicaRef struct {
	Job    string `json:"job"`
	VMID   string `json:"vmId"`
	VMName string `json:"vmName"`
}

// Replicas lists the replicas of the datastore (those with metadata), sorted
// by job and VM id. A replica whose metadata cannot be read is listed with an
// empty name rather than hiding the others.
func (s *Store) Replicas() ([]ReplicaRef, error) {
	jobs, err := os.ReadDir(s.root)
	if err != nil {
		return nil, fmt.Errorf("list datastore %s: %w", s.root, err)
	}
	var refs []ReplicaRef
	for _, j := range jobs {
		if !j.IsDir() || CheckName("job", j.Name()) != nil {
			continue
		}
		vms, err := os.ReadDir(filepath.Join(s.root, j.Name()))
		if err != nil {
			return nil, fmt.Errorf("list datastore %s: %w", filepath.Join(s.root, j.Name()), err)
		}
		for _, v := range vms {
			if !v.IsDir() || CheckName("vm", v.Name()) != nil {
				continue
			}
			metaPath := filepath.Join(s.root, j.Name(), v.Name(), metaFile)
			if _, err := os.Stat(metaPath); err != nil {
				continue
			}
			ref := ReplicaRef{Job: j.Name(), VMID: v.Name()}
			if m, err := loadMeta(metaPath); err == nil {
				ref.VMName = m.VM.Name
			}
			refs = append(refs, ref)
		}
	}
	sort.Slice(refs, func(a, b int) bool {
		if refs[a].Job != refs[b].Job {
			return refs[a].Job < refs[b].Job
		}
		return refs[a].VMID < refs[b].VMID
	})
	return refs, nil
}

// Replica is the replica of one VM of one job.
type Replica struct {
	store *Store
	job   string
	vmID  string
}

// Job returns the job name.
func (r *Replica) Job() string { return r.job }

// VMID returns the VM id.
func (r *Replica) VMID() string { return r.vmID }

// dir resolves the replica folder inside the datastore; with create it is
// made if missing.
func (r *Replica) dir(create bool) (string, error) {
	d, err := resolveWithin(r.store.root, create, r.job, r.vmID)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("replica of VM %s in job %s under %s: %w", r.vmID, r.job, r.store.root, ErrNoReplica)
		}
		return "", err
	}
	return d, nil
}

// Info returns the VM as the replica last recorded it.
func (r *Replica) Info() (VMInfo, error) {
	_, m, err := r.load()
	if err != nil {
		return VMInfo{}, err
	}
	return m.VM, nil
}

func (r *Replica) load() (string, *metadata, error) {
	d, err := r.dir(false)
	if err != nil {
		return "", nil, err
	}
	m, err := loadMeta(filepath.Join(d, metaFile))
	if err != nil {
		return "", nil, err
	}
	return d, m, nil
}

// layout names the files of a replica folder.
type layout string

func (l layout) meta() string                  { return filepath.Join(string(l), metaFile) }
func (l layout) lock() string                  { return filepath.Join(string(l), "lock") }
func (l layout) readers() string               { return filepath.Join(string(l), "readers") }
func (l layout) diskDir(disk string) string    { return filepath.Join(string(l), "disks", disk) }
func (l layout) digestDir(disk string) string  { return filepath.Join(string(l), "digests", disk) }
func (l layout) vhdx(disk, file string) string { return filepath.Join(l.diskDir(disk), file) }
func (l layout) sums(disk, file string) string { return filepath.Join(l.digestDir(disk), file) }

func (l layout) chainPaths(disk string, chain []string) []string {
	p := make([]string, len(chain))
	for i, f := range chain {
		p[i] = l.vhdx(disk, f)
	}
	return p
}
