package exclude

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
	"math/rand"
	"reflect"
	"strings"
	"testing"
)

func TestMerge(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in, out []Range
	}{
		{"empty", nil, nil},
		{"drops empty and negative", []Range{{0, 0, "swap"}, {5, -1, "swap"}, {-4, 2, "swap"}}, nil},
		{"sorts", []Range{{10, 5, "path"}, {0, 5, "swap"}}, []Range{{0, 5, "swap"}, {10, 5, "path"}}},
		{"adjacent same reason", []Range{{5, 5, "path"}, {0, 5, "path"}}, []Range{{0, 10, "path"}}},
		{"adjacent different reasons stay apart", []Range{{0, 5, "swap"}, {5, 5, "path"}}, []Range{{0, 5, "swap"}, {5, 5, "path"}}},
		{"overlap same reason", []Range{{0, 10, "path"}, {5, 10, "path"}, {2, 3, "path"}}, []Range{{0, 15, "path"}}},
		{"overlap different reasons", []Range{{0, 10, "pagefile"}, {5, 10, "path"}}, []Range{{0, 10, "pagefile"}, {10, 5, "path"}}},
		{"contained different reason", []Range{{0, 10, "pagefile"}, {2, 3, "path"}}, []Range{{0, 10, "pagefile"}}},
		{"same start longer wins", []Range{{0, 3, "path"}, {0, 10, "hiberfil"}}, []Range{{0, 10, "hiberfil"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := append([]Range(nil), tc.in...)
			if got := Merge(tc.in); !reflect.DeepEqual(got, tc.out) {
				t.Errorf("Merge(%v) = %v, want %v", tc.in, got, tc.out)
			}
			if !reflect.DeepEqual(in, tc.in) {
				t.Errorf("Merge modified its input")
			}
		})
	}
}

func TestMatchComponent(t *testing.T) {
	for _, tc := range []struct {
		pattern, name string
		want          bool
	}{
		{"*", "anything", true},
		{"*", "", true},
		{"*.tmp", "a.TMP", true},
		{"*.tmp", "a.tmpx", false},
		{"a*b*c", "aXXbYYc", true},
		{"a*b*c", "aXXbYY", false},
		{"pagefile.sys", "PageFile.Sys", true},
		{"?.sys", "a.sys", true},
		{"?.sys", "ab.sys", false},
		{"*a*a*a*a*a*b", strings.Repeat("a", 200), false},
		{"Ärger*", "ärgerlich", true},
	} {
		if got := matchComponent(foldName(tc.pattern), foldName(tc.name)); got != tc.want {
			t.Errorf("match(%q, %q) = %v, want %v", tc.pattern, tc.name, got, tc.want)
		}
	}
}

func TestCompilePatterns(t *testing.T) {
	ps, err := compilePatterns([]string{`C:\Users\*\AppData\Local\Temp\*`, "/temp//x.tmp", `.\a`})
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	for _, p := range ps {
		got = append(got, len(p.parts))
	}
	if !reflect.DeepEqual(got, []int{6, 2, 1}) || string(ps[0].parts[0]) != "USERS" {
		t.Errorf("components %v, first %q", got, string(ps[0].parts[0]))
	}
	for _, bad := range []string{"", "C:", `\`, "/a/../b"} {
		if _, err := compilePatterns([]string{bad}); err == nil || !strings.Contains(err.Error(), "paths[0]") {
			t.Errorf("pattern %q: error %v, want one naming paths[0]", bad, err)
		}
	}
}

// memDisk is a disk in memory.
type memDisk []byte

func (m memDisk) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off > int64(len(m)) {
		return 0, bytes.ErrTooLarge
	}
	n := copy(p, m[off:])
	if n < len(p) {
		return n, bytes.ErrTooLarge
	}
	return n, nil
}

func putMBREntry(sec []byte, slot int, typ byte, start, size uint32) {
	e := sec[446+16*slot:]
	e[4] = typ
	binary.LittleEndian.PutUint32(e[8:], start)
	binary.LittleEndian.PutUint32(e[12:], size)
	sec[510], sec[511] = 0x55, 0xAA
}

func putSwapHeader(b []byte, page int) {
	binary.LittleEndian.PutUint32(b[1024:], 1)
	binary.LittleEndian.PutUint32(b[1028:], uint32(len(b)/page-1))
	copy(b[page-10:], "SWAPSPACE2")
}

// mbrDisk is a 4 MiB disk: a primary swap partition at sector 2048 (1 MiB)
// and an extended partition at sector 4096 with one EBR at each of ebrs
// (sector offsets inside it, ascending, the first 0), chained in order.
func mbrDisk(ebrs ...uint32) memDisk {
	d := make(memDisk, 4<<20)
	putMBREntry(d, 0, 0x82, 2048, 2048)
	putSwapHeader(d[2048*512:4096*512], 4096)
	putMBREntry(d, 1, 0x05, 4096, 4096)
	for i, ebr := range ebrs {
		sec := d[(4096+ebr)*512:][:512]
		putMBREntry(sec, 0, 0x83, 1, 8)
		if i+1 < len(ebrs) {
			putMBREntry(sec, 1, 0x05, ebrs[i+1], 16)
		}
	}
	return d
}

func TestMBRSyntheticChain(t *testing.T) {
	parts, ex, err := Analyze(context.Background(), mbrDisk(0, 16, 32), 4<<20, 512, Options{Swap: true})
	if err != nil {
		t.Fatal(err)
	}
	var idx []int
	for _, p := range parts {
		idx = append(idx, p.Index)
	}
	if !reflect.DeepEqual(idx, []int{1, 5, 6, 7}) || parts[1].Offset != (4096+1)*512 || parts[3].Offset != (4096+32+1)*512 {
		t.Errorf("partitions %+v", parts)
	}
	want := []Range{{Offset: 2048*512 + 4096, Length: 2048*512 - 4096, Reason: ReasonSwap}}
	if !reflect.DeepEqual(ex, want) {
		t.Errorf("excluded %+v, want %+v", ex, want)
	}
}

func TestEBRLoopIsAnError(t *testing.T) {
	for name, ebrs := range map[string][]uint32{"self": {0}, "two records": {0, 16}} {
		d := mbrDisk(ebrs...)
		// The last EBR links back to the first.
		last := ebrs[len(ebrs)-1]
		putMBREntry(d[(4096+last)*512:][:512], 1, 0x05, 0, 16)
		_, ex, err := Analyze(context.Background(), d, int64(len(d)), 512, Options{Swap: true})
		if err == nil || !strings.Contains(err.Error(), "loops") || !strings.Contains(err.Error(), "offset") || ex != nil {
			t.Errorf("%s: %v, %v; want a loop error naming the offset and no exclusions", name, ex, err)
		}
	}
}

func TestUnknownDiskHasNoExclusionsAndNoError(t *testing.T) {
	random := make(memDisk, 1<<20)
	rand.New(rand.NewSource(1)).Read(random)
	random[510], random[511] = 0, 0
	for name, d := range map[string]memDisk{"zeros": make(memDisk, 1<<20), "random": random, "tiny": make(memDisk, 100)} {
		parts, ex, err := Analyze(context.Background(), d, int64(len(d)), 512, Options{Swap: true, Paths: []string{"/*"}})
		if err != nil || parts != nil || ex != nil {
			t.Errorf("%s: %+v %+v %v; want nothing", name, parts, ex, err)
		}
	}
}

func TestProtectiveMBRWithoutGPTIsAnError(t *testing.T) {
	d := make(memDisk, 1<<20)
	putMBREntry(d, 0, 0xEE, 1, 2047)
	_, _, err := Analyze(context.Background(), d, int64(len(d)), 512, Options{Swap: true})
	if err == nil || !strings.Contains(err.Error(), "protective MBR") {
		t.Errorf("error %v, want one about the protective MBR", err)
	}
}

// gptDisk writes a valid GPT (primary and backup) with the given entries
// (type GUID bytes, first and last LBA) into a disk of size bytes.
func gptDisk(size int64, numEntries uint32, entries [][3]any) memDisk {
	return gptDiskSectors(size, 512, numEntries, entries)
}

func gptDiskSectors(size, ss int64, numEntries uint32, entries [][3]any) memDisk {
	d := make(memDisk, size)
	putMBREntry(d, 0, 0xEE, 1, uint32(size/ss-1))
	arr := make([]byte, numEntries*128)
	for i, e := range entries {
		copy(arr[i*128:], e[0].([]byte))
		binary.LittleEndian.PutUint64(arr[i*128+32:], e[1].(uint64))
		binary.LittleEndian.PutUint64(arr[i*128+40:], e[2].(uint64))
	}
	last := uint64(size/ss - 1)
	arrSectors := (uint64(len(arr)) + uint64(ss) - 1) / uint64(ss)
	if arrSectors > last/4 { // an absurd array: lay out as if small, the copy is cut
		arrSectors = 32
	}
	write := func(my, alt, entriesLBA uint64) {
		copy(d[entriesLBA*uint64(ss):], arr)
		h := d[my*uint64(ss):][:92]
		copy(h, "EFI PART")
		binary.LittleEndian.PutUint32(h[8:], 0x10000)
		binary.LittleEndian.PutUint32(h[12:], 92)
		binary.LittleEndian.PutUint64(h[24:], my)
		binary.LittleEndian.PutUint64(h[32:], alt)
		binary.LittleEndian.PutUint64(h[40:], 2+arrSectors)
		binary.LittleEndian.PutUint64(h[48:], last-1-arrSectors)
		binary.LittleEndian.PutUint64(h[72:], entriesLBA)
		binary.LittleEndian.PutUint32(h[80:], numEntries)
		binary.LittleEndian.PutUint32(h[84:], 128)
		binary.LittleEndian.PutUint32(h[88:], crc32.ChecksumIEEE(arr))
		binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h))
	}
	write(1, last, 2)
	write(last, 1, last-arrSectors)
	return d
}

var linuxSwapGUID = []byte{0x6D, 0xFD, 0x57, 0x06, 0xAB, 0xA4, 0xC4, 0x43, 0x84, 0xE5, 0x09, 0x33, 0xC8, 0x4B, 0x4F, 0x4F}

func TestGPTSynthetic(t *testing.T) {
	d := gptDisk(4<<20, 128, [][3]any{{linuxSwapGUID, uint64(2048), uint64(4095)}, {bytes.Repeat([]byte{0xAB}, 16), uint64(4096), uint64(6000)}})
	putSwapHeader(d[2048*512:4096*512], 8192)
	parts, ex, err := Analyze(context.Background(), d, int64(len(d)), 512, Options{Swap: true})
	if err != nil {
		t.Fatal(err)
	}
	want := []Partition{
		{Index: 1, Offset: 2048 * 512, Length: 2048 * 512, Type: "linux-swap", Filesystem: "swap"},
		{Index: 2, Offset: 4096 * 512, Length: (6000 - 4096 + 1) * 512, Type: "ABABABAB-ABAB-ABAB-ABAB-ABABABABABAB"},
	}
	if !reflect.DeepEqual(parts, want) {
		t.Errorf("partitions %+v, want %+v", parts, want)
	}
	if wantEx := []Range{{2048*512 + 8192, 2048*512 - 8192, ReasonSwap}}; !reflect.DeepEqual(ex, wantEx) {
		t.Errorf("excluded %+v, want %+v", ex, wantEx)
	}

	huge := gptDisk(4<<20, 100000, nil)
	if _, _, err := Analyze(context.Background(), huge, int64(len(huge)), 512, Options{}); err == nil || !strings.Contains(err.Error(), "100000 partition entries") {
		t.Errorf("absurd entry count: %v", err)
	}
	past := gptDisk(4<<20, 128, [][3]any{{linuxSwapGUID, uint64(2048), uint64(1 << 40)}})
	if _, _, err := Analyze(context.Background(), past, int64(len(past)), 512, Options{}); err == nil || !strings.Contains(err.Error(), "past the disk end") {
		t.Errorf("partition past the end: %v", err)
	}
}

func TestStaleSwapSignatureUnderNTFSIsNotSwap(t *testing.T) {
	d := make(memDisk, 1<<20)
	putSwapHeader(d, 4096)
	copy(d[3:], "NTFS    ")
	parts, ex, _ := Analyze(context.Background(), d, int64(len(d)), 512, Options{Swap: true})
	if len(parts) != 1 || parts[0].Filesystem != "ntfs" || ex != nil {
		t.Errorf("%+v %+v: want one NTFS partition and nothing excluded", parts, ex)
	}
}

func TestReadsStayInsideSize(t *testing.T) {
	// A disk whose reader holds more than size: Analyze must not look past size.
	d := gptDisk(4<<20, 128, [][3]any{{linuxSwapGUID, uint64(2048), uint64(7000)}})
	putSwapHeader(d[2048*512:7001*512], 4096)
	r := &boundedReader{r: d, size: 3 << 20}
	_, _, err := Analyze(context.Background(), r, r.size, 512, Options{Swap: true})
	if r.outside {
		t.Errorf("Analyze read outside [0, %d)", r.size)
	}
	if err == nil || !strings.Contains(err.Error(), "past the disk end") {
		t.Errorf("a partition past the given size: error %v, want one saying so", err)
	}
}

type boundedReader struct {
	r       memDisk
	size    int64
	outside bool
}

func (b *boundedReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > b.size {
		b.outside = true
	}
	return b.r.ReadAt(p, off)
}

func TestGPTWith4096ByteSectors(t *testing.T) {
	d := gptDiskSectors(8<<20, 4096, 128, [][3]any{{linuxSwapGUID, uint64(256), uint64(511)}})
	putSwapHeader(d[256*4096:512*4096], 4096)
	want := []Partition{{Index: 1, Offset: 256 * 4096, Length: 256 * 4096, Type: "linux-swap", Filesystem: "swap"}}
	wantEx := []Range{{256*4096 + 4096, 255 * 4096, ReasonSwap}}
	// The stated sector size, and a wrong one (image metadata saying 512).
	for _, ss := range []int{4096, 512} {
		parts, ex, err := Analyze(context.Background(), d, int64(len(d)), ss, Options{Swap: true})
		if err != nil || !reflect.DeepEqual(parts, want) || !reflect.DeepEqual(ex, wantEx) {
			t.Errorf("sector size %d: %+v %+v %v; want %+v %+v", ss, parts, ex, err, want, wantEx)
		}
	}
}

func TestOverlappingPartitionsAreAnError(t *testing.T) {
	// A swap partition whose extent covers the next partition would exclude
	// that partition's data.
	d := gptDisk(4<<20, 128, [][3]any{{linuxSwapGUID, uint64(2048), uint64(6000)}, {linuxSwapGUID, uint64(4096), uint64(5000)}})
	putSwapHeader(d[2048*512:6001*512], 4096)
	_, ex, err := Analyze(context.Background(), d, int64(len(d)), 512, Options{Swap: true})
	if err == nil || !strings.Contains(err.Error(), "overlaps partition 2") || ex != nil {
		t.Errorf("%+v %v; want an overlap error and no exclusions", ex, err)
	}
	m := make(memDisk, 4<<20)
	putMBREntry(m, 0, 0x82, 2048, 4096)
	putMBREntry(m, 1, 0x83, 4000, 100)
	if _, _, err := Analyze(context.Background(), m, int64(len(m)), 512, Options{Swap: true}); err == nil || !strings.Contains(err.Error(), "overlaps") {
		t.Errorf("MBR: %v; want an overlap error", err)
	}
}

func TestPartitionCoveringItsTableIsAnError(t *testing.T) {
	g := gptDisk(4<<20, 128, [][3]any{{linuxSwapGUID, uint64(1), uint64(4000)}})
	putSwapHeader(g[512:4001*512], 4096)
	if _, ex, err := Analyze(context.Background(), g, int64(len(g)), 512, Options{Swap: true}); err == nil || ex != nil || !strings.Contains(err.Error(), "GPT header at offset 512") {
		t.Errorf("GPT: %+v %v; want an error about the partition covering the GPT header", ex, err)
	}
	m := mbrDisk(0)
	putMBREntry(m, 0, 0x82, 2048, 2049) // reaches sector 4096, the extended boot record
	if _, ex, err := Analyze(context.Background(), m, int64(len(m)), 512, Options{Swap: true}); err == nil || ex != nil || !strings.Contains(err.Error(), "covers the extended boot record") {
		t.Errorf("MBR: %+v %v; want an error about the partition covering the EBR", ex, err)
	}
}

func TestDOSTableWinsOverAStaleGPT(t *testing.T) {
	d := gptDisk(4<<20, 128, [][3]any{{linuxSwapGUID, uint64(2048), uint64(6000)}})
	putSwapHeader(d[2048*512:6001*512], 4096)
	clear(d[446:510])
	putMBREntry(d, 0, 0x83, 2048, 4096)
	parts, ex, err := Analyze(context.Background(), d, int64(len(d)), 512, Options{Swap: true})
	want := []Partition{{Index: 1, Offset: 2048 * 512, Length: 4096 * 512, Type: "linux-data", Filesystem: "swap"}}
	wantEx := []Range{{2048*512 + 4096, 4096*512 - 4096, ReasonSwap}}
	if err != nil || !reflect.DeepEqual(parts, want) || !reflect.DeepEqual(ex, wantEx) {
		t.Errorf("%+v %+v %v; want the DOS partition %+v and %+v", parts, ex, err, want, wantEx)
	}
}
