package transfer_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/replicator/replicator/internal/blockplan"
	"github.com/replicator/replicator/internal/codec"
	"github.com/replicator/replicator/internal/transfer"
	"github.com/replicator/replicator/internal/transfer/transfertest"
	"github.com/replicator/replicator/internal/zeros"
)

func TestSendFullEveryLevel(t *testing.T) {
	server, client, _ := testPKI(t)
	const bs = 64 << 10
	for _, level := range codec.Levels() {
		t.Run(level.String(), func(t *testing.T) {
			dir := t.TempDir()
			src := makeSource(t, dir, 6<<20+1234, bs, 7)
			target := &transfertest.Target{Dir: t.TempDir()}
			if err := target.Begin(testJob, testVM, testCP); err != nil {
				t.Fatal(err)
			}
			addr := startReceiver(t, target, server, transfer.ReceiverOptions{})
			s := &transfer.Sender{Address: addr, TLS: client}
			opts := options(bs)
			opts.Compression = level
			var acks []int64
			res, err := s.SendDisk(context.Background(), src.open(t), nil, nil, opts, func(p transfer.Progress) { acks = append(acks, p.Acknowledged) })
			if err != nil {
				t.Fatal(err)
			}
			plan := blockplan.Full(src.size, bs, src.allocated)
			want := expected(t, src.path, nil)
			checkReplica(t, target, hello(src.size, bs), want, plan)

			blocks, bytes := blockplan.Count(plan)
			var zero int64
			for b := range plan {
				if zeros.All(want[b.Offset:b.End()]) {
					zero++
				}
			}
			if res.BlocksChanged != blocks || res.BytesRead != bytes || res.BytesWritten != bytes || res.BlocksZero != zero {
				t.Errorf("result %+v; want %d blocks changed, %d bytes read and written, %d zero", res, blocks, bytes, zero)
			}
			if res.Acknowledged != src.size || res.ResumedFromByte != 0 {
				t.Errorf("acknowledged %d resumed from %d; want %d and 0", res.Acknowledged, res.ResumedFromByte, src.size)
			}
			if level == codec.None && res.BytesSent != bytes-zero*bs {
				t.Errorf("level none sent %d payload bytes, want %d", res.BytesSent, bytes-zero*bs)
			}
			if level != codec.None && res.BytesSent >= bytes-zero*bs {
				t.Errorf("level %s sent %d payload bytes for %d non-zero bytes", level, res.BytesSent, bytes-zero*bs)
			}
			if len(acks) == 0 || acks[len(acks)-1] != src.size {
				t.Errorf("progress saw acknowledgements %v, want the last at %d", acks, src.size)
			}
			// A second Done of the same point (a retried activity) resumes at
			// the end and sends nothing.
			res, err = s.SendDisk(context.Background(), src.open(t), nil, nil, opts, nil)
			if err != nil {
				t.Fatal(err)
			}
			if res.ResumedFromByte != src.size || res.BlocksChanged != 0 || res.BytesRead != 0 {
				t.Errorf("repeat after completion: %+v", res)
			}
		})
	}
}

// TestResumeAcrossCuts cuts the connection at random points, many times,
// and resumes until done: the replica must be byte-identical.
func TestResumeAcrossCuts(t *testing.T) {
	server, client, _ := testPKI(t)
	const bs = 64 << 10
	for _, seed := range []uint64{1, 2, 3} {
		dir := t.TempDir()
		src := makeSource(t, dir, 16<<20+4097, bs, seed)
		target := &transfertest.Target{Dir: t.TempDir()}
		if err := target.Begin(testJob, testVM, testCP); err != nil {
			t.Fatal(err)
		}
		addr := startReceiver(t, target, server, transfer.ReceiverOptions{PersistBytes: 256 << 10})
		r := rand.New(rand.NewPCG(seed, 99))
		proxy := newCutProxy(t, func() string { return addr }, func() int64 { return 20<<10 + r.Int64N(3<<20) })
		s := &transfer.Sender{Address: proxy.addr(), TLS: client}
		opts := options(bs)
		opts.Compression = codec.Fast
		res, err := s.SendDiskWithRetry(context.Background(), src.open(t), nil, nil, opts, nil,
			transfer.RetryPolicy{Attempts: 500, Backoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if proxy.cuts.Load() < 3 {
			t.Fatalf("seed %d: only %d cuts; the test did not exercise resuming", seed, proxy.cuts.Load())
		}
		plan := blockplan.Full(src.size, bs, src.allocated)
		checkReplica(t, target, hello(src.size, bs), expected(t, src.path, nil), plan)
		_, bytes := blockplan.Count(plan)
		if res.BytesWritten != bytes {
			t.Errorf("seed %d: %d bytes written over all attempts, want %d", seed, res.BytesWritten, bytes)
		}
		t.Logf("seed %d: %d cuts, %d bytes written for %d planned", seed, proxy.cuts.Load(), res.BytesWritten, bytes)
	}
}

// TestCancelThenResume: a backup window that closes cancels the transfer;
// the acknowledged position stays, and the next run resumes there.
func TestCancelThenResume(t *testing.T) {
	server, client, _ := testPKI(t)
	const bs = 64 << 10
	src := makeSource(t, t.TempDir(), 16<<20, bs, 41)
	target := &transfertest.Target{Dir: t.TempDir()}
	target.Begin(testJob, testVM, testCP)
	addr := startReceiver(t, target, server, transfer.ReceiverOptions{PersistBytes: 128 << 10})
	s := &transfer.Sender{Address: addr, TLS: client}
	ctx, cancel := context.WithCancel(context.Background())
	var acked int64
	_, err := s.SendDisk(ctx, src.open(t), nil, nil, options(bs), func(p transfer.Progress) {
		if p.Acknowledged > src.size/4 && acked == 0 {
			acked = p.Acknowledged
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) || transfer.IsRetryable(err) {
		t.Fatalf("err = %v, want the cancellation, not retryable", err)
	}
	if acked == 0 {
		t.Fatal("never acknowledged before the cancellation")
	}
	res, err := s.SendDisk(context.Background(), src.open(t), nil, nil, options(bs), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.ResumedFromByte < acked {
		t.Fatalf("resumed from %d, want at least the acknowledged %d", res.ResumedFromByte, acked)
	}
	checkReplica(t, target, hello(src.size, bs), expected(t, src.path, nil), blockplan.Full(src.size, bs, src.allocated))
}

// TestRateCapped: a transfer under a bandwidth cap still lands intact.
func TestRateCapped(t *testing.T) {
	server, client, _ := testPKI(t)
	const bs = 64 << 10
	src := makeSource(t, t.TempDir(), 3<<20, bs, 51)
	target := &transfertest.Target{Dir: t.TempDir()}
	target.Begin(testJob, testVM, testCP)
	addr := startReceiver(t, target, server, transfer.ReceiverOptions{})
	s := &transfer.Sender{Address: addr, TLS: client, BytesPerSecond: 2 << 20}
	if _, err := s.SendDisk(context.Background(), src.open(t), nil, nil, options(bs), nil); err != nil {
		t.Fatal(err)
	}
	checkReplica(t, target, hello(src.size, bs), expected(t, src.path, nil), blockplan.Full(src.size, bs, src.allocated))
}
