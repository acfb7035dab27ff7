package vhdx

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/replicator/replicator/internal/vhdx/vhdxtest"
)

// smallDisk makes a 4 MiB dynamic disk with 1 MiB blocks, blocks 0 and 2
// written, and returns its path and bytes.
func smallDisk(t testing.TB, dir string) (string, []byte) {
	t.Helper()
	p := filepath.Join(dir, "small.vhdx")
	d, err := Create(p, CreateOptions{Size: 4 << 20, BlockSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	model := make([]byte, 4<<20)
	for i := range model[:1<<20] {
		model[i] = byte(i % 251)
		model[2<<20+i] = byte(i % 241)
	}
	if _, err := d.WriteAt(model[:1<<20], 0); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(model[2<<20:3<<20], 2<<20); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return p, b
}

func TestDamagedInput(t *testing.T) {
	dir := t.TempDir()
	_, good := smallDisk(t, dir)
	const (
		meta  = createMetaOffset
		items = meta + metadataTableSize
		bat   = createBATOffset
	)
	block0 := entryOffset(binary.LittleEndian.Uint64(good[bat:]))
	cases := []struct {
		name    string
		damage  func(b []byte) []byte
		offset  int64 // expected FormatError offset, -1: any
		message string
	}{
		{"file signature", func(b []byte) []byte { copy(b, "vhdxfilX"); return b }, 0, "not a VHDX"},
		{"too small", func(b []byte) []byte { return b[:4096] }, 0, "too small"},
		{"both headers", func(b []byte) []byte { b[header1Offset+100]++; b[header2Offset+100]++; return b }, header1Offset, "checksum"},
		{"both region tables", func(b []byte) []byte { b[regionTable1Offset+100]++; b[regionTable2Offset+100]++; return b }, regionTable1Offset, "checksum"},
		{"header version", func(b []byte) []byte {
			copy(b[header1Offset+66:], []byte{2, 0})
			copy(b[header2Offset+66:], []byte{2, 0})
			vhdxtest.Reseal(b)
			return b
		}, -1, "version"},
		{"region past end", func(b []byte) []byte {
			copy(b[regionTable1Offset+16+16:], vhdxtest.LE64(1<<40))
			copy(b[regionTable2Offset+16+16:], vhdxtest.LE64(1<<40))
			vhdxtest.Reseal(b)
			return b
		}, 1 << 40, "past end"},
		{"metadata signature", func(b []byte) []byte { b[meta] = 'X'; return b }, meta, "metadata table signature"},
		{"metadata entry count", func(b []byte) []byte { copy(b[meta+10:], []byte{0xff, 0xff}); return b }, meta, "entry count"},
		{"metadata item length", func(b []byte) []byte { copy(b[meta+32+20:], vhdxtest.LE32(1<<30)); return b }, meta + 32, "length"},
		{"block size", func(b []byte) []byte { copy(b[items:], vhdxtest.LE32(3<<20)); return b }, meta, "block size"},
		{"absurd virtual size", func(b []byte) []byte { copy(b[items+8:], vhdxtest.LE64(1<<62)); return b }, meta, "virtual disk size"},
		{"sector size", func(b []byte) []byte { copy(b[items+32:], vhdxtest.LE32(1000)); return b }, meta, "logical sector size"},
		{"BAT entry past end", func(b []byte) []byte { copy(b[bat+8:], vhdxtest.LE64(batEntry(payloadFullyPresent, 1<<40))); return b }, bat + 8, "past end"},
		{"BAT entry into metadata", func(b []byte) []byte { copy(b[bat+8:], vhdxtest.LE64(batEntry(payloadFullyPresent, meta))); return b }, -1, "overlaps"},
		{"BAT entry into headers", func(b []byte) []byte { copy(b[bat+8:], vhdxtest.LE64(batEntry(payloadFullyPresent, 0))); return b }, bat + 8, "headers"},
		{"two entries one block", func(b []byte) []byte { copy(b[bat+8:], vhdxtest.LE64(batEntry(payloadFullyPresent, block0))); return b }, -1, "overlaps"},
		{"invalid state", func(b []byte) []byte { copy(b[bat+8:], vhdxtest.LE64(5)); return b }, bat + 8, "invalid state"},
		{"partial without parent", func(b []byte) []byte {
			copy(b[bat:], vhdxtest.LE64(batEntry(payloadPartiallyPresent, block0)))
			return b
		}, bat, "partially present"},
		{"truncated block", func(b []byte) []byte { return b[:len(b)-4096] }, -1, "past end"},
		{"has parent, no locator", func(b []byte) []byte { copy(b[items+4:], vhdxtest.LE32(2)); return b }, meta, "parent locator"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := c.damage(append([]byte(nil), good...))
			p := filepath.Join(t.TempDir(), "bad.vhdx")
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			d, err := Open(p)
			if err == nil {
				d.Close()
				t.Fatal("damaged file opened")
			}
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v is not a *FormatError", err)
			}
			if c.offset >= 0 && fe.Offset != c.offset {
				t.Fatalf("error %v: offset %d, want %d", err, fe.Offset, c.offset)
			}
			if fe.Path != p || !strings.Contains(err.Error(), c.message) {
				t.Fatalf("error %q: want path %s and %q", err, p, c.message)
			}
		})
	}
}

// One damaged copy of the header or region table is survivable.
func TestOneDamagedCopy(t *testing.T) {
	dir := t.TempDir()
	_, good := smallDisk(t, dir)
	for _, off := range []int{header1Offset, header2Offset, regionTable1Offset, regionTable2Offset} {
		b := append([]byte(nil), good...)
		b[off+200] ^= 0xff
		p := filepath.Join(t.TempDir(), "one.vhdx")
		os.WriteFile(p, b, 0o644)
		d, err := Open(p)
		if err != nil {
			t.Fatalf("copy at %d damaged: %v", off, err)
		}
		got := readAll(t, d, 1<<20)
		d.Close()
		ref, _ := Open(filepath.Join(dir, "small.vhdx"))
		requireSame(t, "one copy damaged", got, readAll(t, ref, 1<<20))
		ref.Close()
	}
}

func TestParentLoops(t *testing.T) {
	dir := t.TempDir()
	paths, _ := buildChain(t, dir, 4<<20, 512, 2, 21)
	// child1 -> child2 -> child1.
	if err := SetParent(paths[1], paths[2]); err != nil {
		t.Fatal(err)
	}
	_, err := Open(paths[2])
	var fe *FormatError
	if !errors.As(err, &fe) || !strings.Contains(err.Error(), "loops") {
		t.Fatalf("loop: %v", err)
	}
	// A disk that is its own parent.
	if err := SetParent(paths[2], paths[2]); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(paths[2]); !errors.As(err, &fe) || !strings.Contains(err.Error(), "loops") {
		t.Fatalf("self loop: %v", err)
	}
}

func TestDamagedChild(t *testing.T) {
	dir := t.TempDir()
	base, _ := smallDisk(t, dir)
	cp := filepath.Join(dir, "child.vhdx")
	c, err := CreateDifferencing(cp, base, CreateOptions{BlockSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	c.WriteAt(make([]byte, 4096), 1<<20+8192) // block 1 partially present
	sbIdx := c.geo.bitmapIndex(0)
	c.Close()
	good, _ := os.ReadFile(cp)
	b := append([]byte(nil), good...)
	copy(b[createBATOffset+8*sbIdx:], vhdxtest.LE64(0))
	os.WriteFile(cp, b, 0o644)
	_, err = Open(cp)
	var fe *FormatError
	if !errors.As(err, &fe) || fe.Offset != createBATOffset+8 || !strings.Contains(err.Error(), "sector bitmap") {
		t.Fatalf("partial block without bitmap: %v", err)
	}
	// A BAT too small for the disk size.
	b = append([]byte(nil), good...)
	copy(b[createMetaOffset+metadataTableSize+8:], vhdxtest.LE64(1<<40))
	os.WriteFile(cp, b, 0o644)
	if _, err = Open(cp); !errors.As(err, &fe) || !strings.Contains(err.Error(), "BAT region") {
		t.Fatalf("BAT too small: %v", err)
	}
}

// Every payload state reads as MS-VHDX section 2.5.1 says: in a base disk
// only present blocks hold data; in a child, absent states defer to the
// parent and the zero state hides it.
func TestPayloadStates(t *testing.T) {
	dir := t.TempDir()
	base, baseBytes := smallDisk(t, dir)
	baseModel := layerModel(t, base)
	for _, st := range []uint64{payloadNotPresent, payloadUndefined, payloadZero, payloadUnmapped} {
		b := append([]byte(nil), baseBytes...)
		e := binary.LittleEndian.Uint64(b[createBATOffset:])
		copy(b[createBATOffset:], vhdxtest.LE64(e&^batStateMask|st))
		p := filepath.Join(t.TempDir(), "s.vhdx")
		os.WriteFile(p, b, 0o644)
		want := append([]byte(nil), baseModel...)
		clear(want[:1<<20])
		requireSame(t, name("base, block 0 in state %d", st), layerModel(t, p), want)
	}

	cp := filepath.Join(dir, "child.vhdx")
	c, err := CreateDifferencing(cp, base, CreateOptions{BlockSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = 0x77
	}
	c.WriteAt(data, 0)
	c.WriteAt(data, 2<<20)
	c.Close()
	good, _ := os.ReadFile(cp)
	for _, st := range []uint64{payloadNotPresent, payloadUndefined, payloadZero, payloadUnmapped} {
		b := append([]byte(nil), good...)
		e := binary.LittleEndian.Uint64(b[createBATOffset:])
		copy(b[createBATOffset:], vhdxtest.LE64(e&^batStateMask|st))
		os.WriteFile(cp, b, 0o644)
		want := append([]byte(nil), baseModel...)
		copy(want[2<<20:], data)
		if st == payloadZero {
			clear(want[:1<<20])
		}
		requireSame(t, name("child, block 0 in state %d", st), layerModel(t, cp), want)
	}
}
