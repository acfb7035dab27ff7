package vhdx

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/replicator/replicator/internal/vhdx/vhdxtest"
)

// Fuzzing patches valid files rather than generating whole ones: a VHDX is at
// least a few MiB, mostly zeros, and its interesting bytes sit in a few places.
// An input is a template selector, a reseal flag, and patches of the form
// [area][offset u16][length u8][bytes].

var (
	fuzzOnce      sync.Once
	fuzzTemplates [][]byte
)

func fuzzSetup(t testing.TB) [][]byte {
	fuzzOnce.Do(func() {
		dir, err := os.MkdirTemp("", "vhdx-fuzz")
		if err != nil {
			t.Fatal(err)
		}
		_, small := smallDisk(t, dir)
		tt, ok := t.(*testing.T)
		var logged []byte
		if ok {
			p, _, _ := logFixture(tt)
			logged, _ = os.ReadFile(p)
		} else {
			logged = small
		}
		base := filepath.Join(dir, "base.vhdx")
		os.WriteFile(base, small, 0o644)
		c, err := CreateDifferencing(filepath.Join(dir, "child.vhdx"), base, CreateOptions{BlockSize: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		c.WriteAt(make([]byte, 4096), 1<<20+512)
		c.WriteAt([]byte{1, 2, 3}, 3<<20)
		c.Close()
		child, _ := os.ReadFile(filepath.Join(dir, "child.vhdx"))
		os.RemoveAll(dir)
		fuzzTemplates = [][]byte{small, logged, child}
	})
	return fuzzTemplates
}

var fuzzAreas = []int64{header1Offset, header2Offset, regionTable1Offset, createLogOffset, createMetaOffset, createMetaOffset + metadataTableSize, createBATOffset, 4 << 20}

func FuzzOpen(f *testing.F) {
	f.Add([]byte{0, 0})
	f.Add([]byte{1, 0})
	f.Add([]byte{2, 1, 6, 0, 8, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 1, 0, 0, 68, 4, 0, 0, 0, 1})
	f.Add([]byte{1, 0, 3, 0, 8, 4, 0, 0, 0, 0x10})
	f.Fuzz(func(t *testing.T, in []byte) {
		tpls := fuzzSetup(t)
		if len(in) < 2 {
			return
		}
		b := append([]byte(nil), tpls[int(in[0])%len(tpls)]...)
		resealAfter := in[1]&1 != 0
		for p := in[2:]; len(p) >= 4; {
			area := fuzzAreas[int(p[0])%len(fuzzAreas)]
			off := area + int64(binary.LittleEndian.Uint16(p[1:]))
			n := int(p[3])
			p = p[4:]
			n = min(n, len(p))
			if off+int64(n) <= int64(len(b)) {
				copy(b[off:], p[:n])
			}
			p = p[n:]
		}
		if resealAfter {
			vhdxtest.Reseal(b)
		}
		// Parsed in memory, without the parent: the child template's
		// absent sectors read as zeros.
		d, err := openOn("fuzz.vhdx", &memFile{data: b}, false)
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v is not a *FormatError", err)
			}
			return
		}
		defer d.Close()
		buf := make([]byte, 1<<20)
		for off := int64(0); off < d.Size() && off < 16<<20; off += int64(len(buf)) {
			d.ReadAt(buf, off)
		}
		for _, e := range d.Allocated() {
			if e.Offset < 0 || e.End() > d.Size() {
				t.Fatalf("extent %+v outside the disk", e)
			}
		}
	})
}
