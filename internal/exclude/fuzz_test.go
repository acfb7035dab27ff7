package exclude

import (
	"context"
	"encoding/binary"
	"os"
	"testing"
)

// fuzzBases are real images the fuzzer patches: an NTFS volume with a page
// file, a hibernation file and path-matched files, and that volume inside a
// GPT disk beside a swap partition.
func fuzzBases(f *testing.F) [][]byte {
	dir := f.TempDir()
	ft := fuzzT{f}
	vol := makeNTFSFor(ft, dir, 2<<20)
	volBytes, err := os.ReadFile(vol)
	if err != nil {
		f.Fatal(err)
	}
	disk := make([]byte, 4<<20)
	g := gptDisk(int64(len(disk)), 128, [][3]any{
		{linuxSwapGUID, uint64(40), uint64(2047)},
		{[]byte{0xA2, 0xA0, 0xD0, 0xEB, 0xE5, 0xB9, 0x33, 0x44, 0x87, 0xC0, 0x68, 0xB6, 0xB7, 0x26, 0x99, 0xC7}, uint64(2048), uint64(2048 + len(volBytes)/512 - 1)},
	})
	copy(disk, g)
	putSwapHeader(disk[40*512:2048*512], 4096)
	copy(disk[2048*512:], volBytes)
	bases := [][]byte{volBytes, disk}
	for i, b := range bases {
		_, ex, err := Analyze(context.Background(), memDisk(b), int64(len(b)), 512, Options{Swap: true, Paths: []string{"/*.tmp"}})
		if err != nil || len(ex) < 3 {
			f.Fatalf("fuzz base %d: %v, excluded %+v; want the page, hibernation and .tmp files", i, err, ex)
		}
	}
	return bases
}

// fuzzT lets the image builders of the real-image tests run in a fuzz setup.
type fuzzT struct{ *testing.F }

func makeNTFSFor(f fuzzT, dir string, size int64) string {
	return makeNTFSTB(f.F, dir, size, []ntfsFile{
		{"/pagefile.sys", 64 << 10},
		{"/hiberfil.sys", 32 << 10},
		{"/pagefile.sys", 128 << 10},
		{"/a.tmp", 16 << 10},
		{"/b.tmp", 10},
	})
}

// fuzzPatch applies patches encoded as [offset uint32][length uint8][bytes]
// to a copy of base.
func fuzzPatch(base, patches []byte) []byte {
	img := append([]byte(nil), base...)
	for len(patches) >= 5 {
		off := int(binary.LittleEndian.Uint32(patches) % uint32(len(img)))
		n := int(patches[4])
		patches = patches[5:]
		if n > len(patches) {
			n = len(patches)
		}
		copy(img[off:], patches[:n])
		patches = patches[n:]
	}
	return img
}

// FuzzAnalyze feeds Analyze hostile disks: raw bytes (base 0) or patched
// real NTFS and GPT images. It must not panic, must stay inside the disk, and
// what it excludes must be sorted, disjoint and never the first sector.
func FuzzAnalyze(f *testing.F) {
	bases := fuzzBases(f)
	f.Add(uint8(0), []byte(mbrDisk(0, 16)[:64<<10]))
	f.Add(uint8(0), []byte(gptDisk(64<<10, 4, nil)))
	f.Add(uint8(1), []byte{})
	f.Add(uint8(2), []byte{})
	mftOff := func(b []byte, base int) uint32 {
		cs := uint32(binary.LittleEndian.Uint16(b[base+11:])) * uint32(b[base+13])
		return uint32(base) + uint32(binary.LittleEndian.Uint64(b[base+0x30:]))*cs
	}
	for i, rec := range []uint32{0, 5, 24, 64, 65, 66} {
		off := mftOff(bases[0], 0) + rec*1024
		p := binary.LittleEndian.AppendUint32(nil, off+uint32(0x38+i*8))
		f.Add(uint8(1), append(p, 4, 0xFF, 0x7F, 0x00, 0x80))
		off = mftOff(bases[1], 2048*512) + rec*1024
		p = binary.LittleEndian.AppendUint32(nil, off+uint32(0x100+i*16))
		f.Add(uint8(2), append(p, 2, 0x00, 0x00))
	}
	opts := Options{Swap: true, Paths: []string{"/*.tmp", "/*/*", `C:\a*\*\*`}}
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		var img []byte
		switch which % 3 {
		case 0:
			img = data
		default:
			img = fuzzPatch(bases[which%3-1], data)
		}
		r := &boundedReader{r: memDisk(img), size: int64(len(img))}
		_, ex, err := Analyze(context.Background(), r, r.size, 512, opts)
		if r.outside {
			t.Fatalf("read outside the disk")
		}
		if err != nil && ex != nil {
			t.Fatalf("exclusions returned with an error: %v", err)
		}
		var end int64 = 512
		for _, e := range ex {
			if e.Length <= 0 || e.Offset < end || e.End() > r.size {
				t.Fatalf("excluded range %+v: not sorted, overlapping, empty, in the first sector or past the end (%d)", e, r.size)
			}
			end = e.End()
		}
	})
}
