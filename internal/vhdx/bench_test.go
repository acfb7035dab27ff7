package vhdx

import (
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/replicator/replicator/internal/disk"
)

// BenchmarkSequentialRead reads the same 256 MiB of data from a dynamic VHDX
// and from a raw file, 1 MiB at a time (page cache warm).
func BenchmarkSequentialRead(b *testing.B) {
	const size = 256 << 20
	dir := b.TempDir()
	data := make([]byte, size)
	rand.New(rand.NewSource(1)).Read(data)
	rawPath := filepath.Join(dir, "d.raw")
	if err := os.WriteFile(rawPath, data, 0o644); err != nil {
		b.Fatal(err)
	}
	vPath := filepath.Join(dir, "d.vhdx")
	v, err := Create(vPath, CreateOptions{Size: size})
	if err != nil {
		b.Fatal(err)
	}
	// Written out of order, so that blocks are not contiguous in the file.
	bs := int64(v.BlockSize())
	for _, blk := range rand.New(rand.NewSource(2)).Perm(size / int(bs)) {
		off := int64(blk) * bs
		if _, err := v.WriteAt(data[off:off+bs], off); err != nil {
			b.Fatal(err)
		}
	}
	if err := v.Close(); err != nil {
		b.Fatal(err)
	}
	data = nil
	bench := func(b *testing.B, img disk.Image) {
		buf := make([]byte, 1<<20)
		b.SetBytes(size)
		b.ResetTimer()
		cpu := processCPU()
		for i := 0; i < b.N; i++ {
			for off := int64(0); off < size; off += int64(len(buf)) {
				if _, err := img.ReadAt(buf, off); err != nil && err != io.EOF {
					b.Fatal(err)
				}
			}
		}
		// CPU time is steadier than wall time on a shared machine.
		b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
	}
	b.Run("raw", func(b *testing.B) {
		r, err := disk.OpenRaw(rawPath, false)
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close()
		bench(b, r)
	})
	b.Run("vhdx", func(b *testing.B) {
		d, err := Open(vPath)
		if err != nil {
			b.Fatal(err)
		}
		defer d.Close()
		bench(b, d)
	})
}

// BenchmarkSequentialWrite writes 128 MiB in 1 MiB writes, then syncs: into
// a raw file, a new dynamic VHDX, and a new differencing child (2 MiB
// blocks, as restore points are written).
func BenchmarkSequentialWrite(b *testing.B) {
	const size = 128 << 20
	data := make([]byte, 1<<20)
	rand.New(rand.NewSource(1)).Read(data)
	parentDir := b.TempDir()
	parent := filepath.Join(parentDir, "parent.vhdx")
	p, err := Create(parent, CreateOptions{Size: size})
	if err != nil {
		b.Fatal(err)
	}
	p.Close()
	bench := func(b *testing.B, create func(path string) (disk.WritableImage, error)) {
		b.SetBytes(size)
		for i := 0; i < b.N; i++ {
			path := filepath.Join(parentDir, name("w%d", i))
			img, err := create(path)
			if err != nil {
				b.Fatal(err)
			}
			for off := int64(0); off < size; off += int64(len(data)) {
				if _, err := img.WriteAt(data, off); err != nil {
					b.Fatal(err)
				}
			}
			if err := img.Sync(); err != nil {
				b.Fatal(err)
			}
			img.Close()
			b.StopTimer()
			os.Remove(path)
			b.StartTimer()
		}
	}
	b.Run("raw", func(b *testing.B) {
		bench(b, func(path string) (disk.WritableImage, error) { return disk.CreateRaw(path, size) })
	})
	b.Run("vhdx", func(b *testing.B) {
		bench(b, func(path string) (disk.WritableImage, error) { return Create(path, CreateOptions{Size: size}) })
	})
	b.Run("vhdx-child", func(b *testing.B) {
		bench(b, func(path string) (disk.WritableImage, error) {
			return CreateDifferencing(path, parent, CreateOptions{})
		})
	})
}
