//go:build linux

package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
)

// results are the measured series, ready to be written as markdown.
type results struct {
	cfg      config
	rawFrom  string
	diskSize int64
	full     []*fullResult // one per kind of content
	// rsyncCompress is the compressor rsync -z negotiated.
	rsyncCompress string
	inc           []*series // cbt, digest, rsync
	levels        []*series
	// levelZstd are zstd pipeline runs interleaved with each level's runs.
	levelZstd []*series
	rss       []*series
}

func sizeName(n int64) string {
	if n >= 1<<30 && n%(1<<30) == 0 {
		return fmt.Sprintf("%d GiB", n>>30)
	}
	return fmt.Sprintf("%d MiB", n>>20)
}

func mib(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

func throughput(bytes int64, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f MiB/s", float64(bytes)/(1<<20)/d.Seconds())
}

func ratio(a, b time.Duration) float64 {
	if b <= 0 {
		return 0
	}
	return a.Seconds() / b.Seconds()
}

func shell(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func memTotal() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "MemTotal:") {
			return strings.TrimSpace(strings.TrimPrefix(line, "MemTotal:"))
		}
	}
	return "unknown"
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "model name") {
			if _, v, ok := strings.Cut(line, ":"); ok {
				return strings.TrimSpace(v)
			}
		}
	}
	return "unknown"
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func (r *results) table(w *strings.Builder, rows []*series, withRatio *series) {
	fmt.Fprintf(w, "| what | wall (median) | of which SendDisk | CPU user+sys (median) | throughput (disk bytes / wall) | peak RSS |")
	if withRatio != nil {
		fmt.Fprintf(w, " wall / %s | CPU / %s |", withRatio.name, withRatio.name)
	}
	fmt.Fprintf(w, "\n|---|---|---|---|---|---|")
	if withRatio != nil {
		fmt.Fprintf(w, "---|---|")
	}
	fmt.Fprintln(w)
	for _, s := range rows {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |", s.name, secs(s.wall()), s.sendDisk(), secs(s.cpu()), throughput(s.bytes, s.wall()), mib(s.peakRSS()))
		if withRatio != nil {
			fmt.Fprintf(w, " %.2f | %.2f |", ratio(s.wall(), withRatio.wall()), ratio(s.cpu(), withRatio.cpu()))
		}
		fmt.Fprintln(w)
	}
}

func runsLine(s *series) string {
	var parts []string
	for _, m := range s.runs {
		parts = append(parts, fmt.Sprintf("%.2f", m.wall.Seconds()))
	}
	return strings.Join(parts, ", ")
}

func met(ok bool) string {
	if ok {
		return "**met**"
	}
	return "**not met**"
}

func (r *results) markdown() string {
	var w strings.Builder
	size := sizeName(r.cfg.size)
	fmt.Fprintf(&w, "Produced by `make bench` (`%s`), started %s, finished %s.\n",
		r.cfg.command, r.cfg.started.Format(time.RFC3339), time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(&w, "Every figure is the median of %d runs (incrementals: %d runs, compression levels: %d runs); the runs of the compared\n", r.cfg.runs, max(r.cfg.incRuns, 1), r.cfg.levelRuns)
	fmt.Fprintf(&w, "commands are interleaved")
	if r.cfg.warmup {
		fmt.Fprintf(&w, ", after one uncounted run of each (`-warmup`)")
	}
	fmt.Fprintf(&w, ". The machine may be shared with other work, so absolute\n")
	fmt.Fprintf(&w, "times move between runs: read the ratios, which compare commands measured within the same minutes.\n\n")

	fmt.Fprintf(&w, "## Machine\n\n")
	fmt.Fprintf(&w, "- CPU: %s, `nproc` = %s\n", cpuModel(), shell("nproc"))
	fmt.Fprintf(&w, "- memory: %s\n", memTotal())
	fmt.Fprintf(&w, "- kernel: %s\n", shell("uname", "-r"))
	fmt.Fprintf(&w, "- `uname -a`: `%s`\n", shell("uname", "-a"))
	fmt.Fprintf(&w, "- Go: %s; %s; %s; %s\n", runtime.Version(),
		firstLine(shell("rsync", "--version")), firstLine(shell("zstd", "--version")), firstLine(shell("qemu-img", "--version")))
	fmt.Fprintf(&w, "- work folder: %s (`-dir`), load average at the end: %s\n\n", r.cfg.dir, loadAvg())

	fmt.Fprintf(&w, "## What is measured\n\n")
	fmt.Fprintf(&w, "Lab VMs with one %s disk each, written in 4 MiB runs of one kind of region after another:\n\n", size)
	for _, f := range r.full {
		fmt.Fprintf(&w, "- **%s**: %s;\n", f.kind, f.about)
	}
	fmt.Fprintf(&w, "\nthe incremental and the compression levels use the mixed disk. `replicator` rows run the real data path in a child process:\n")
	fmt.Fprintf(&w, "the lab provider's checkpoint disk, `transfer.Sender` over mutual TLS (pki.EnsureDev\n")
	fmt.Fprintf(&w, "certificates) on loopback, `agent.New` over a datastore folder served by\n")
	fmt.Fprintf(&w, "`transfer.NewReceiver`, and `Agent.Commit` of the restore point (data fsynced, metadata\n")
	fmt.Fprintf(&w, "renamed into place). Block size 1 MiB. The raw file rsync and zstd read is %s;\n", r.rawFrom)
	fmt.Fprintf(&w, "the changed disk's raw file is exported through the provider (qemu-img does not follow the\n")
	fmt.Fprintf(&w, "VHDX differencing chain of a checkpoint). `rsync -z` speaks rsync's protocol to an rsync server\n")
	fmt.Fprintf(&w, "through a pipe (the remote shell `%s` runs the server locally, as ssh would remotely) and compresses\n", rsyncRemoteShell)
	fmt.Fprintf(&w, "with what the two negotiate: %s. rsync does not fsync what it writes; the replicator fsyncs\n", r.rsyncCompress)
	fmt.Fprintf(&w, "data, digests and metadata before it acknowledges a position and again at the commit.\n")
	fmt.Fprintf(&w, "Wall time covers the whole child process (start,\n")
	fmt.Fprintf(&w, "TLS handshake, transfer, commit); CPU is user+sys from wait4 and includes every process of a\n")
	fmt.Fprintf(&w, "pipeline; peak RSS is the child's ru_maxrss (for a shell pipeline: its largest process).\n")
	fmt.Fprintf(&w, "Throughput is the disk's virtual size over wall time for every row, so rows compare directly.\n")
	fmt.Fprintf(&w, "Files are in the page cache for every command alike (the machine has RAM to spare).\n\n")

	fmt.Fprintf(&w, "Commands (RAW, OLD, NEW are the raw files of the checkpoints):\n\n```\n")
	var cmds []*series
	if len(r.full) > 0 {
		cmds = append(cmds, r.full[0].rows()...)
	}
	for _, s := range append(cmds, r.inc...) {
		fmt.Fprintf(&w, "%-34s %s\n", strings.ReplaceAll(s.name, `\|`, "|")+":", s.command)
	}
	fmt.Fprintf(&w, "```\n\n")

	for _, f := range r.full {
		fmt.Fprintf(&w, "## Full replication, %s content (%s disk)\n\n", f.kind, size)
		r.table(&w, f.rows(), f.rsyncZ)
		if c := f.ours.last(); c != nil {
			fmt.Fprintf(&w, "\nreplicator read %s, sent %s on the wire (%.1f%% of the disk), %d blocks written of which %d zero.\n",
				mib(c.Transfer.BytesRead), mib(c.Transfer.BytesSent), 100*float64(c.Transfer.BytesSent)/float64(r.cfg.size),
				c.Transfer.BlocksChanged, c.Transfer.BlocksZero)
		}
		fmt.Fprintf(&w, "\nWall times of each run (s), in the order they ran: replicator %s; rsync -z %s; rsync %s; zstd %s.\n\n",
			runsLine(f.ours), runsLine(f.rsyncZ), runsLine(f.rsync), runsLine(f.zstd))
	}

	var cbt, dig, rsyncInc *series
	if len(r.inc) == 3 {
		cbt, dig, rsyncInc = r.inc[0], r.inc[1], r.inc[2]
		r.incremental(&w, size)
	}

	if len(r.levels) > 0 {
		fmt.Fprintf(&w, "## Compression levels (full path, %s disk)\n\n", size)
		fmt.Fprintf(&w, "| level | wall (median) | CPU user+sys | throughput | sent on the wire | peak RSS | zstd pipeline in the same minutes | wall / zstd | CPU / zstd |\n|---|---|---|---|---|---|---|---|---|\n")
		for i, s := range r.levels {
			z := r.levelZstd[i]
			sent := "-"
			if c := s.last(); c != nil {
				sent = fmt.Sprintf("%s (%.1f%%)", mib(c.Transfer.BytesSent), 100*float64(c.Transfer.BytesSent)/float64(r.cfg.size))
			}
			fmt.Fprintf(&w, "| %s | %s | %s | %s | %s | %s | %s, %s CPU | %.2f | %.2f |\n", s.name, secs(s.wall()), secs(s.cpu()),
				throughput(s.bytes, s.wall()), sent, mib(s.peakRSS()), secs(z.wall()), secs(z.cpu()),
				ratio(s.wall(), z.wall()), ratio(s.cpu(), z.cpu()))
		}
		fmt.Fprintf(&w, "\nEach level run is followed by a run of the zstd pipeline over the same raw file; the ratios compare\nthe medians of these interleaved runs, so a busy minute of the shared machine weighs on both.\n\n")

	}
	var peak int64
	if len(r.rss) > 0 {
		fmt.Fprintf(&w, "## Peak RSS by disk size (full replication, optimal)\n\n")
		fmt.Fprintf(&w, "Each disk holds %s of mixed data in 40 MiB stretches spread evenly over its whole size (one\n", mib(r.cfg.rssFill))
		fmt.Fprintf(&w, "run per size). Sender and agent run in the same process, so this is the memory of both ends.\n\n")
		fmt.Fprintf(&w, "| disk size | data | wall | CPU user+sys | peak RSS (sender + agent) |\n|---|---|---|---|---|\n")
		for _, s := range r.rss {
			peak = max(peak, s.peakRSS())
			fmt.Fprintf(&w, "| %s | %s | %s | %s | %s |\n", s.name, mib(s.bytes), secs(s.wall()), secs(s.cpu()), mib(s.peakRSS()))
		}
		fmt.Fprintln(&w)
	}
	all := slices.Clone(r.levels)
	if cbt != nil {
		all = append(all, cbt, dig)
	}
	for _, f := range r.full {
		all = append(all, f.ours)
	}
	for _, s := range all {
		peak = max(peak, s.peakRSS())
	}

	fmt.Fprintf(&w, "## Against the goals\n\n")
	fmt.Fprintf(&w, "| goal | measured | |\n|---|---|---|\n")
	for _, f := range r.full {
		q := ratio(f.ours.wall(), f.rsyncZ.wall())
		fmt.Fprintf(&w, "| full copy of the %s disk ≤ 0.8× the time of `rsync -z --whole-file` | %.2f× (%s vs %s) | %s |\n",
			f.kind, q, secs(f.ours.wall()), secs(f.rsyncZ.wall()), met(q <= 0.8))
	}
	for _, f := range r.full {
		if f.kind != "mixed" {
			continue
		}
		zr := ratio(f.zstd.wall(), f.ours.wall()) // our speed relative to zstd's
		fmt.Fprintf(&w, "| full copy of the mixed disk at ≥ 80%% of the `zstd -1 \\| zstd -d` pipeline's speed | %.0f%% (%s vs %s) | %s |\n",
			100*zr, secs(f.ours.wall()), secs(f.zstd.wall()), met(zr >= 0.8))
	}
	if cbt != nil {
		cbtRatio := ratio(cbt.wall(), rsyncInc.wall())
		digRatio := ratio(dig.wall(), rsyncInc.wall())
		fmt.Fprintf(&w, "| CBT incremental < 5%% of rsync's time | %.1f%% (%s vs %s) | %s |\n",
			100*cbtRatio, secs(cbt.wall()), secs(rsyncInc.wall()), met(cbtRatio < 0.05))
		fmt.Fprintf(&w, "| digest incremental < 50%% of rsync's time | %.1f%% (%s vs %s) | %s |\n",
			100*digRatio, secs(dig.wall()), secs(rsyncInc.wall()), met(digRatio < 0.5))
	}
	fmt.Fprintf(&w, "| peak memory < 200 MiB whatever the disk size | %s at most (sender + agent in one process) | %s |\n\n",
		mib(peak), met(peak < 200<<20))
	return w.String()
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return strings.TrimSpace(line)
}

// sendDisk is the median time of SendDisk alone in the replicator's runs.
func (s *series) sendDisk() string {
	var ds []time.Duration
	for _, m := range s.runs {
		if m.child != nil {
			ds = append(ds, time.Duration(m.child.TransferSeconds*float64(time.Second)))
		}
	}
	if len(ds) == 0 {
		return "-"
	}
	return secs(median(ds))
}

// incremental writes the section of the 1%-changed incremental.
func (r *results) incremental(w *strings.Builder, size string) {
	cbt, dig, rsyncInc := r.inc[0], r.inc[1], r.inc[2]
	fmt.Fprintf(w, "## 1%%-changed incremental (%s disk)\n\n", size)
	fmt.Fprintf(w, "`lab.Host.Write` of 1%% of the disk (seeded random runs of 64 KiB–1 MiB), a second checkpoint,\n")
	fmt.Fprintf(w, "then: change tracking (`ChangedRanges` since the first checkpoint's reference point), digests\n")
	fmt.Fprintf(w, "only (every block read and digested, compared with the replica's digests), and rsync's delta\n")
	fmt.Fprintf(w, "algorithm from the new raw file onto a copy of the old one. Each replicator run starts from a\n")
	fmt.Fprintf(w, "copy of the datastore holding the full point.\n\n")
	r.table(w, r.inc, rsyncInc)
	for _, s := range []*series{cbt, dig} {
		if c := s.last(); c != nil {
			fmt.Fprintf(w, "\n%s: read %s, sent %s, wrote %s in %d blocks, %d unchanged skipped.", s.name,
				mib(c.Transfer.BytesRead), mib(c.Transfer.BytesSent), mib(c.Transfer.BytesWritten), c.Transfer.BlocksChanged, c.Transfer.BlocksUnchanged)
		}
	}
	fmt.Fprintf(w, "\n\nWall times of each run (s): CBT %s; digests %s; rsync %s.\n\n", runsLine(cbt), runsLine(dig), runsLine(rsyncInc))
}
