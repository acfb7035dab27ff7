package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/provider"
	"github.com/replicator/replicator/internal/provider/hyperv/hvsim"
	"github.com/replicator/replicator/internal/provider/lab"
)

func newLabCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Manage lab VMs, the stand-in for a Hyper-V host where none exists",
		Long: "Manage the VMs of a lab host or of a simulated Hyper-V host (a configured host\n" +
			"with provider lab or hyperv-sim; with no configuration, the lab of the --dev\n" +
			"stack under --data-dir, which `workers --dev --hyperv-sim` serves simulated).",
	}
	cmd.PersistentFlags().String("host", "", "lab or hyperv-sim host of the configuration (default: the first such host)")
	cmd.AddCommand(newLabCreateCommand(), newLabWriteCommand(), newLabListCommand())
	return cmd
}

// labHost opens the lab host named by --host (a source host, or the
// target's agent.host where replica VMs are registered), or the first lab
// host of the configuration. A hyperv-sim host keeps its VMs as a lab host
// does; its jobs whose time has come are ended first, so that what is listed
// is the host as it is.
func labHost(cmd *cobra.Command) (*lab.Host, error) {
	cfg, err := loadConfig(cmd)
	if err != nil {
		return nil, err
	}
	name := flagValue(cmd, "host")
	for _, h := range cfg.Hosts {
		if name != "" && h.Name != name {
			continue
		}
		switch h.Provider {
		case "lab":
			return lab.New(h.Name, h.Path), nil
		case "hyperv-sim":
			s, err := hvsim.Open(h.Name, h.Path, hvsim.Options{JobDelay: h.Simulator.JobDelay, JobWarnings: h.Simulator.JobWarnings})
			if err != nil {
				return nil, err
			}
			if err := s.Settle(cmd.Context()); err != nil {
				return nil, fmt.Errorf("host %s: %w", h.Name, err)
			}
			return s.Lab(), nil
		}
		if name != "" {
			return nil, fmt.Errorf("host %s has provider %s, not lab or hyperv-sim", name, h.Provider)
		}
	}
	// The target's own host, where replica VMs are registered.
	if h := cfg.Agent.Host; name != "" && h.Name == name {
		if h.Provider != "lab" {
			return nil, fmt.Errorf("host %s (agent.host) has provider %s, not lab", name, h.Provider)
		}
		return lab.New(h.Name, h.Path), nil
	}
	if name != "" {
		return nil, fmt.Errorf("no host %q in the configuration", name)
	}
	return nil, errors.New("no host with provider lab or hyperv-sim in the configuration")
}

func newLabCreateCommand() *cobra.Command {
	var sizes, nics []string
	var memory string
	var cpus int
	cmd := &cobra.Command{
		Use:   "create VM --disk SIZE [--disk SIZE...] [--cpus N] [--memory SIZE] [--nic SWITCH...]",
		Short: "Create a lab VM with empty dynamic VHDX disks (sizes like 256MiB, 1GiB)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(sizes) == 0 {
				return errors.New("lab create: give at least one --disk SIZE")
			}
			format, err := outputFormat(cmd, outputText)
			if err != nil {
				return err
			}
			var bytes []int64
			for i, s := range sizes {
				n, err := config.ParseByteSize(s)
				if err != nil {
					return fmt.Errorf("lab create: --disk #%d %q: %w", i+1, s, err)
				}
				bytes = append(bytes, int64(n))
			}
			hw := lab.Hardware{Processors: cpus, Switches: nics}
			if memory != "" {
				n, err := config.ParseByteSize(memory)
				if err != nil {
					return fmt.Errorf("lab create: --memory %q: %w", memory, err)
				}
				hw.MemoryBytes = int64(n)
			}
			if cmd.Flags().Changed("cpus") && cpus < 1 {
				return fmt.Errorf("lab create: --cpus %d: at least 1", cpus)
			}
			h, err := labHost(cmd)
			if err != nil {
				return err
			}
			vm, err := lab.CreateVMWith(h.Path(), args[0], bytes, hw)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if format == outputJSON {
				return printJSON(cmd, labVMOf(vm))
			}
			fmt.Fprintf(out, "created VM %s (id %s)\n", vm.Name, vm.ID)
			for _, d := range vm.Disks {
				fmt.Fprintf(out, "  disk %s: %s, %d bytes\n", d.ID, d.Path, d.VirtualSize)
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&sizes, "disk", nil, "size of a disk (repeat for more disks)")
	cmd.Flags().IntVar(&cpus, "cpus", 0, "virtual processors (default 1)")
	cmd.Flags().StringVar(&memory, "memory", "", "startup memory, a multiple of 2MiB (default 1GiB)")
	cmd.Flags().StringArrayVar(&nics, "nic", nil, "connect a network adapter to this virtual switch (repeat for more adapters)")
	return cmd
}

func newLabWriteCommand() *cobra.Command {
	var diskIndex int
	var percent float64
	var seed int64
	cmd := &cobra.Command{
		Use:   "write VM [--disk N] --percent P [--seed S]",
		Short: "Write random data over P% of a lab VM's disk, as its guest would (also during a checkpoint)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("percent") {
				return errors.New("lab write: --percent is required")
			}
			if !cmd.Flags().Changed("seed") {
				seed = time.Now().UnixNano()
			}
			h, err := labHost(cmd)
			if err != nil {
				return err
			}
			if err := h.Write(cmd.Context(), args[0], diskIndex, percent, seed); err != nil {
				return err
			}
			type written struct {
				VM      string  `json:"vm"`
				Disk    int     `json:"disk"`
				Percent float64 `json:"percent"`
				Seed    int64   `json:"seed"`
			}
			return emit(cmd, outputText, written{args[0], diskIndex, percent, seed}, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "wrote %g%% of disk %d of VM %s (seed %d)\n", percent, diskIndex, args[0], seed)
				return err
			})
		},
	}
	cmd.Flags().IntVar(&diskIndex, "disk", 0, "index of the disk to write to")
	cmd.Flags().Float64Var(&percent, "percent", 0, "share of the disk's bytes to write, more than 0 and at most 100")
	cmd.Flags().Int64Var(&seed, "seed", 0, "seed of the writes (default: from the clock); the same seed writes the same data")
	return cmd
}

// labVM is one VM as `lab ls --json` prints it.
type labVM struct {
	Name  string    `json:"name"`
	ID    string    `json:"id"`
	State string    `json:"state"`
	Disks []labDisk `json:"disks"`
	// Checkpoints and ReferencePoints the host holds of the VM, oldest first.
	Checkpoints     []labPoint `json:"checkpoints"`
	ReferencePoints []labPoint `json:"referencePoints"`
}

// labPoint is a checkpoint or reference point of a VM.
type labPoint struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
}

// labDisk is a disk as the VM sees it now: during a checkpoint, the child.
type labDisk struct {
	Path        string `json:"path"`
	VirtualSize int64  `json:"virtualSize"`
}

func labVMOf(vm provider.VM) labVM {
	out := labVM{Name: vm.Name, ID: vm.ID, State: vm.State, Disks: []labDisk{}, Checkpoints: []labPoint{}, ReferencePoints: []labPoint{}}
	for _, d := range vm.Disks {
		out.Disks = append(out.Disks, labDisk{Path: d.Path, VirtualSize: d.VirtualSize})
	}
	return out
}

// withPoints adds the VM's checkpoints and reference points.
func withPoints(ctx context.Context, h *lab.Host, vm labVM) (labVM, error) {
	cps, err := h.Checkpoints(ctx, vm.ID)
	if err != nil {
		return vm, err
	}
	for _, c := range cps {
		vm.Checkpoints = append(vm.Checkpoints, labPoint{ID: c.ID, Name: c.Name, Created: c.Created})
	}
	rps, err := h.ReferencePoints(ctx, vm.ID)
	if err != nil {
		return vm, err
	}
	for _, r := range rps {
		vm.ReferencePoints = append(vm.ReferencePoints, labPoint{ID: r.ID, Name: r.Name, Created: r.Created})
	}
	return vm, nil
}

func newLabListCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "ls [--output text|json]",
		Aliases: []string{"list"},
		Short:   "List the lab VMs and the disk files they write to now",
		Long: "List the lab VMs and the disk files they write to now. --output json (or --json)\n" +
			"prints [{name, id, state, disks: [{path, virtualSize}], checkpoints: [{id, name,\n" +
			"created}], referencePoints: [...]}].",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := outputFormat(cmd, outputText)
			if err != nil {
				return err
			}
			h, err := labHost(cmd)
			if err != nil {
				return err
			}
			list := []labVM{}
			if _, err := os.Stat(h.Path()); !errors.Is(err, fs.ErrNotExist) {
				vms, err := h.VMs(cmd.Context())
				if err != nil {
					return err
				}
				for _, vm := range vms {
					v, err := withPoints(cmd.Context(), h, labVMOf(vm))
					if err != nil {
						return err
					}
					list = append(list, v)
				}
			}
			out := cmd.OutOrStdout()
			if format == outputJSON {
				return printJSON(cmd, list)
			}
			if len(list) == 0 {
				fmt.Fprintf(out, "no VMs in %s\n", h.Path())
			}
			for _, vm := range list {
				fmt.Fprintf(out, "%s\t%s\n", vm.Name, vm.ID)
				for i, d := range vm.Disks {
					fmt.Fprintf(out, "  disk %d\t%d bytes\t%s\n", i, d.VirtualSize, d.Path)
				}
				for _, c := range vm.Checkpoints {
					fmt.Fprintf(out, "  checkpoint %s\t%s\t%q\n", c.ID, c.Created.Format(time.RFC3339), c.Name)
				}
				for _, r := range vm.ReferencePoints {
					fmt.Fprintf(out, "  reference point %s\t%s\t%q\n", r.ID, r.Created.Format(time.RFC3339), r.Name)
				}
			}
			return nil
		},
	}
	return cmd
}
