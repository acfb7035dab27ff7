//go:build unix && bench

package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/provider/lab"
)

// TestRPOSustained holds a job's rpo under load (`make rpo`): N lab VMs,
// each with a writer making random 64 KiB writes at 1 MiB/s, replicated by
// the schedule the jobs role keeps for rpo, on the whole in-process stack.
// Once every VM has its first point, the age of each VM's newest restore
// point is sampled every second for the duration; it reports p50, p99 and
// max of the lag (all samples, and the worst VM), the CPU time and peak RSS
// of the process (Temporal server, workers, proxy and agent together) and
// the largest workflow histories. Afterwards every restore point verifies
// against its digests and a final run (writers stopped) equals the source.
//
//	REPLICATOR_RPO=30s REPLICATOR_RPO_MINUTES=10 REPLICATOR_RPO_VMS=20 go test -tags bench ./workers -run TestRPOSustained -v -timeout 60m
func TestRPOSustained(t *testing.T) {
	env := func(name string, def string) string {
		if v := os.Getenv(name); v != "" {
			return v
		}
		return def
	}
	rpo, err := time.ParseDuration(env("REPLICATOR_RPO", "30s"))
	if err != nil || rpo < config.MinRPO {
		t.Fatalf("REPLICATOR_RPO: %v (want at least %s)", err, config.MinRPO)
	}
	minutes, err := strconv.ParseFloat(env("REPLICATOR_RPO_MINUTES", "10"), 64)
	if err != nil || minutes <= 0 {
		t.Fatalf("REPLICATOR_RPO_MINUTES: want a positive number")
	}
	n, err := strconv.Atoi(env("REPLICATOR_RPO_VMS", "20"))
	if err != nil || n < 1 {
		t.Fatalf("REPLICATOR_RPO_VMS: want a positive number")
	}
	const diskSize = 64 << 20
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("busy%02d", i+1)
	}
	h := newHarness(t, roleSet{}, false, func(c *config.Config) {
		c.Jobs[0].VMs = names
		c.Jobs[0].Parallelism = min(n, 8)
		c.Jobs[0].Exclude.Swap = false
		c.Jobs[0].Retention = 3
	})
	ctx := context.Background()
	labPath := h.cfg.Hosts[0].Path
	host := lab.New("hv01", labPath)
	for i, name := range names {
		if _, err := lab.CreateVM(labPath, name, []int64{diskSize}); err != nil {
			t.Fatal(err)
		}
		if err := host.Write(ctx, name, 0, 20, int64(i+1)); err != nil {
			t.Fatal(err)
		}
	}

	// Writers: 1 MiB/s each, 64 KiB at a random 4 KiB-aligned offset.
	wctx, stopWriters := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var werrMu sync.Mutex
	var werr error
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			buf := make([]byte, 64<<10)
			tick := time.NewTicker(time.Second / 16)
			defer tick.Stop()
			for {
				select {
				case <-wctx.Done():
					return
				case <-tick.C:
				}
				for j := range buf {
					buf[j] = byte(rng.Uint32())
				}
				off := rng.Int64N((diskSize-int64(len(buf)))/4096) * 4096
				if err := host.WriteAt(wctx, name, 0, buf, off); err != nil && wctx.Err() == nil {
					werrMu.Lock()
					werr = fmt.Errorf("writer of %s: %w", name, err)
					werrMu.Unlock()
					return
				}
			}
		}()
	}
	defer func() { stopWriters(); wg.Wait() }()

	// The jobs role starts with the rpo: nothing else starts a run.
	h.cfg.Jobs[0].RPO = rpo
	h.writeConfig()
	h.start(roleSet{jobs: true, proxy: true, target: true})

	lags := func() map[string]float64 {
		reps, err := replicaAges(h.store(), func() (*config.Config, error) { return h.cfg, nil })
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, r := range reps {
			if !r.Newest.IsZero() {
				out[r.VM] = time.Since(r.Newest).Seconds()
			}
		}
		return out
	}
	warm := time.Now()
	for len(lags()) < n {
		if time.Since(warm) > 15*time.Minute {
			t.Fatalf("after 15 minutes only %d of %d VMs have a restore point", len(lags()), n)
		}
		time.Sleep(time.Second)
	}
	t.Logf("every VM has its first point after %s", time.Since(warm).Round(time.Second))

	before := processUsage(t)
	began := time.Now()
	var all []float64
	perVM := map[string][]float64{}
	for time.Since(began) < time.Duration(minutes*float64(time.Minute)) {
		time.Sleep(time.Second)
		for vm, lag := range lags() {
			all = append(all, lag)
			perVM[vm] = append(perVM[vm], lag)
		}
	}
	after := processUsage(t)
	elapsed := time.Since(began)
	stopWriters()
	wg.Wait()
	if werr != nil {
		t.Fatal(werr)
	}

	// The schedule stops; a final run sees the disks at rest.
	sched := h.c.ScheduleClient().GetHandle(ctx, contract.ScheduleID("demo"))
	if err := sched.Pause(ctx, client.SchedulePauseOptions{Note: "end of the benchmark"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	var final contract.ReplicationResult
	for {
		// A run the schedule started may still hold VMs (overlap: skip).
		final = h.run(contract.ReplicationInput{Job: "demo"})
		if final.Status == contract.StatusSuccess {
			break
		}
		if time.Since(began) > time.Duration(minutes*float64(time.Minute))+10*time.Minute {
			t.Fatalf("final run: %+v", final)
		}
		time.Sleep(5 * time.Second)
	}
	h.checkReplicaMatchesSource(final)

	// Every restore point kept verifies against its digests.
	store := h.store()
	points := 0
	for _, vm := range final.VMs {
		r, err := store.Replica("demo", vm.ID)
		if err != nil {
			t.Fatal(err)
		}
		pts, err := r.Points()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pts {
			if _, err := r.Verify(ctx, p.ID); err != nil {
				t.Fatalf("VM %s point %s: %v", vm.Name, p.ID, err)
			}
			points++
		}
	}

	// Histories: every job run and every VM run.
	runs, maxEvents, maxBytes, maxID := 0, int64(0), int64(0), ""
	var token []byte
	for {
		resp, err := h.c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{NextPageToken: token, PageSize: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, ex := range resp.Executions {
			runs++
			if ex.HistoryLength > maxEvents {
				maxEvents, maxID = ex.HistoryLength, ex.Execution.GetWorkflowId()
			}
			maxBytes = max(maxBytes, ex.HistorySizeBytes)
		}
		if token = resp.NextPageToken; len(token) == 0 {
			break
		}
	}

	// The schedule that starts the runs is a workflow of the server's own,
	// which visibility does not list: its runs (it continues as new when
	// the server suggests it) are found from the current one backwards.
	schedWF := "temporal-sys-scheduler:" + contract.ScheduleID("demo")
	schedRuns, schedMax := 0, int64(0)
	for runID := ""; ; {
		d, err := h.c.DescribeWorkflowExecution(ctx, schedWF, runID)
		if err != nil {
			t.Logf("the schedule's workflow %s: %v", schedWF, err)
			break
		}
		info := d.GetWorkflowExecutionInfo()
		schedRuns++
		schedMax = max(schedMax, info.GetHistoryLength())
		it := h.c.GetWorkflowHistory(ctx, schedWF, info.GetExecution().GetRunId(), false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		first, err := it.Next()
		if err != nil {
			t.Fatal(err)
		}
		if runID = first.GetWorkflowExecutionStartedEventAttributes().GetContinuedExecutionRunId(); runID == "" {
			break
		}
	}
	if schedRuns > 0 {
		t.Logf("the schedule's own workflow %s: %d runs, the largest %d events", schedWF, schedRuns, schedMax)
		if schedMax > maxEvents {
			maxEvents, maxID = schedMax, schedWF
		}
	}

	p := func(xs []float64, q float64) float64 {
		s := slices.Clone(xs)
		slices.Sort(s)
		return s[min(len(s)-1, int(q*float64(len(s))))]
	}
	worst, worstVM := 0.0, ""
	for vm, xs := range perVM {
		if m := slices.Max(xs); m > worst {
			worst, worstVM = m, vm
		}
	}
	t.Logf("rpo %s, %d VMs of %d MiB writing 1 MiB/s each, %s measured (%d samples)", rpo, n, diskSize>>20, elapsed.Round(time.Second), len(all))
	t.Logf("| rpo | VMs | minutes | lag p50 | lag p99 | lag max (VM) | CPU of the process | peak RSS | workflow runs | largest history |")
	t.Logf("|---|---|---|---|---|---|---|---|---|---|")
	cpu := after.user + after.system - before.user - before.system
	t.Logf("| %s | %d | %.0f | %.1f s | %.1f s | %.1f s (%s) | %.0f%% of one core | %d MiB | %d | %d events (%s), largest %d bytes |",
		rpo, n, minutes, p(all, 0.5), p(all, 0.99), worst, worstVM, 100*cpu.Seconds()/elapsed.Seconds(), after.maxRSS>>20, runs, maxEvents, maxID, maxBytes)
	t.Logf("%d restore points verified; the final one of each VM equals its source", points)
	if maxEvents > maxHistoryEvents {
		t.Errorf("history of %s has %d events, more than %d", maxID, maxEvents, maxHistoryEvents)
	}
	if rpo == 30*time.Second && (p(all, 0.99) >= 30 || worst >= 45) {
		t.Errorf("rpo 30s not held: p99 %.1f s (want < 30), max %.1f s (want < 45)", p(all, 0.99), worst)
	}
}
