package hvsim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/replicator/replicator/internal/atomicfile"
	"github.com/replicator/replicator/internal/filelock"
	"github.com/replicator/replicator/internal/provider"
	"github.com/replicator/replicator/internal/provider/hyperv"
	"github.com/replicator/replicator/internal/provider/lab"
)

// Options tune the simulated host.
type Options struct {
	// JobDelay is how long every job runs before it ends (0: it ends at the
	// first look).
	JobDelay time.Duration
	// JobWarnings makes every successful job end in 32768, completed with
	// warnings.
	JobWarnings bool
	// HostName is the host's name in WMI paths (default HVSIM).
	HostName string
}

// Sim is one simulated Hyper-V host over a lab folder. It implements
// hyperv.WMI; methods may be called from several goroutines and processes.
type Sim struct {
	dir  string
	lab  *lab.Host
	opts Options
	now  func() time.Time
	mu   sync.Mutex // in-process half of the .hvsim/lock flock
}

var _ hyperv.WMI = (*Sim)(nil)

// stateDir is the simulator's own state inside the host folder; lab listings
// skip it (it holds no vm.json).
const stateDir = ".hvsim"

// Open returns the simulated host whose VMs are the lab VMs of dir.
func Open(name, dir string, o Options) (*Sim, error) {
	if o.HostName == "" {
		o.HostName = "HVSIM"
	}
	if o.JobDelay < 0 {
		return nil, fmt.Errorf("hyperv simulator %s: job delay %s is negative", name, o.JobDelay)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{abs, filepath.Join(abs, stateDir, "jobs"), filepath.Join(abs, stateDir, "vms")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("hyperv simulator %s: %w", name, err)
		}
	}
	return &Sim{dir: abs, lab: lab.New(name, abs), opts: o, now: time.Now}, nil
}

// NewProvider returns the Hyper-V provider over a simulated host.
func NewProvider(name, dir string, o Options, po hyperv.Options) (*hyperv.Provider, error) {
	s, err := Open(name, dir, o)
	if err != nil {
		return nil, err
	}
	return hyperv.NewOverWMI(s, po), nil
}

// Lab is the lab host that holds the simulated VMs' disks.
func (s *Sim) Lab() *lab.Host { return s.lab }

// Close releases nothing: every call opens what it needs.
func (s *Sim) Close() error { return nil }

// OSVersion is Windows Server 2019's (learn.microsoft.com, "Windows Server
// release information": 10.0.17763).
func (s *Sim) OSVersion(ctx context.Context) (string, error) { return "10.0.17763", nil }

// locked runs f holding the host's lock, after every due job has ended.
func (s *Sim) locked(ctx context.Context, f func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	lf, err := os.OpenFile(filepath.Join(s.dir, stateDir, "lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return s.unreachable(err)
	}
	defer lf.Close()
	if err := filelock.Lock(lf); err != nil {
		return s.unreachable(err)
	}
	if err := s.advanceJobs(ctx); err != nil {
		return err
	}
	return f()
}

// unreachable is what a WMI client sees of a host it cannot reach.
func (s *Sim) unreachable(err error) error {
	return fmt.Errorf("hyperv simulator at %s: %w: %v", s.dir, provider.ErrHostUnreachable, err)
}

// vmAttributes are what a lab VM lacks of a Hyper-V VM, set with SetVM.
type vmAttributes struct {
	// ConfigurationVersion overrides the default 9.0 (Windows Server 2019's).
	ConfigurationVersion string `json:"configurationVersion,omitempty"`
	// ExtraDisks are disks beside the lab's VHDX files.
	ExtraDisks []ExtraDisk `json:"extraDisks,omitempty"`
	// NoGuestFreeze: the guest cannot be quiesced (no backup integration
	// service): application-consistent checkpoints fail.
	NoGuestFreeze bool `json:"noGuestFreeze,omitempty"`
}

// ExtraDisk is a disk the simulator lists without a file behind it.
type ExtraDisk struct {
	// Kind is "vhd", "vhds" (VHD Set) or "passthrough".
	Kind string `json:"kind"`
	// Path is the file (vhd, vhds) or the host disk (passthrough).
	Path string `json:"path"`
	// Size in bytes.
	Size int64 `json:"size"`
}

// VMOptions changes what a simulated VM looks like.
type VMOptions struct {
	ConfigurationVersion string
	ExtraDisks           []ExtraDisk
	NoGuestFreeze        bool
}

// SetVM sets attributes of a VM (by name or id) that lab VMs do not have.
func (s *Sim) SetVM(ctx context.Context, vm string, o VMOptions) error {
	for _, d := range o.ExtraDisks {
		switch d.Kind {
		case "vhd", "vhds", "passthrough":
		default:
			return fmt.Errorf("hyperv simulator: extra disk %q: kind %q: want vhd, vhds or passthrough", d.Path, d.Kind)
		}
	}
	return s.locked(ctx, func() error {
		v, err := s.findVM(ctx, vm)
		if err != nil {
			return err
		}
		b, err := json.MarshalIndent(vmAttributes(o), "", "  ")
		if err != nil {
			return err
		}
		return atomicfile.WriteFile(filepath.Join(s.dir, stateDir, "vms", v.ID+".json"), b, 0o644)
	})
}

func (s *Sim) attributes(vmID string) vmAttributes {
	var a vmAttributes
	b, err := os.ReadFile(filepath.Join(s.dir, stateDir, "vms", vmID+".json"))
	if err == nil {
		_ = json.Unmarshal(b, &a)
	}
	return a
}

func (s *Sim) findVM(ctx context.Context, vm string) (provider.VM, error) {
	vms, err := s.lab.VMs(ctx)
	if err != nil {
		return provider.VM{}, err
	}
	for _, v := range vms {
		if v.ID == vm || v.Name == vm {
			return v, nil
		}
	}
	return provider.VM{}, fmt.Errorf("hyperv simulator: VM %q: %w", vm, provider.ErrVMNotFound)
}

// Query answers the WQL the provider asks: SELECT * FROM class [WHERE prop =
// 'value'] and ASSOCIATORS OF {path} WHERE ResultClass = class. WQL compares
// strings without regard to case (learn.microsoft.com, "WQL operators").
func (s *Sim) Query(ctx context.Context, wql string) ([]hyperv.Object, error) {
	var out []hyperv.Object
	err := s.locked(ctx, func() error {
		objs, err := s.objects(ctx)
		if err != nil {
			return err
		}
		if m := selectRE.FindStringSubmatch(wql); m != nil {
			class, prop, lit := m[1], m[3], m[4]
			for _, o := range objs {
				if o.obj.Class != class {
					continue
				}
				if prop != "" && !strings.EqualFold(fmt.Sprint(o.obj.Props[prop]), unquoteWQL(lit)) {
					continue
				}
				out = append(out, o.obj)
			}
			return nil
		}
		if m := associatorsRE.FindStringSubmatch(wql); m != nil {
			from, class := m[1], m[2]
			if made, ok := s.affectedBy(from); ok {
				for _, o := range objs {
					if o.obj.Class == class && strings.EqualFold(o.obj.Path, made) {
						out = append(out, o.obj)
					}
				}
				return nil
			}
			for _, o := range objs {
				if o.obj.Class == class && o.associated(from) {
					out = append(out, o.obj)
				}
			}
			return nil
		}
		return &wmiError{op: wql, hr: 0x80041017, text: "invalid query"} // WBEM_E_INVALID_QUERY
	})
	return out, err
}

var (
	selectRE      = regexp.MustCompile(`^SELECT \* FROM (\w+)( WHERE (\w+) = '((?:[^'\\]|\\.)*)')?$`)
	associatorsRE = regexp.MustCompile(`^ASSOCIATORS OF \{([^{}]+)\} WHERE ResultClass = (\w+)$`)
)

// unquoteWQL undoes the backslash escapes of a WQL string literal.
func unquoteWQL(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// wmiError is a failed WMI call with its HRESULT, as COM reports it.
type wmiError struct {
	op   string
	hr   uint32
	text string
}

func (e *wmiError) Error() string { return fmt.Sprintf("%s: %s (HRESULT 0x%08X)", e.op, e.text, e.hr) }

// Get returns the object at path, WBEM_E_NOT_FOUND if there is none.
func (s *Sim) Get(ctx context.Context, path string) (hyperv.Object, error) {
	var out hyperv.Object
	err := s.locked(ctx, func() error {
		objs, err := s.objects(ctx)
		if err != nil {
			return err
		}
		for _, o := range objs {
			if strings.EqualFold(o.obj.Path, path) {
				out = o.obj
				return nil
			}
		}
		return &wmiError{op: "get " + path, hr: 0x80041002, text: "not found"}
	})
	return out, err
}

// EmbeddedInstance renders a new instance of class with props set.
func (s *Sim) EmbeddedInstance(ctx context.Context, class string, props map[string]any) (string, error) {
	return renderInstance(class, props), nil
}

// ModifiedInstance renders the object at path with props changed.
func (s *Sim) ModifiedInstance(ctx context.Context, path string, props map[string]any) (string, error) {
	o, err := s.Get(ctx, path)
	if err != nil {
		return "", err
	}
	merged := map[string]any{}
	for k, v := range o.Props {
		merged[k] = v
	}
	for k, v := range props {
		merged[k] = v
	}
	return renderInstance(o.Class, merged), nil
}

// isNotExist reports a missing file or folder.
func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }

// Settle ends the jobs whose time has come, as the host would have without
// anyone looking, so that a listing of the lab folder shows the host as it is.
func (s *Sim) Settle(ctx context.Context) error {
	return s.locked(ctx, func() error { return nil })
}
