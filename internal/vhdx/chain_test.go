package vhdx

import (
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
)

// buildChain makes a base and depth children in dir, each with random
// writes, and returns the paths (base first) and the model of the leaf.
func buildChain(t *testing.T, dir string, size int64, sector uint32, depth int, seed int64) ([]string, []byte) {
	t.Helper()
	rng := rand.New(rand.NewSource(seed))
	model := make([]byte, size)
	paths := []string{filepath.Join(dir, "base.vhdx")}
	d, err := Create(paths[0], CreateOptions{Size: size, BlockSize: 4 << 20, LogicalSectorSize: sector})
	if err != nil {
		t.Fatal(err)
	}
	applyWrites(t, d, model, randomWrites(rng, size, 20, 2<<20))
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= depth; i++ {
		p := filepath.Join(dir, name("child%d.vhdx", i))
		c, err := CreateDifferencing(p, paths[len(paths)-1], CreateOptions{BlockSize: uint32(1 << (20 + rng.Intn(2)))})
		if err != nil {
			t.Fatal(err)
		}
		requireSame(t, name("new child %d", i), readAll(t, c, 1<<20), model)
		ws := randomWrites(rng, size, 25, 1<<20)
		// A whole-block write and a zero write over parent data.
		ws = append(ws, write{int64(c.BlockSize()), make([]byte, c.BlockSize())})
		applyWrites(t, c, model, ws)
		requireSame(t, name("child %d before close", i), readAll(t, c, 1<<20), model)
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths, model
}

func TestDifferencingChains(t *testing.T) {
	for depth := 1; depth <= 4; depth++ {
		for _, sector := range []uint32{512, 4096} {
			t.Run(name("depth%d-sector%d", depth, sector), func(t *testing.T) {
				t.Parallel()
				size := int64(24<<20 + 8192)
				paths, model := buildChain(t, t.TempDir(), size, sector, depth, int64(depth)*int64(sector))
				leaf := mustOpen(t, paths[len(paths)-1])
				defer leaf.Close()
				requireSame(t, "leaf", readAll(t, leaf, 333*512), model)
				requireAllocatedCovers(t, leaf.Allocated(), model)
				n := 0
				for l := leaf; l != nil; l = l.Parent() {
					n++
				}
				if n != depth+1 {
					t.Fatalf("chain has %d layers, want %d", n, depth+1)
				}
				// A rewritten leaf layer: reads of its own data need no parent.
				own, err := OpenWith(paths[len(paths)-1], OpenOptions{NoParent: true})
				if err != nil {
					t.Fatal(err)
				}
				defer own.Close()
				got := readAll(t, own, 1<<20)
				for _, e := range own.OwnAllocated() {
					requireSame(t, name("own extent %+v", e), got[e.Offset:e.End()], model[e.Offset:e.End()])
				}
			})
		}
	}
}

func TestDifferencingParentChecks(t *testing.T) {
	dir := t.TempDir()
	paths, _ := buildChain(t, dir, 8<<20, 512, 2, 7)

	// Moving the folder keeps the chain readable through relative paths.
	moved := filepath.Join(t.TempDir(), "moved")
	if err := os.Rename(dir, moved); err != nil {
		t.Fatal(err)
	}
	d, err := Open(filepath.Join(moved, "child2.vhdx"))
	if err != nil {
		t.Fatalf("open moved chain: %v", err)
	}
	d.Close()

	// Writing to the middle changes its DataWriteGuid: the leaf no longer links.
	mid, err := OpenWith(filepath.Join(moved, "child1.vhdx"), OpenOptions{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mid.WriteAt(make([]byte, 512), 0); err != nil {
		t.Fatal(err)
	}
	mid.Close()
	_, err = Open(filepath.Join(moved, "child2.vhdx"))
	var fe *FormatError
	if !errors.As(err, &fe) {
		t.Fatalf("open with changed parent: %v, want a FormatError on linkage", err)
	}
	if _, err := OpenWith(filepath.Join(moved, "child2.vhdx"), OpenOptions{IgnoreParentLinkage: true}); err != nil {
		t.Fatalf("IgnoreParentLinkage: %v", err)
	}

	// A missing parent is an error naming it.
	os.Remove(filepath.Join(moved, "base.vhdx"))
	if _, err := Open(filepath.Join(moved, "child1.vhdx")); err == nil {
		t.Fatal("open without base succeeded")
	}
	_ = paths
}

// Explicit parents override the locator.
func TestExplicitParents(t *testing.T) {
	dir := t.TempDir()
	paths, model := buildChain(t, dir, 8<<20, 512, 2, 9)
	other := t.TempDir()
	for _, p := range paths[:2] {
		if err := os.Rename(p, filepath.Join(other, filepath.Base(p))); err != nil {
			t.Fatal(err)
		}
	}
	d, err := OpenWith(paths[2], OpenOptions{Parents: []string{filepath.Join(other, "child1.vhdx"), filepath.Join(other, "base.vhdx")}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	requireSame(t, "explicit chain", readAll(t, d, 1<<20), model)
}

// Concurrent readers of a chain see the same bytes as one reader.
func TestConcurrentReads(t *testing.T) {
	paths, model := buildChain(t, t.TempDir(), 16<<20, 512, 2, 31)
	d := mustOpen(t, paths[2])
	defer d.Close()
	errs := make(chan error, 4)
	for g := 0; g < 4; g++ {
		go func(g int) {
			rng := rand.New(rand.NewSource(int64(g)))
			buf := make([]byte, 300_000)
			for i := 0; i < 200; i++ {
				off := rng.Int63n(int64(len(model) - len(buf)))
				if _, err := d.ReadAt(buf, off); err != nil {
					errs <- err
					return
				}
				if string(buf) != string(model[off:off+int64(len(buf))]) {
					errs <- errors.New(name("goroutine %d: wrong bytes at %d", g, off))
					return
				}
			}
			errs <- nil
		}(g)
	}
	for g := 0; g < 4; g++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// A child block written piecewise until complete becomes fully present, and
// a child keeps its parent's virtual disk ID.
func TestChildBlockCompletes(t *testing.T) {
	dir := t.TempDir()
	paths, model := buildChain(t, dir, 3<<20+512, 512, 0, 41)
	c, err := CreateDifferencing(filepath.Join(dir, "c.vhdx"), paths[0], CreateOptions{BlockSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	half := make([]byte, 512<<10)
	for i := range half {
		half[i] = byte(i)
	}
	// Block 1 in two halves; the last, short block (512 bytes) whole.
	applyWrites(t, c, model, []write{{1 << 20, half}, {3 << 20, half[:512]}, {1<<20 + 512<<10, half}})
	for _, b := range []int64{1, 3} {
		if st := entryState(c.bat[c.geo.payloadIndex(b)]); st != payloadFullyPresent {
			t.Fatalf("block %d state %d, want fully present", b, st)
		}
	}
	c.Close()
	c = mustOpen(t, filepath.Join(dir, "c.vhdx"))
	defer c.Close()
	requireSame(t, "completed blocks", readAll(t, c, 1<<20), model)
	if c.diskID != c.Parent().diskID || c.diskID.IsZero() {
		t.Fatalf("child disk ID %v, parent %v", c.diskID, c.Parent().diskID)
	}
}
