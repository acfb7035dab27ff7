package provider

import (
	"fmt"
	"net/netip"
	"strings"
)

// VMConfig is a VM's virtual hardware: what a replica VM must be given to run
// as its source did. It travels with every restore point, so that a replica VM
// registered on a target host (or failed over to an older point) has the
// hardware of the source at that point.
type VMConfig struct {
	// Generation is 1 (BIOS) or 2 (UEFI).
	Generation int `json:"generation"`
	// Processors is the number of virtual processors.
	Processors int `json:"processors"`
	// MemoryBytes is the startup memory; DynamicMemory says whether Hyper-V
	// may change it while the VM runs.
	MemoryBytes   int64 `json:"memoryBytes"`
	DynamicMemory bool  `json:"dynamicMemory,omitempty"`
	// SecureBoot is the UEFI secure boot setting of a generation 2 VM;
	// SecureBootTemplate names its template ("MicrosoftWindows", …) when known.
	SecureBoot         bool   `json:"secureBoot,omitempty"`
	SecureBootTemplate string `json:"secureBootTemplate,omitempty"`
	// NetworkAdapters are the VM's network adapters, in the host's order.
	NetworkAdapters []NetworkAdapter `json:"networkAdapters"`
	// Disks are the VM's virtual disks and where they are attached.
	Disks []DiskSlot `json:"disks"`
	// ReIP are the re-IP rules a failover applies inside the guest (set on
	// replica VMs from the job's reIP rules; empty on source VMs).
	ReIP []ReIPRule `json:"reIP,omitempty"`
}

// NetworkAdapter is one virtual network adapter.
type NetworkAdapter struct {
	Name string `json:"name"`
	// Switch is the virtual switch the adapter is connected to ("" when
	// it is not connected).
	Switch string `json:"switch"`
	// MAC is the adapter's address as Hyper-V writes it (12 hex digits,
	// no separators); StaticMAC says whether it is fixed or assigned by the host.
	MAC       string `json:"mac"`
	StaticMAC bool   `json:"staticMac,omitempty"`
}

// DiskSlot is one virtual disk and its place on the VM's controllers.
type DiskSlot struct {
	// ID is the provider's disk id (Disk.ID): the key of restore points.
	ID string `json:"id"`
	// Controller is "ide" or "scsi"; ControllerNumber and Location place
	// the disk on it (generation 2 VMs have SCSI only).
	Controller       string `json:"controller"`
	ControllerNumber int    `json:"controllerNumber"`
	Location         int    `json:"location"`
}

// ReIPRule changes the addresses of a guest failed over into another network:
// an address inside Source gets the same host part inside Target, with the
// rule's gateway and DNS servers.
type ReIPRule struct {
	Source  string   `json:"source"`
	Target  string   `json:"target"`
	Gateway string   `json:"gateway,omitempty"`
	DNS     []string `json:"dns,omitempty"`
}

// Limits of a configuration read from a host or a file: generous for any
// real VM, small enough that a damaged answer cannot make a caller allocate
// without bound. Hyper-V allows 240 processors, 68 network adapters and 256
// SCSI disks per VM (learn.microsoft.com, "Plan for Hyper-V scalability in
// Windows Server").
const (
	MaxProcessors      = 2048
	MaxNetworkAdapters = 128
	MaxDisks           = 1024
)

// Check validates a configuration, naming the first field that is wrong.
func (c VMConfig) Check() error {
	if c.Generation != 0 && c.Generation != 1 && c.Generation != 2 {
		return fmt.Errorf("vm configuration: generation %d (1 or 2)", c.Generation)
	}
	if c.Processors < 0 || c.Processors > MaxProcessors {
		return fmt.Errorf("vm configuration: processors %d (0 to %d)", c.Processors, MaxProcessors)
	}
	if c.MemoryBytes < 0 {
		return fmt.Errorf("vm configuration: memoryBytes %d", c.MemoryBytes)
	}
	if len(c.NetworkAdapters) > MaxNetworkAdapters {
		return fmt.Errorf("vm configuration: %d network adapters (at most %d)", len(c.NetworkAdapters), MaxNetworkAdapters)
	}
	if len(c.Disks) > MaxDisks {
		return fmt.Errorf("vm configuration: %d disks (at most %d)", len(c.Disks), MaxDisks)
	}
	for i, r := range c.ReIP {
		if err := r.Check(); err != nil {
			return fmt.Errorf("vm configuration: reIP[%d]: %w", i, err)
		}
	}
	return nil
}

// Check validates a re-IP rule: two prefixes of the same family and length,
// and addresses for the gateway and DNS servers.
func (r ReIPRule) Check() error {
	src, err := netip.ParsePrefix(r.Source)
	if err != nil {
		return fmt.Errorf("source %q: not a subnet like 10.0.0.0/24", r.Source)
	}
	dst, err := netip.ParsePrefix(r.Target)
	if err != nil {
		return fmt.Errorf("target %q: not a subnet like 10.9.0.0/24", r.Target)
	}
	if src.Addr().Is4() != dst.Addr().Is4() || src.Bits() != dst.Bits() {
		return fmt.Errorf("source %s and target %s: the subnets must have the same family and length", r.Source, r.Target)
	}
	if r.Gateway != "" {
		if _, err := netip.ParseAddr(r.Gateway); err != nil {
			return fmt.Errorf("gateway %q: not an address", r.Gateway)
		}
	}
	for i, d := range r.DNS {
		if _, err := netip.ParseAddr(d); err != nil {
			return fmt.Errorf("dns[%d] %q: not an address", i, d)
		}
	}
	return nil
}

// Apply returns the address a guest address gets under the rule: the same
// host part in the target subnet. ok is false when addr is not in the source subnet.
func (r ReIPRule) Apply(addr netip.Addr) (netip.Addr, bool) {
	src, err1 := netip.ParsePrefix(r.Source)
	dst, err2 := netip.ParsePrefix(r.Target)
	if err1 != nil || err2 != nil || !src.Masked().Contains(addr) || src.Bits() != dst.Bits() {
		return netip.Addr{}, false
	}
	a, d := addr.AsSlice(), dst.Masked().Addr().AsSlice()
	if len(a) != len(d) {
		return netip.Addr{}, false
	}
	bits := src.Bits()
	for i := range a {
		// Bits of byte i that belong to the network part.
		n := min(max(bits-8*i, 0), 8)
		mask := byte(0xff << (8 - n))
		a[i] = d[i]&mask | a[i]&^mask
	}
	out, _ := netip.AddrFromSlice(a)
	return out, true
}

// MapNetworks returns a copy of c whose adapters are connected to the
// switches mapping names for their source switch (matched without regard to
// case, as Hyper-V matches switch names); adapters on unmapped switches keep
// theirs. The re-IP rules are attached.
func (c VMConfig) MapNetworks(mapping map[string]string, reIP []ReIPRule) VMConfig {
	out := c
	out.NetworkAdapters = append([]NetworkAdapter(nil), c.NetworkAdapters...)
	out.Disks = append([]DiskSlot(nil), c.Disks...)
	for i, n := range out.NetworkAdapters {
		for from, to := range mapping {
			if strings.EqualFold(n.Switch, from) {
				out.NetworkAdapters[i].Switch = to
				break
			}
		}
	}
	out.ReIP = append([]ReIPRule(nil), reIP...)
	return out
}
