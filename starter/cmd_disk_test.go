package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/replicator/replicator/internal/vhdx"
)

func runStarter(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func TestDiskInfoAndConvert(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "d.vhdx")
	d, err := vhdx.Create(src, vhdx.CreateOptions{Size: 6 << 20, BlockSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("replica!"), 512)
	if _, err := d.WriteAt(data, 3<<20); err != nil {
		t.Fatal(err)
	}
	d.Close()

	out, err := runStarter(t, "disk", "info", src, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Format            string
		VirtualSize       int64
		BlockSize         int64
		LogicalSectorSize int
		Parent            string
		Allocated         []struct{ Offset, Length int64 }
		Partitions        []any
		Excluded          []any
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if info.Format != "vhdx" || info.VirtualSize != 6<<20 || info.BlockSize != 1<<20 || info.LogicalSectorSize != 512 ||
		len(info.Allocated) != 1 || info.Allocated[0].Offset != 3<<20 || info.Partitions == nil || info.Excluded == nil {
		t.Fatalf("disk info: %s", out)
	}
	if out, err := runStarter(t, "disk", "info", src); err != nil || !bytes.Contains([]byte(out), []byte("vhdx")) {
		t.Fatalf("human info: %v %s", err, out)
	}

	dst := filepath.Join(dir, "d.raw")
	if _, err := runStarter(t, "disk", "convert", src, dst, "--format", "raw"); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 6<<20)
	copy(want[3<<20:], data)
	if !bytes.Equal(got, want) {
		t.Fatal("converted bytes differ")
	}
	if _, err := runStarter(t, "disk", "info", filepath.Join(dir, "missing.vhdx")); err == nil {
		t.Fatal("info of a missing file succeeded")
	}
}
