package transfer_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/replicator/replicator/internal/blockplan"
	"github.com/replicator/replicator/internal/codec"
	"github.com/replicator/replicator/internal/disk"
	"github.com/replicator/replicator/internal/transfer"
	"github.com/replicator/replicator/internal/transfer/transfertest"
)

// incrementalChanges writes 1% of the benchmark source, in ten runs of
// 1/1000 of it at random places, to a copy, and returns the copy's path and
// the changed ranges (what change tracking would report). The copy is kept
// beside the source so that rsync can be timed over the same files:
//
//	cp SOURCE replica && time rsync --inplace --no-whole-file CHANGED replica
func incrementalChanges(b *testing.B, source string) (string, []disk.Extent) {
	b.Helper()
	data, err := os.ReadFile(source)
	if err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(10, 11))
	run := int64(len(data)) / 1000
	var changed []disk.Extent
	for range 10 {
		off := r.Int64N(int64(len(data)) - run)
		for i := off; i < off+run; i++ {
			data[i] = byte(r.Uint32())
		}
		changed = append(changed, disk.Extent{Offset: off, Length: run})
	}
	path := filepath.Join(filepath.Dir(source), "replicator-bench-changed.img")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		b.Fatal(err)
	}
	return path, changed
}

// BenchmarkSendIncremental sends a 1%-changed 256 MiB disk to a file-backed
// replica that holds the previous version: with change tracking (the plan
// lists the changed blocks) and with the replica's digests (every block read
// and digested, only differing ones sent). Compare with rsync (see
// incrementalChanges).
func BenchmarkSendIncremental(b *testing.B) {
	source := benchSource(b)
	changedPath, changed := incrementalChanges(b, source)
	server, client, _ := testPKI(b)
	const bs = 1 << 20
	for _, mode := range []string{"cbt", "digest"} {
		b.Run(mode, func(b *testing.B) {
			target := &transfertest.Target{Dir: b.TempDir()}
			addr := startReceiver(b, target, server, transfer.ReceiverOptions{})
			s := &transfer.Sender{Address: addr, TLS: client}
			orig, err := openBenchImage(source)
			if err != nil {
				b.Fatal(err)
			}
			defer orig.Close()
			target.Begin(testJob, testVM, "base")
			opts := options(bs)
			opts.CheckpointID = "base"
			opts.Compression = codec.Optimal
			if _, err := s.SendDisk(context.Background(), orig, nil, nil, opts, nil); err != nil {
				b.Fatal(err)
			}
			h := hello(orig.Size(), bs)
			prev, err := os.ReadFile(target.Path(h, "prev"))
			if err != nil {
				b.Fatal(err)
			}
			img, err := openBenchImage(changedPath)
			if err != nil {
				b.Fatal(err)
			}
			defer img.Close()
			b.SetBytes(img.Size())
			var res transfer.Result
			cpu0 := cpuTime()
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				// Each run is the first incremental after the base.
				if err := os.WriteFile(target.Path(h, "prev"), prev, 0o644); err != nil {
					b.Fatal(err)
				}
				opts.CheckpointID = fmt.Sprintf("inc-%d", i)
				target.Begin(testJob, testVM, opts.CheckpointID)
				var plan blockplan.Plan
				opts.CompareDigests = mode == "digest"
				if mode == "cbt" {
					plan = blockplan.Changed(img.Size(), bs, changed)
				}
				b.StartTimer()
				res, err = s.SendDisk(context.Background(), img, plan, nil, opts, nil)
				if err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(res.BlocksChanged), "blocks-sent")
			b.ReportMetric((cpuTime()-cpu0).Seconds()/float64(b.N), "cpu-s/op")
		})
	}
}
