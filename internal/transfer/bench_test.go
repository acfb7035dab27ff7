package transfer_test

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/replicator/replicator/internal/blockplan"
	"github.com/replicator/replicator/internal/codec"
	"github.com/replicator/replicator/internal/digest"
	"github.com/replicator/replicator/internal/disk"
	"github.com/replicator/replicator/internal/testkit"
	"github.com/replicator/replicator/internal/transfer"
)

// nullTarget accepts every disk and keeps nothing, so that benchmarks
// measure the channel and the pipeline, not the target's storage.
type nullTarget struct{}

func (nullTarget) Admit(context.Context, transfer.Hello, string) error { return nil }
func (nullTarget) OpenDisk(context.Context, transfer.Hello, string) (transfer.Sink, error) {
	return &nullSink{}, nil
}
func (nullTarget) Digests(context.Context, transfer.Hello) (int64, []digest.Sum, error) {
	return 0, nil, transfer.ErrNoDigests
}

type nullSink struct{}

func (*nullSink) WriteAt(p []byte, _ int64) (int, error) { return len(p), nil }
func (*nullSink) ReadAt(p []byte, _ int64) (int, error)  { clear(p); return len(p), nil }
func (*nullSink) Position() int64                        { return 0 }
func (*nullSink) SetDigest(int64, digest.Sum)            {}
func (*nullSink) Persist(int64) error                    { return nil }
func (*nullSink) Complete() error                        { return nil }
func (*nullSink) Close() error                           { return nil }

// benchSourcePath is where the benchmark keeps its source, so that
// `zstd -1 -c FILE | zstd -d -c > /dev/null` can run over the same bytes.
var benchSourcePath = filepath.Join(os.TempDir(), "replicator-bench-source.img")

const benchSourceSize = 256 << 20

// benchSource returns a file of real, allocated, non-zero data: the files
// under /usr concatenated (binaries, libraries, text), as a guest disk holds.
func benchSource(b *testing.B) string {
	b.Helper()
	if st, err := os.Stat(benchSourcePath); err == nil && st.Size() == benchSourceSize {
		return benchSourcePath
	}
	tmp := benchSourcePath + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		b.Fatal(err)
	}
	var written int64
	errFull := fmt.Errorf("full")
	walk := func(root string) error {
		return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return nil
			}
			in, err := os.Open(p)
			if err != nil {
				return nil
			}
			defer in.Close()
			n, _ := io.Copy(f, io.LimitReader(in, benchSourceSize-written))
			written += n
			if written >= benchSourceSize {
				return errFull
			}
			return nil
		})
	}
	for _, root := range []string{"/usr/lib", "/usr/share", "/usr/bin", "/usr/local/go"} {
		if walk(root) == errFull {
			break
		}
	}
	if written < benchSourceSize {
		b.Fatalf("only %d bytes of files under /usr: the benchmark needs real files to compress", written)
	}
	f.Close()
	if err := os.Rename(tmp, benchSourcePath); err != nil {
		b.Fatal(err)
	}
	return benchSourcePath
}

// BenchmarkSendFull sends 256 MiB of real data over loopback TLS to an agent
// that discards it (decoding and verifying every frame), per level.
func BenchmarkSendFull(b *testing.B) {
	path := benchSource(b)
	server, client, _ := testPKI(b)
	addr := startReceiver(b, nullTarget{}, server, transfer.ReceiverOptions{})
	const bs = 1 << 20
	for _, level := range codec.Levels() {
		b.Run(level.String(), func(b *testing.B) {
			img, err := openBenchImage(path)
			if err != nil {
				b.Fatal(err)
			}
			defer img.Close()
			s := &transfer.Sender{Address: addr, TLS: client}
			opts := options(bs)
			opts.Compression = level
			b.SetBytes(img.Size())
			var sent int64
			cpu0 := cpuTime()
			b.ResetTimer()
			for range b.N {
				res, err := s.SendDisk(context.Background(), img, nil, nil, opts, nil)
				if err != nil {
					b.Fatal(err)
				}
				sent = res.BytesSent
			}
			b.StopTimer()
			b.ReportMetric(float64(sent)/float64(img.Size()), "ratio")
			// CPU of sender and agent together, per byte of disk: comparable
			// with `zstd -1 -c | zstd -d -c` on a loaded machine.
			b.ReportMetric(float64(img.Size())*float64(b.N)/(1<<20)/(cpuTime()-cpu0).Seconds(), "MiB/cpu-s")
		})
	}
}

func openBenchImage(path string) (*benchFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, _ := f.Stat()
	return &benchFile{f: f, size: st.Size()}, nil
}

type benchFile struct {
	f    *os.File
	size int64
}

func (m *benchFile) ReadAt(p []byte, off int64) (int, error) { return m.f.ReadAt(p, off) }
func (m *benchFile) Close() error                            { return m.f.Close() }
func (m *benchFile) Size() int64                             { return m.size }
func (m *benchFile) SectorSize() int                         { return 512 }
func (m *benchFile) Allocated() []disk.Extent                { return []disk.Extent{{Offset: 0, Length: m.size}} }

// sparseImage is a huge disk with scattered allocated extents whose bytes are
// generated, so that no file of that size is needed.
type sparseImage struct {
	size      int64
	allocated []disk.Extent
	pattern   []byte
}

func newSparseImage(size int64, extents int, extentLen int64) *sparseImage {
	m := &sparseImage{size: size, pattern: make([]byte, 4<<20)}
	for i := range m.pattern {
		m.pattern[i] = byte(i*131) ^ byte(i>>9)
	}
	step := size / int64(extents)
	for i := range int64(extents) {
		m.allocated = append(m.allocated, disk.Extent{Offset: i*step + 12345*i%step/2, Length: extentLen})
	}
	return m
}

func (m *sparseImage) ReadAt(p []byte, off int64) (int, error) {
	for i := 0; i < len(p); {
		n := copy(p[i:], m.pattern[(off+int64(i))%int64(len(m.pattern)):])
		i += n
	}
	return len(p), nil
}
func (m *sparseImage) Close() error             { return nil }
func (m *sparseImage) Size() int64              { return m.size }
func (m *sparseImage) SectorSize() int          { return 512 }
func (m *sparseImage) Allocated() []disk.Extent { return m.allocated }

// peakHeap samples the heap in use until stop is called and returns the peak.
func peakHeap() (stop func() uint64) {
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	})
	return func() uint64 { close(done); wg.Wait(); return peak.Load() }
}

// TestMemoryBoundedOnHugeSparseDisk sends a 16 TiB sparse disk (400
// extents of 64 KiB) and asserts that the
// sender and agent of this process never hold more than 200 MiB of heap. The
// digest table of the previous point (16 MiB per TiB at 1 MiB blocks) is
// the one part that grows with the disk.
func TestMemoryBoundedOnHugeSparseDisk(t *testing.T) {
	testkit.Long(t, "sends a 16 TiB sparse disk")
	server, client, _ := testPKI(t)
	addr := startReceiver(t, nullTarget{}, server, transfer.ReceiverOptions{})
	img := newSparseImage(16<<40, 400, 64<<10)
	runtime.GC()
	stop := peakHeap()
	s := &transfer.Sender{Address: addr, TLS: client}
	opts := options(1 << 20)
	opts.Compression = codec.Optimal
	res, err := s.SendDisk(context.Background(), img, nil, nil, opts, nil)
	peak := stop()
	if err != nil {
		t.Fatal(err)
	}
	blocks, _ := blockplan.Count(blockplan.Full(img.size, 1<<20, img.allocated))
	if res.BlocksChanged != blocks {
		t.Fatalf("%d blocks sent, want %d", res.BlocksChanged, blocks)
	}
	t.Logf("16 TiB sparse disk, %d blocks sent: peak heap in use %.1f MiB", blocks, float64(peak)/(1<<20))
	if peak > 200<<20 {
		t.Fatalf("peak heap %d MiB, want under 200 MiB", peak>>20)
	}
}
