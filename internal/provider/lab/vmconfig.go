package lab

import (
	"context"
	"crypto/rand"
	"fmt"

	"github.com/replicator/replicator/internal/provider"
)

// Hardware is what `lab create` may set of a new VM's virtual hardware;
// zero values take the defaults of Hyper-V's New-VM for a generation 2 VM
// (one processor, 1 GiB of startup memory, secure boot on).
type Hardware struct {
	Processors  int
	MemoryBytes int64
	// Switches connects one network adapter to each named virtual switch.
	Switches []string
}

const (
	defaultProcessors = 1
	defaultMemory     = 1 << 30
	// maxLabMemory bounds --memory: 12 TiB is Hyper-V's maximum per VM
	// (learn.microsoft.com, "Plan for Hyper-V scalability in Windows Server").
	maxLabMemory = 12 << 40
)

// config turns the settings into a VM configuration with disks disks on SCSI
// controller 0 and a host-assigned MAC address per adapter.
func (hw Hardware) config(disks int) (provider.VMConfig, error) {
	c := provider.VMConfig{Generation: 2, Processors: hw.Processors, MemoryBytes: hw.MemoryBytes, SecureBoot: true,
		SecureBootTemplate: "MicrosoftWindows", NetworkAdapters: []provider.NetworkAdapter{}, Disks: []provider.DiskSlot{}}
	if c.Processors == 0 {
		c.Processors = defaultProcessors
	}
	if c.MemoryBytes == 0 {
		c.MemoryBytes = defaultMemory
	}
	if c.Processors < 1 || c.Processors > provider.MaxProcessors {
		return c, fmt.Errorf("processors %d: 1 to %d", hw.Processors, provider.MaxProcessors)
	}
	if c.MemoryBytes < 32<<20 || c.MemoryBytes > maxLabMemory || c.MemoryBytes%(2<<20) != 0 {
		// Hyper-V's startup memory is a multiple of 2 MiB, at least 32 MiB.
		return c, fmt.Errorf("memory %d bytes: a multiple of 2 MiB from 32 MiB to 12 TiB", hw.MemoryBytes)
	}
	if len(hw.Switches) > provider.MaxNetworkAdapters {
		return c, fmt.Errorf("%d network adapters: at most %d", len(hw.Switches), provider.MaxNetworkAdapters)
	}
	for i, sw := range hw.Switches {
		if sw == "" || len(sw) > 100 {
			return c, fmt.Errorf("network adapter %d: switch name %q: 1 to 100 characters", i, sw)
		}
		c.NetworkAdapters = append(c.NetworkAdapters, provider.NetworkAdapter{
			Name: "Network Adapter", Switch: sw, MAC: newMAC(),
		})
	}
	for i := 0; i < disks; i++ {
		c.Disks = append(c.Disks, provider.DiskSlot{ID: fmt.Sprint(i), Controller: "scsi", Location: i})
	}
	return c, nil
}

// newMAC returns an address in Hyper-V's default dynamic range, whose
// first three bytes are Microsoft's 00-15-5D (learn.microsoft.com, "Hyper-V
// MAC address pool"), written as Hyper-V writes it: 12 hex digits.
func newMAC() string {
	var b [3]byte
	rand.Read(b[:])
	return fmt.Sprintf("00155D%02X%02X%02X", b[0], b[1], b[2])
}

// VMConfig returns the VM's virtual hardware. A VM made before the lab kept
// it reads as the defaults, with its disks on SCSI controller 0.
func (h *Host) VMConfig(ctx context.Context, vmID string) (provider.VMConfig, error) {
	if err := ctx.Err(); err != nil {
		return provider.VMConfig{}, err
	}
	_, rec, err := h.readVM(vmID)
	if err != nil {
		return provider.VMConfig{}, err
	}
	var c provider.VMConfig
	if rec.Config != nil {
		c = *rec.Config
	} else if c, err = (Hardware{}).config(0); err != nil {
		return c, err
	}
	c.Generation = rec.Generation
	c.NetworkAdapters = append([]provider.NetworkAdapter{}, c.NetworkAdapters...)
	// Disks are the record's: a disk added since creation has its slot too.
	slots := map[string]provider.DiskSlot{}
	for _, s := range c.Disks {
		slots[s.ID] = s
	}
	c.Disks = []provider.DiskSlot{}
	for i, d := range rec.Disks {
		s, ok := slots[d.ID]
		if !ok {
			s = provider.DiskSlot{ID: d.ID, Controller: "scsi", Location: i}
		}
		c.Disks = append(c.Disks, s)
	}
	return c, nil
}

// CreateReplicaTarget makes a powered-off VM with empty disks of the given
// sizes and the given hardware (its adapters keep their MAC addresses), for
// a failback to this host. A VM of that name with the same disk sizes is
// returned as it is: a retried failback reuses what it made.
func (h *Host) CreateReplicaTarget(ctx context.Context, name string, sizes []int64, cfg provider.VMConfig) (provider.VM, error) {
	if err := ctx.Err(); err != nil {
		return provider.VM{}, err
	}
	if _, rec, err := h.readVM(name); err == nil {
		same := len(rec.Disks) == len(sizes)
		for i := 0; same && i < len(sizes); i++ {
			same = rec.Disks[i].VirtualSize == sizes[i]
		}
		if !same {
			return provider.VM{}, fmt.Errorf("lab host %s: a VM named %s exists with other disks; choose another name", h.name, name)
		}
		return h.ReplicaVM(ctx, name)
	}
	hw := Hardware{Processors: cfg.Processors, MemoryBytes: cfg.MemoryBytes}
	vm, err := CreateVMWith(h.path, name, sizes, hw)
	if err != nil {
		return provider.VM{}, err
	}
	dir, rec, l, err := h.lockedVM(vm.ID)
	if err != nil {
		return provider.VM{}, err
	}
	defer l.unlock()
	c, _ := hw.config(len(sizes))
	c.NetworkAdapters = append([]provider.NetworkAdapter{}, cfg.NetworkAdapters...)
	c.ReIP = nil
	rec.Config, rec.State = &c, "off"
	if err := writeRecord(dir, rec); err != nil {
		return provider.VM{}, err
	}
	return vmOf(dir, rec), nil
}
