package provider

import (
	"net/netip"
	"strings"
	"testing"
)

func TestReIPRuleApply(t *testing.T) {
	r := ReIPRule{Source: "10.0.0.0/24", Target: "10.9.0.0/24", Gateway: "10.9.0.1", DNS: []string{"10.9.0.53"}}
	if err := r.Check(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		in, want string
		ok       bool
	}{
		{"10.0.0.21", "10.9.0.21", true},
		{"10.0.0.255", "10.9.0.255", true},
		{"10.0.1.21", "", false},
		{"192.168.0.1", "", false},
	} {
		got, ok := r.Apply(netip.MustParseAddr(c.in))
		if ok != c.ok || (ok && got.String() != c.want) {
			t.Errorf("Apply(%s) = %v, %v; want %s, %v", c.in, got, ok, c.want, c.ok)
		}
	}
	// A prefix that does not end on a byte keeps the host bits of the address.
	r = ReIPRule{Source: "172.16.0.0/20", Target: "172.31.16.0/20"}
	if got, ok := r.Apply(netip.MustParseAddr("172.16.5.9")); !ok || got.String() != "172.31.21.9" {
		t.Errorf("/20: %v %v", got, ok)
	}
	r = ReIPRule{Source: "fd00:1::/64", Target: "fd00:9::/64"}
	if got, ok := r.Apply(netip.MustParseAddr("fd00:1::42")); !ok || got.String() != "fd00:9::42" {
		t.Errorf("IPv6: %v %v", got, ok)
	}
}

func TestReIPRuleCheckRefuses(t *testing.T) {
	for _, c := range []struct {
		r    ReIPRule
		want string
	}{
		{ReIPRule{Source: "10.0.0.0", Target: "10.9.0.0/24"}, "source"},
		{ReIPRule{Source: "10.0.0.0/24", Target: "10.9.0.0/16"}, "same family and length"},
		{ReIPRule{Source: "10.0.0.0/24", Target: "fd00::/24"}, "same family"},
		{ReIPRule{Source: "10.0.0.0/24", Target: "10.9.0.0/24", Gateway: "gw"}, "gateway"},
		{ReIPRule{Source: "10.0.0.0/24", Target: "10.9.0.0/24", DNS: []string{"x"}}, "dns[0]"},
	} {
		if err := c.r.Check(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error naming %q", c.r, err, c.want)
		}
	}
}

func TestMapNetworks(t *testing.T) {
	c := VMConfig{Generation: 2, NetworkAdapters: []NetworkAdapter{
		{Name: "a", Switch: "LAN", MAC: "00155D000001"},
		{Name: "b", Switch: "Storage", MAC: "00155D000002"},
		{Name: "c", Switch: ""},
	}}
	m := c.MapNetworks(map[string]string{"lan": "DR-LAN"}, []ReIPRule{{Source: "10.0.0.0/24", Target: "10.9.0.0/24"}})
	if m.NetworkAdapters[0].Switch != "DR-LAN" || m.NetworkAdapters[0].MAC != "00155D000001" ||
		m.NetworkAdapters[1].Switch != "Storage" || m.NetworkAdapters[2].Switch != "" || len(m.ReIP) != 1 {
		t.Fatalf("mapped %+v", m)
	}
	if c.NetworkAdapters[0].Switch != "LAN" || c.ReIP != nil {
		t.Fatal("MapNetworks changed its receiver")
	}
}

func TestVMConfigCheckBounds(t *testing.T) {
	for _, c := range []VMConfig{
		{Generation: 3},
		{Processors: MaxProcessors + 1},
		{MemoryBytes: -1},
		{NetworkAdapters: make([]NetworkAdapter, MaxNetworkAdapters+1)},
		{Disks: make([]DiskSlot, MaxDisks+1)},
		{ReIP: []ReIPRule{{Source: "x"}}},
	} {
		if err := c.Check(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}
