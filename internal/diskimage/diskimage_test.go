package diskimage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/replicator/replicator/internal/testkit"
	"github.com/replicator/replicator/internal/vhdx"
)

// chain builds base.vhdx <- child.vhdx with random data and returns the
// child's path and the bytes it reads as.
func chain(t *testing.T, dir string, size int64) (string, []byte) {
	t.Helper()
	rng := rand.New(rand.NewSource(size))
	model := make([]byte, size)
	base := filepath.Join(dir, "base.vhdx")
	d, err := vhdx.Create(base, vhdx.CreateOptions{Size: size, BlockSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	put := func(w interface {
		WriteAt([]byte, int64) (int, error)
	}, n int) {
		for i := 0; i < n; i++ {
			b := make([]byte, 1+rng.Intn(300_000))
			rng.Read(b)
			off := rng.Int63n(size - int64(len(b)))
			if _, err := w.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
			copy(model[off:], b)
		}
	}
	put(d, 10)
	d.Close()
	child := filepath.Join(dir, "child.vhdx")
	c, err := vhdx.CreateDifferencing(child, base, vhdx.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	put(c, 10)
	c.Close()
	return child, model
}

func TestConvertChainToRawAndBack(t *testing.T) {
	dir := t.TempDir()
	size := int64(12<<20 + 512)
	child, model := chain(t, dir, size)
	raw := filepath.Join(dir, "out.raw")
	if err := Convert(context.Background(), child, raw, FormatRaw); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, model) {
		t.Fatal("raw conversion of the chain differs from the model")
	}
	back := filepath.Join(dir, "back.vhdx")
	if err := Convert(context.Background(), raw, back, FormatVHDX); err != nil {
		t.Fatal(err)
	}
	testkit.RequireTool(t, "qemu-img")
	if out, err := exec.Command("qemu-img", "compare", "-f", "vhdx", "-F", "raw", back, raw).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img compare: %v\n%s", err, out)
	}
	if out, err := exec.Command("qemu-img", "check", "-f", "vhdx", back).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img check: %v\n%s", err, out)
	}
	img, err := Open(back)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if img.Size() != size {
		t.Fatalf("size %d", img.Size())
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, ".*partial*"))
	if len(leftovers) != 0 {
		t.Fatalf("temporary files left: %v", leftovers)
	}
}

func TestConvertLeavesNoPartialFile(t *testing.T) {
	dir := t.TempDir()
	child, _ := chain(t, dir, 8<<20)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dst := filepath.Join(dir, "out.vhdx")
	if err := Convert(ctx, child, dst, FormatVHDX); err == nil {
		t.Fatal("cancelled convert succeeded")
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() != "base.vhdx" && e.Name() != "child.vhdx" {
			t.Fatalf("convert left %s behind", e.Name())
		}
	}
	if err := Convert(context.Background(), child, dst, "qcow2"); err == nil || !strings.Contains(err.Error(), "qcow2") {
		t.Fatalf("unknown format: %v", err)
	}
}

func TestDescribe(t *testing.T) {
	dir := t.TempDir()
	child, model := chain(t, dir, 8<<20)
	info, err := Describe(context.Background(), child)
	if err != nil {
		t.Fatal(err)
	}
	if info.Format != FormatVHDX || info.VirtualSize != 8<<20 || info.BlockSize != 2<<20 ||
		info.LogicalSectorSize != 512 || filepath.Base(info.Parent) != "base.vhdx" {
		t.Fatalf("info %+v", info)
	}
	for off := range model {
		if model[off] == 0 {
			continue
		}
		in := false
		for _, e := range info.Allocated {
			in = in || (int64(off) >= e.Offset && int64(off) < e.End())
		}
		if !in {
			t.Fatalf("non-zero byte %d outside allocated %v", off, info.Allocated)
		}
	}
	b, _ := json.Marshal(info)
	var m map[string]any
	json.Unmarshal(b, &m)
	for _, k := range []string{"format", "virtualSize", "blockSize", "logicalSectorSize", "parent", "allocated", "partitions", "excluded"} {
		if _, ok := m[k]; !ok {
			t.Fatalf("JSON lacks %q: %s", k, b)
		}
	}
	if m["partitions"] == nil || m["excluded"] == nil {
		t.Fatalf("partitions and excluded must be lists: %s", b)
	}
	raw := filepath.Join(dir, "r.raw")
	os.WriteFile(raw, model, 0o644)
	info, err = InfoOf(raw)
	if err != nil || info.Format != FormatRaw || info.VirtualSize != 8<<20 || info.Parent != "" {
		t.Fatalf("raw info %+v, %v", info, err)
	}
}

func TestDetectDamagedVHDX(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bad.vhdx")
	os.WriteFile(p, []byte("garbage"), 0o644)
	_, err := Open(p)
	var fe *vhdx.FormatError
	if !errors.As(err, &fe) || fe.Offset != 0 {
		t.Fatalf("open of a damaged .vhdx: %v", err)
	}
}
