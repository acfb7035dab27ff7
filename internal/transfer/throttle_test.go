package transfer_test

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/replicator/replicator/internal/blockplan"
	"github.com/replicator/replicator/internal/hours"
	"github.com/replicator/replicator/internal/throttle"
	"github.com/replicator/replicator/internal/transfer"
	"github.com/replicator/replicator/internal/transfer/transfertest"
)

// countingLimit passes waits to a throttle and counts the bytes.
type countingLimit struct {
	t     *throttle.Throttle
	bytes atomic.Int64
}

func (c *countingLimit) Wait(ctx context.Context, n int64) error {
	err := c.t.Wait(ctx, n)
	if err == nil {
		c.bytes.Add(n)
	}
	return err
}

// sendTwo sends two disks at once through one shared limit and returns how long it took.
func sendTwo(t *testing.T, limit *countingLimit) time.Duration {
	t.Helper()
	server, client, _ := testPKI(t)
	const bs = 64 << 10
	const size = 24 << 20
	target := &transfertest.Target{Dir: t.TempDir()}
	target.Begin(testJob, testVM, testCP)
	addr := startReceiver(t, target, server, transfer.ReceiverOptions{Logger: quietLogger()})
	var wg sync.WaitGroup
	start := time.Now()
	for i, disk := range []string{"disk0", "disk1"} {
		src := makeSource(t, filepath.Join(t.TempDir()), size, bs, uint64(70+i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := &transfer.Sender{Address: addr, TLS: client, Limit: limit}
			o := options(bs)
			o.DiskID = disk
			if _, err := s.SendDisk(context.Background(), src.open(t), nil, nil, o, nil); err != nil {
				t.Error(err)
				return
			}
			h := hello(src.size, bs)
			h.DiskID = disk
			checkReplica(t, target, h, expected(t, src.path, nil), blockplan.Full(src.size, bs, src.allocated))
		}()
	}
	wg.Wait()
	return time.Since(start)
}

// TestThrottleSharedByTransfers: two disks sending at once through one
// target's throttle of 10 MiB/s move about 10 MiB/s together, not each.
func TestThrottleSharedByTransfers(t *testing.T) {
	const limit = 10 << 20
	l := &countingLimit{t: throttle.New([]throttle.Rule{{BytesPerSecond: limit}})}
	took := sendTwo(t, l)
	rate := float64(l.bytes.Load()) / took.Seconds()
	t.Logf("%d bytes in %s: %.1f MiB/s", l.bytes.Load(), took, rate/(1<<20))
	if took < 2*time.Second || rate > 1.15*limit || rate < 0.7*limit {
		t.Fatalf("two transfers moved %.1f MiB/s together in %s; want about %d MiB/s", rate/(1<<20), took, limit>>20)
	}
}

// TestThrottleBoundaryDuringTransfer: at the end of the rule's hours the
// limit lifts while the transfers run.
func TestThrottleBoundaryDuringTransfer(t *testing.T) {
	const limit = 4 << 20
	office, err := hours.Parse("Mon-Sun 00:00-12:00", time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	th := throttle.New([]throttle.Rule{{BytesPerSecond: limit, Hours: office}, {BytesPerSecond: 0}})
	var clock atomic.Int64
	clock.Store(time.Date(2026, 12, 3, 11, 59, 59, 0, time.UTC).UnixNano())
	th.Now = func() time.Time { return time.Unix(0, clock.Load()) }
	l := &countingLimit{t: th}
	var boundary atomic.Int64
	go func() {
		time.Sleep(1500 * time.Millisecond)
		boundary.Store(l.bytes.Load())
		clock.Store(time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC).UnixNano())
	}()
	took := sendTwo(t, l)
	total, before := l.bytes.Load(), boundary.Load()
	t.Logf("%d bytes before the boundary, %d in all, in %s", before, total, took)
	// Limited for 1.5 s: about 6 MiB; the rest (about 30 MiB) would take
	// 7 s more at the old limit.
	if before > 8<<20 || before < 3<<20 {
		t.Fatalf("%d bytes went in the limited 1.5 s; want about %d", before, limit*3/2)
	}
	if took > 4*time.Second {
		t.Fatalf("the transfers took %s: the limit did not lift at the boundary", took)
	}
}
