package vhdx

import (
	"bytes"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/replicator/replicator/internal/disk"
	"github.com/replicator/replicator/internal/testkit"
	"github.com/replicator/replicator/internal/zeros"
)

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// qemuRaw converts a VHDX with qemu-img and returns the raw bytes.
func qemuRaw(t testing.TB, path string) []byte {
	t.Helper()
	testkit.RequireTool(t, "qemu-img")
	out := filepath.Join(t.TempDir(), "oracle.raw")
	run(t, "qemu-img", "convert", "-f", "vhdx", "-O", "raw", path, out)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readAll reads a whole image in chunks of the given size.
func readAll(t testing.TB, img disk.Image, chunk int) []byte {
	t.Helper()
	out := make([]byte, img.Size())
	for off := int64(0); off < img.Size(); off += int64(chunk) {
		end := min(off+int64(chunk), img.Size())
		n, err := img.ReadAt(out[off:end], off)
		if err != nil && !(err == io.EOF && off+int64(n) == img.Size()) {
			t.Fatalf("ReadAt(%d, %d): n=%d err=%v", off, end-off, n, err)
		}
		if n != int(end-off) {
			t.Fatalf("ReadAt(%d, %d): short read %d", off, end-off, n)
		}
	}
	return out
}

// requireSame fails with the first differing offset.
func requireSame(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: length %d, want %d", what, len(got), len(want))
	}
	if bytes.Equal(got, want) {
		return
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: first difference at byte %d: got %#x want %#x", what, i, got[i], want[i])
		}
	}
}

// requireAllocatedCovers checks that every non-zero byte lies in an extent.
func requireAllocatedCovers(t testing.TB, ext []disk.Extent, data []byte) {
	t.Helper()
	pos := int64(0)
	for i, e := range ext {
		if e.Offset < pos || e.Length <= 0 || e.End() > int64(len(data)) {
			t.Fatalf("extent %d %+v unsorted, empty or out of range", i, e)
		}
		if !zeros.All(data[pos:e.Offset]) {
			t.Fatalf("non-zero bytes in [%d,%d) outside the allocated extents", pos, e.Offset)
		}
		pos = e.End()
	}
	if !zeros.All(data[pos:]) {
		t.Fatalf("non-zero bytes after %d outside the allocated extents", pos)
	}
}

type write struct {
	off  int64
	data []byte
}

// randomWrites makes n writes inside size, some unaligned, some zero, some
// crossing block boundaries.
func randomWrites(rng *rand.Rand, size int64, n int, maxLen int) []write {
	var ws []write
	for i := 0; i < n; i++ {
		l := int64(1 + rng.Intn(maxLen))
		if rng.Intn(3) == 0 {
			l = (l + 511) / 512 * 512
		}
		l = min(l, size)
		off := rng.Int63n(size - l + 1)
		if rng.Intn(3) == 0 {
			off = off / 512 * 512
			if off+l > size {
				off = size - l
			}
		}
		b := make([]byte, l)
		switch rng.Intn(4) {
		case 0: // zeros
		case 1:
			for j := range b {
				b[j] = byte(i + 1)
			}
		default:
			rng.Read(b)
		}
		ws = append(ws, write{off, b})
	}
	return ws
}

func applyWrites(t testing.TB, w io.WriterAt, model []byte, ws []write) {
	t.Helper()
	for _, x := range ws {
		n, err := w.WriteAt(x.data, x.off)
		if err != nil || n != len(x.data) {
			t.Fatalf("WriteAt(%d, %d bytes) = %d, %v", x.off, len(x.data), n, err)
		}
		if model != nil {
			copy(model[x.off:], x.data)
		}
	}
}

func writeModel(t testing.TB, model []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "model.raw")
	if err := os.WriteFile(p, model, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// qemuCheck runs qemu-img check and qemu-img compare against the model.
func qemuCheck(t testing.TB, path string, model []byte) {
	t.Helper()
	testkit.RequireTool(t, "qemu-img")
	run(t, "qemu-img", "check", "-f", "vhdx", path)
	out, err := exec.Command("qemu-img", "compare", "-f", "vhdx", "-F", "raw", path, writeModel(t, model)).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img compare %s: %v\n%s", path, err, out)
	}
}

func mustOpen(t testing.TB, path string) *Disk {
	t.Helper()
	d, err := Open(path)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	return d
}

func name(format string, args ...any) string { return fmt.Sprintf(format, args...) }
