package vhdx

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func layerModel(t *testing.T, path string) []byte {
	t.Helper()
	d := mustOpen(t, path)
	defer d.Close()
	return readAll(t, d, 1<<20)
}

func TestMergeBaseAndSetParent(t *testing.T) {
	for _, direct := range []bool{false, true} {
		t.Run(name("direct=%v", direct), func(t *testing.T) { mergeBaseAndSetParent(t, direct) })
	}
}

// mergeBaseAndSetParent is TestMergeBaseAndSetParent, its merges writing the
// parent by direct I/O or not.
func mergeBaseAndSetParent(t *testing.T, direct bool) {
	dir := t.TempDir()
	paths, leafModel := buildChain(t, dir, 20<<20+1024, 512, 3, 11)
	c1Model := layerModel(t, paths[1])
	// Twice: a rerun after a crash must leave the same parent.
	for i := 0; i < 2; i++ {
		if err := MergeWith(context.Background(), paths[1], paths[0], MergeOptions{DirectWrites: direct}); err != nil {
			t.Fatalf("merge %d: %v", i, err)
		}
		base := mustOpen(t, paths[0])
		requireSame(t, name("base after merge %d", i), readAll(t, base, 1<<20), c1Model)
		base.Close()
	}
	qemuCheck(t, paths[0], c1Model)
	// The old child of c1 no longer links to anything valid until re-linked.
	if _, err := Open(paths[2]); err == nil {
		t.Fatal("child of a merged layer opens before SetParent")
	}
	if err := SetParent(paths[2], paths[0]); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(paths[1]); err != nil {
		t.Fatal(err)
	}
	leaf := mustOpen(t, paths[3])
	defer leaf.Close()
	requireSame(t, "leaf after merge and SetParent", readAll(t, leaf, 1<<20), leafModel)
	if got := leaf.Parent().Parent().Path(); filepath.Base(got) != "base.vhdx" {
		t.Fatalf("leaf's grandparent is %s", got)
	}
}

func TestMergeIntoDifferencingParent(t *testing.T) {
	for _, direct := range []bool{false, true} {
		t.Run(name("direct=%v", direct), func(t *testing.T) { mergeIntoDifferencingParent(t, direct) })
	}
}

func mergeIntoDifferencingParent(t *testing.T, direct bool) {
	dir := t.TempDir()
	paths, leafModel := buildChain(t, dir, 12<<20, 4096, 3, 12)
	c2Model := layerModel(t, paths[2])
	if err := MergeWith(context.Background(), paths[2], paths[1], MergeOptions{DirectWrites: direct}); err != nil {
		t.Fatal(err)
	}
	requireSame(t, "c1 after merge", layerModel(t, paths[1]), c2Model)
	if err := SetParent(paths[3], paths[1]); err != nil {
		t.Fatal(err)
	}
	os.Remove(paths[2])
	requireSame(t, "leaf", layerModel(t, paths[3]), leafModel)
	// SetParent again to the same parent is harmless.
	if err := SetParent(paths[3], paths[1]); err != nil {
		t.Fatal(err)
	}
	requireSame(t, "leaf after second SetParent", layerModel(t, paths[3]), leafModel)
}

func TestMergeChecks(t *testing.T) {
	dir := t.TempDir()
	paths, _ := buildChain(t, dir, 8<<20, 512, 2, 13)
	if err := Merge(context.Background(), paths[0], paths[1]); !errors.Is(err, ErrNotDifferencing) {
		t.Fatalf("merge of a base: %v", err)
	}
	other := filepath.Join(dir, "other.vhdx")
	d, err := Create(other, CreateOptions{Size: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	if err := Merge(context.Background(), paths[2], other); err == nil {
		t.Fatal("merge into a disk that is not the parent succeeded")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Merge(ctx, paths[2], paths[1]); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled merge: %v", err)
	}
}
