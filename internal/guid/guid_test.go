package guid

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/replicator/replicator/internal/testkit"
)

// The EFI system partition type as the UEFI specification (5.3.3, table
// "Defined GPT Partition Entry - Partition Type GUIDs") writes it, and the
// bytes a GPT entry holds for it.
const espText = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"

var espBytes = []byte{0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B}

func TestKnownVector(t *testing.T) {
	for _, s := range []string{espText, strings.ToLower(espText), "{" + espText + "}", " " + espText + "\n"} {
		g, err := Parse(s)
		if err != nil {
			t.Fatalf("Parse(%q): %v", s, err)
		}
		if !bytes.Equal(g[:], espBytes) {
			t.Errorf("Parse(%q) = % X, want % X", s, g[:], espBytes)
		}
	}
	if s := FromBytes(espBytes).String(); s != strings.ToLower(espText) {
		t.Errorf("String = %s, want %s", s, strings.ToLower(espText))
	}
}

func TestRFC9562(t *testing.T) {
	want := []byte{0xC1, 0x2A, 0x73, 0x28, 0xF8, 0x1F, 0x11, 0xD2, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B}
	if got := MustParse(espText).RFC9562(); !bytes.Equal(got[:], want) {
		t.Errorf("RFC9562() = % X, want % X", got, want)
	}
}

func TestParseRefuses(t *testing.T) {
	for _, s := range []string{"", "C12A7328F81F11D2BA4B00A0C93EC93B", "C12A7328-F81F-11D2-BA4B-00A0C93EC93", "C12A7328-F81F-11D2-BA4B-00A0C93EC93BX",
		"C12A732-8F81F-11D2-BA4B-00A0C93EC93B", "G12A7328-F81F-11D2-BA4B-00A0C93EC93B", "{C12A7328-F81F-11D2-BA4B-00A0C93EC93B"} {
		if g, err := Parse(s); err == nil {
			t.Errorf("Parse(%q) = %v, want an error", s, g)
		}
	}
}

func TestNew(t *testing.T) {
	a, b := New(), New()
	if a == b || a.IsZero() {
		t.Fatalf("New gave %v and %v", a, b)
	}
	s := a.String()
	if s[14] != '4' || !strings.ContainsRune("89ab", rune(s[19])) {
		t.Errorf("New() = %s: not version 4, variant RFC 9562", s)
	}
	if back, err := Parse(s); err != nil || back != a {
		t.Errorf("Parse(String()) = %v, %v; want %v", back, err, a)
	}
}

// sfdisk writes a GPT whose partition type, partition id and disk id it
// reports as text: the bytes it stored must read back as that text.
func TestAgainstSfdisk(t *testing.T) {
	sfdisk := testkit.RequireTool(t, "sfdisk")
	img := filepath.Join(t.TempDir(), "gpt.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 4<<20); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sfdisk, "--no-reread", "--no-tell-kernel", img)
	cmd.Stdin = strings.NewReader("label: gpt\nsize=1MiB, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	dump, err := exec.Command(sfdisk, "--dump", img).Output()
	if err != nil {
		t.Fatalf("sfdisk --dump: %v", err)
	}
	field := func(re string) string {
		m := regexp.MustCompile(re).FindSubmatch(dump)
		if m == nil {
			t.Fatalf("sfdisk --dump has no %s:\n%s", re, dump)
		}
		return string(m[1])
	}
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	header, entry := b[512:1024], b[1024:1024+128] // LBA 1 and 2, 512-byte sectors
	if string(header[:8]) != "EFI PART" || binary.LittleEndian.Uint64(header[72:]) != 2 {
		t.Fatalf("no GPT header at LBA 1 pointing at LBA 2")
	}
	for _, c := range []struct {
		what string
		text string
		raw  []byte
	}{
		{"disk id", field(`label-id: ([0-9A-Fa-f-]{36})`), header[56:72]},
		{"partition type", field(`type=([0-9A-Fa-f-]{36})`), entry[0:16]},
		{"partition id", field(`uuid=([0-9A-Fa-f-]{36})`), entry[16:32]},
	} {
		if got := FromBytes(c.raw).String(); !strings.EqualFold(got, c.text) {
			t.Errorf("%s: stored bytes read as %s, sfdisk says %s", c.what, got, c.text)
		}
		if g, err := Parse(c.text); err != nil || !bytes.Equal(g[:], c.raw) {
			t.Errorf("%s: Parse(%s) = % X, %v; sfdisk stored % X", c.what, c.text, g[:], err, c.raw)
		}
	}
}

// qemu-img writes a VHDX whose region table names the BAT and metadata
// regions by the GUIDs of MS-VHDX 2.2.3.1.
func TestAgainstQemuVHDX(t *testing.T) {
	qemu := testkit.RequireTool(t, "qemu-img")
	img := filepath.Join(t.TempDir(), "d.vhdx")
	if out, err := exec.Command(qemu, "create", "-f", "vhdx", img, "8M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	rt := b[192<<10:] // the first region table, MS-VHDX 2.2.3
	if string(rt[:4]) != "regi" {
		t.Fatalf("no region table at 192 KiB")
	}
	n := binary.LittleEndian.Uint32(rt[8:])
	found := map[string]bool{}
	for i := range int(n) {
		found[FromBytes(rt[16+32*i:]).String()] = true
	}
	for _, want := range []string{"2DC27766-F623-4200-9D64-115E9BFD4A08", "8B7CA206-4790-4B9A-B8FE-575F050F886E"} {
		if !found[strings.ToLower(want)] {
			t.Errorf("region %s not in qemu-img's region table (found %v)", want, found)
		}
	}
}
