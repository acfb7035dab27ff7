package hyperv

import (
	"reflect"
	"testing"
	"time"
)

func TestWQLString(t *testing.T) {
	for in, want := range map[string]string{
		"web01":                 `'web01'`,
		`O'Brien's VM`:          `'O\'Brien\'s VM'`,
		`C:\VMs\a.vhdx`:         `'C:\\VMs\\a.vhdx'`,
		`x' OR Name <> '`:       `'x\' OR Name <> \''`,
		`\' OR 1=1 --`:          `'\\\' OR 1=1 --'`,
		"Microsoft:4C0F3D7E-9A": `'Microsoft:4C0F3D7E-9A'`,
	} {
		got, err := wqlString(in)
		if err != nil || got != want {
			t.Errorf("wqlString(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := wqlString("a\nb"); err == nil {
		t.Error("a newline was accepted")
	}
	q, err := selectWhere(classComputerSystem, "Name", `x' OR Name <> '`)
	if err != nil || q != `SELECT * FROM Msvm_ComputerSystem WHERE Name = 'x\' OR Name <> \''` {
		t.Errorf("selectWhere = %q, %v", q, err)
	}
	if _, err := associatorsOf(`\\HV01\root\virtualization\v2:X.InstanceID="a}"`, classStorageAllocation); err == nil {
		t.Error("a path with a brace was accepted in ASSOCIATORS OF")
	}
}

func TestAsInt64(t *testing.T) {
	for _, tc := range []struct {
		in   any
		want int64
		ok   bool
	}{
		{int32(32768), 32768, true}, {"107374182400", 107374182400, true}, {float64(2), 2, true},
		{uint16(9), 9, true}, {uint64(1 << 40), 1 << 40, true}, {"18446744073709551615", 0, false},
		{"abc", 0, false}, {nil, 0, false}, {1.5, 0, false},
	} {
		got, ok := asInt64(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("asInt64(%#v) = %d, %v", tc.in, got, ok)
		}
	}
	if v, ok := asUint32(int32(-32768)); !ok || v != 0xFFFF8000 {
		t.Errorf("asUint32(int32(-32768)) = %d, %v", v, ok)
	}
	got, err := asInt64s([]any{"0", "4294967296", int32(7)})
	if err != nil || !reflect.DeepEqual(got, []int64{0, 4294967296, 7}) {
		t.Errorf("asInt64s = %v, %v", got, err)
	}
	if _, err := asInt64s([]any{"1", "x"}); err == nil {
		t.Error("asInt64s accepted a non-number")
	}
}

func TestParseCIMDateTime(t *testing.T) {
	got, err := parseCIMDateTime("20261124200501.123456+060")
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2026, 11, 24, 19, 5, 1, 123456000, time.UTC); !got.Equal(want) {
		t.Errorf("= %v, want %v", got, want)
	}
	for _, bad := range []string{"", "2026-11-24", "20261124200501.123456*060", "2026112420050x.123456+060"} {
		if _, err := parseCIMDateTime(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestParseEmbeddedInstance(t *testing.T) {
	f := newFake(t)
	o, err := parseEmbeddedInstance(f.rec.VHDSettings[`D:\Hyper-V\web01\Virtual Hard Disks\web01-os_0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0.avhdx`])
	if err != nil {
		t.Fatal(err)
	}
	if o.Class != "Msvm_VirtualHardDiskSettingData" || o.str("ParentPath") != `D:\Hyper-V\web01\Virtual Hard Disks\web01-os.vhdx` || o.str("VirtualDiskId") != "{5D0A1C2B-3E4F-4A5B-8C6D-7E8F9A0B1C2D}" {
		t.Errorf("parsed %+v", o)
	}
	if n, ok := o.int("MaxInternalSize"); !ok || n != 10<<30 {
		t.Errorf("MaxInternalSize = %d, %v", n, ok)
	}
	arr, err := parseEmbeddedInstance(`<INSTANCE CLASSNAME="X"><PROPERTY.ARRAY NAME="A" TYPE="string"><VALUE.ARRAY><VALUE>a</VALUE><VALUE>b</VALUE></VALUE.ARRAY></PROPERTY.ARRAY><PROPERTY NAME="N" TYPE="string"></PROPERTY></INSTANCE>`)
	if err != nil || !reflect.DeepEqual(arr.strs("A"), []string{"a", "b"}) || arr.prop("N") != nil {
		t.Errorf("arrays: %+v, %v", arr, err)
	}
	if _, err := parseEmbeddedInstance("instance of Msvm_X {};"); err == nil {
		t.Error("MOF text accepted as CIM-XML")
	}
}

func TestDiskIDs(t *testing.T) {
	for in, want := range map[string]string{
		`Microsoft:4C0F3D7E-9A8B-4E21-B6C3-1D2E3F4A5B6C\83F8638B-8DCA-4152-9EDA-2CA8B33039B4\0\0\L`: "83F8638B-8DCA-4152-9EDA-2CA8B33039B4-0-0",
		`Microsoft:9F1E2D3C-4B5A-4968-8776-A5B4C3D2E1F0\83F8638B-8DCA-4152-9EDA-2CA8B33039B4\0\0\L`: "83F8638B-8DCA-4152-9EDA-2CA8B33039B4-0-0",
		`Microsoft:odd/../id`: "odd____id",
		``:                    "disk",
	} {
		if got := diskIDOf(in); got != want {
			t.Errorf("diskIDOf(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{`D:\a\b.VHDX`: "vhdx", `D:\a\b_1234.avhdx`: "vhdx", `D:\a.vhd`: "vhd", `D:\a.avhd`: "vhd", `D:\a.img`: "raw"} {
		if got := formatOf(in); got != want {
			t.Errorf("formatOf(%q) = %q, want %q", in, got, want)
		}
	}
	if g := generationOf("Microsoft:Hyper-V:SubType:2"); g != 2 {
		t.Errorf("generation %d", g)
	}
}

func TestIsLocalHost(t *testing.T) {
	for h, want := range map[string]bool{"": true, ".": true, "localhost": true, "LOCALHOST": true, "127.0.0.1": true, "::1": true, " . ": true,
		"hv01": false, "hv01.example.com": false, "10.0.0.5": false} {
		if got := isLocalHost(h); got != want {
			t.Errorf("isLocalHost(%q) = %v, want %v", h, got, want)
		}
	}
}
