package vhdx

import (
	"bytes"
	"path/filepath"
	"testing"
)

// StartWriteback between writes changes nothing of what the disk holds: the
// data written before and after it is what a reopened disk reads after Sync.
func TestStartWritebackKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.vhdx")
	const size = 8 << 20
	d, err := Create(path, CreateOptions{Size: size, BlockSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, size)
	for i := range want[:3<<20] {
		want[i] = byte(i*13 + i>>9)
	}
	if _, err := d.WriteAt(want[:2<<20], 0); err != nil {
		t.Fatal(err)
	}
	if err := d.StartWriteback(); err != nil {
		t.Fatalf("start writeback: %v", err)
	}
	if _, err := d.WriteAt(want[2<<20:3<<20], 2<<20); err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.StartWriteback(); err != nil {
		t.Fatalf("start writeback on a closed disk: %v", err)
	}
	r := mustOpen(t, path)
	defer r.Close()
	if err := r.StartWriteback(); err != nil {
		t.Fatalf("start writeback on a read-only disk: %v", err)
	}
	got := make([]byte, size)
	if _, err := r.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("disk differs after StartWriteback and Sync")
	}
}
