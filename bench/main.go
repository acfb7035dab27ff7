//go:build linux

// Command bench measures replicator's data path side by side with rsync and
// a zstd pipeline, in one run on the same files, and writes the figures as
// markdown (BENCHMARKS.md).
//
// It builds a lab VM whose disk holds mixed content (text-like, random,
// repeated, zero-filled and never-written regions), takes a checkpoint, and
// replicates it through the real path: the lab provider's checkpoint disk,
// transfer.Sender over mutual TLS on loopback, an agent (agent.New and
// transfer.NewReceiver) writing a datastore, and a committed restore point.
// Every replication runs in a child process (this program re-executed with
// -child), so that its wall time, CPU time (user+sys) and peak RSS are read
// from wait4 exactly as for the rsync and zstd processes it is compared with.
// Each figure is the median of -runs runs; runs of the compared commands are
// interleaved so that a busy moment of a shared machine hits all of them.
//
//	go run ./bench -size 1GiB -out BENCHMARKS.md
//
// Measured: full replication against `rsync --whole-file` and
// `zstd -1 -c RAW | zstd -d -c > OUT`; a 1%-changed incremental with change
// tracking and with digests only against `rsync --inplace --no-whole-file`;
// the full path at every compression level; peak RSS at several disk sizes.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/replicator/replicator/internal/codec"
	"github.com/replicator/replicator/internal/provider"
	"github.com/replicator/replicator/internal/provider/lab"
	"github.com/replicator/replicator/internal/replica"
	"github.com/replicator/replicator/internal/synth"
	"github.com/replicator/replicator/internal/zeros"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-child" {
		if err := runChild(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "bench child:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type config struct {
	size      int64
	rssSizes  []int64
	rssFill   int64
	runs      int
	incRuns   int
	levelRuns int
	dir       string
	out       string
	keep      bool
	command   string
	warmup    bool
	started   time.Time
	profile   string
	trace     bool
	// contents are the kinds of disk content of the full copy
	// (contentKinds); sections the parts of the benchmark that run.
	contents []string
	sections []string
}

// section reports whether a part of the benchmark (full, inc, levels, rss)
// runs.
func (c config) section(name string) bool { return slices.Contains(c.sections, name) }

func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"G", 1 << 30}, {"M", 1 << 20}} {
		if strings.HasSuffix(s, u.suffix) {
			mult, s = u.mult, strings.TrimSuffix(s, u.suffix)
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("size %q: want a positive number with MiB or GiB", s)
	}
	return n * mult, nil
}

func run() error {
	var cfg config
	size := flag.String("size", "1GiB", "virtual and filled size of the main disk (the issue's figure is 4GiB)")
	rss := flag.String("rss-sizes", "1GiB,4GiB,16GiB", "disk sizes of the peak-RSS runs (comma-separated; empty skips them)")
	fill := flag.String("rss-fill", "1GiB", "data written into each peak-RSS disk, spread over its whole size")
	flag.IntVar(&cfg.runs, "runs", 5, "runs of each full-copy measurement (the median is reported)")
	contents := flag.String("contents", "mixed,random,text", "kinds of disk content of the full copy (mixed, random, text)")
	sections := flag.String("sections", "full,inc,levels,rss", "parts of the benchmark to run: full copies, the incremental, compression levels, peak RSS by disk size")
	flag.IntVar(&cfg.incRuns, "inc-runs", 5, "runs of each incremental measurement (they are short, and the first ones pay for fresh memory: more runs steady the median)")
	flag.IntVar(&cfg.levelRuns, "level-runs", 3, "runs of each compression level (0 skips the levels)")
	flag.StringVar(&cfg.dir, "dir", defaultDir(), "folder for the disks, raw copies and datastores (default the tmpfs /dev/shm when present)")
	flag.StringVar(&cfg.out, "out", "", "markdown file to write (default: standard output)")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the work folder")
	flag.BoolVar(&cfg.warmup, "warmup", true, "run each compared command once, uncounted, before the measured runs")
	flag.StringVar(&cfg.profile, "profile", "", "folder for a CPU profile of every replicator run (go tool pprof)")
	flag.BoolVar(&cfg.trace, "trace", false, "with -profile: also an execution trace of every replicator run (go tool trace -pprof=sync|net|syscall|sched: where the time off the CPU goes)")
	flag.Parse()
	var err error
	if cfg.size, err = parseSize(*size); err != nil {
		return err
	}
	if cfg.rssFill, err = parseSize(*fill); err != nil {
		return err
	}
	for _, s := range strings.Split(*rss, ",") {
		if strings.TrimSpace(s) == "" {
			continue
		}
		n, err := parseSize(s)
		if err != nil {
			return err
		}
		cfg.rssSizes = append(cfg.rssSizes, n)
	}
	for _, k := range strings.Split(*contents, ",") {
		if k = strings.TrimSpace(k); k == "" {
			continue
		}
		if _, ok := contentKinds[k]; !ok {
			return fmt.Errorf("-contents: %q is not a kind of content (mixed, random, text)", k)
		}
		cfg.contents = append(cfg.contents, k)
	}
	for _, k := range strings.Split(*sections, ",") {
		if k = strings.TrimSpace(k); k == "" {
			continue
		}
		if !slices.Contains([]string{"full", "inc", "levels", "rss"}, k) {
			return fmt.Errorf("-sections: %q is not full, inc, levels or rss", k)
		}
		cfg.sections = append(cfg.sections, k)
	}
	cfg.command = "go run ./bench " + strings.Join(os.Args[1:], " ")
	cfg.started = time.Now().UTC()
	for _, tool := range []string{"rsync", "zstd", "sh"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is needed: %w", tool, err)
		}
	}
	work, err := os.MkdirTemp(cfg.dir, "replicator-bench-")
	if err != nil {
		return err
	}
	if !cfg.keep {
		defer os.RemoveAll(work)
	}
	b := &bench{cfg: cfg, work: work, lab: filepath.Join(work, "lab"), pki: filepath.Join(work, "pki")}
	report, err := b.all(context.Background())
	if err != nil {
		return err
	}
	if cfg.out == "" {
		_, err = os.Stdout.WriteString(report)
		return err
	}
	return writeReport(cfg.out, report)
}

// The generated part of the -out file lies between these lines; what the
// file holds before and after them (readings, figures measured by other
// commands) is kept.
const (
	beginMark = "<!-- generated by make bench: begin -->\n"
	endMark   = "<!-- generated by make bench: end -->\n"
)

// writeReport replaces the generated part of path (or writes a new file
// holding only it) by write-temp-and-rename, so that an interrupted run
// leaves the old file.
func writeReport(path, report string) error {
	before, after := "", ""
	if old, err := os.ReadFile(path); err == nil {
		s := string(old)
		i, j := strings.Index(s, beginMark), strings.Index(s, endMark)
		if i < 0 || j < i {
			return fmt.Errorf("%s holds no %q … %q lines: give a new file to -out, or add them where the figures go", path, strings.TrimSpace(beginMark), strings.TrimSpace(endMark))
		}
		before, after = s[:i], s[j+len(endMark):]
	} else if !os.IsNotExist(err) {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(before+beginMark+report+endMark+after), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// defaultDir is the tmpfs /dev/shm when present, so that no command pays for
// a shared disk (and fsync, which only the agent does, costs what it costs
// on memory), else the temporary folder.
func defaultDir() string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		return "/dev/shm"
	}
	return os.TempDir()
}

type bench struct {
	cfg  config
	work string
	lab  string
	pki  string
	self string
	// profiles counts the CPU profiles written (-profile).
	profiles int
	// rsyncCompress is the compressor rsync -z negotiated with its server.
	rsyncCompress string
}

// measurement is one process run: wall time, CPU and peak RSS from wait4.
type measurement struct {
	wall, cpu time.Duration
	maxRSS    int64 // bytes
	child     *childResult
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().UTC().Format("15:04:05 ")+format+"\n", args...)
}

// measure runs a command and reads its rusage (which covers the children it
// waited for, as sh does for both sides of a pipeline).
func measure(name string, args ...string) (measurement, error) {
	// A child's ru_maxrss starts from this process's peak RSS (Linux records
	// the high-water mark of the memory it execs from, which with vfork is
	// ours): give memory back and reset the mark (clear_refs 5, Linux 4.0+)
	// so that the figure is the child's own, at least for children that
	// grow past what this process holds now.
	debug.FreeOSMemory()
	os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
	cmd := exec.Command(name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if err != nil {
		return measurement{}, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	m := measurement{
		wall:   wall,
		cpu:    time.Duration(ru.Utime.Nano() + ru.Stime.Nano()),
		maxRSS: ru.Maxrss * 1024,
	}
	if bytes.HasPrefix(bytes.TrimSpace(stdout.Bytes()), []byte("{")) {
		var r childResult
		if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
			return m, fmt.Errorf("%s: result: %w", name, err)
		}
		m.child = &r
	}
	return m, nil
}

// replicate runs one replication child.
func (b *bench) replicate(vm, checkpoint, reference, datastore, mode string, level codec.Level) (measurement, error) {
	args := []string{"-child", "-lab", b.lab, "-vm", vm, "-checkpoint", checkpoint, "-reference", reference,
		"-datastore", datastore, "-pki", b.pki, "-mode", mode, "-level", level.String()}
	if b.cfg.profile != "" {
		b.profiles++
		name := filepath.Join(b.cfg.profile, fmt.Sprintf("%02d-%s-%s", b.profiles, mode, level))
		args = append(args, "-cpuprofile", name+".pprof")
		if b.cfg.trace {
			args = append(args, "-trace", name+".trace")
		}
	}
	return measure(b.self, args...)
}

// series holds the runs of one measured line.
type series struct {
	name    string
	command string
	bytes   int64 // disk bytes the line covers (for throughput)
	runs    []measurement
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func (s *series) wall() time.Duration {
	var ds []time.Duration
	for _, m := range s.runs {
		ds = append(ds, m.wall)
	}
	return median(ds)
}

func (s *series) cpu() time.Duration {
	var ds []time.Duration
	for _, m := range s.runs {
		ds = append(ds, m.cpu)
	}
	return median(ds)
}

func (s *series) peakRSS() int64 {
	var p int64
	for _, m := range s.runs {
		p = max(p, m.maxRSS)
	}
	return p
}

func (s *series) last() *childResult {
	for i := len(s.runs) - 1; i >= 0; i-- {
		if s.runs[i].child != nil {
			return s.runs[i].child
		}
	}
	return nil
}

// contentKinds are the disk contents the full copy is measured on: what a
// guest disk of each kind holds, in 4 MiB runs of ten kinds of region.
var contentKinds = map[string]struct {
	// regions cycle over the disk, one per 4 MiB run.
	regions [10]region
	about   string
}{
	"mixed": {[10]region{text, text, text, random, random, repeated, repeated, zeroed, unwritten, unwritten},
		"text-like (30%), random (20%), a repeated 4 KiB pattern (20%), zero-filled (10%) and never-written (20%) regions"},
	"random": {[10]region{random, random, random, random, random, random, random, random, unwritten, unwritten},
		"random bytes (80%: what encrypted volumes, media and compressed archives look like) and never-written (20%) regions"},
	"text": {[10]region{text, text, text, text, text, text, text, text, unwritten, unwritten},
		"text-like words and lines (80%: logs, documents, source) and never-written (20%) regions"},
}

type region uint8

const (
	unwritten region = iota
	text
	random
	repeated
	zeroed
)

// fillMixed writes mixed content over [from, to) of the VM's disk.
func fillMixed(ctx context.Context, h *lab.Host, vm string, from, to int64, seed uint64) error {
	return fill(ctx, h, vm, "mixed", from, to, seed)
}

// fill writes content of a kind (contentKinds) over [from, to) of the VM's
// disk in 4 MiB runs.
func fill(ctx context.Context, h *lab.Host, vm, kind string, from, to int64, seed uint64) error {
	const run = 4 << 20
	regions := contentKinds[kind].regions
	rng := rand.New(rand.NewPCG(seed, 7))
	words := strings.Fields("the of and replica block disk checkpoint server error info warning request " +
		"user time value config status 200 404 GET POST /api/v1/items id name data table index log " +
		"2026-11-24T20:00:00Z select from where insert update commit transaction page cache")
	buf := make([]byte, run)
	for off, i := from, 0; off < to; off, i = off+run, i+1 {
		n := min(int64(run), to-off)
		p := buf[:n]
		switch regions[i%10] {
		case text:
			synth.Text(rng, words, p)
		case random:
			synth.Random(rng, p)
		case repeated: // a 4 KiB pattern
			synth.RepeatedPage(rng, p)
		case zeroed: // allocated
			clear(p)
		default: // never written
			continue
		}
		if err := h.WriteAt(ctx, vm, 0, p, off); err != nil {
			return fmt.Errorf("fill %s at %d: %w", vm, off, err)
		}
	}
	return nil
}

// exportRaw writes the checkpoint's disk as a raw file, leaving holes where
// the disk reads zeros.
func exportRaw(ctx context.Context, h *lab.Host, vm provider.VM, checkpoint, path string) error {
	img, err := h.OpenDisk(ctx, vm.ID, checkpoint, vm.Disks[0].ID)
	if err != nil {
		return err
	}
	defer img.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < img.Size(); off += int64(len(buf)) {
		p := buf[:min(int64(len(buf)), img.Size()-off)]
		if _, err := img.ReadAt(p, off); err != nil && err != io.EOF {
			f.Close()
			return fmt.Errorf("export %s at %d: %w", checkpoint, off, err)
		}
		if zeros.All(p) {
			continue
		}
		if _, err := f.WriteAt(p, off); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Truncate(img.Size()); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// verifyReplica compares the restore point a child committed with the raw
// file of its checkpoint, byte for byte: a benchmark of a copy that is not
// exact would mean nothing.
func verifyReplica(ctx context.Context, datastore string, vm provider.VM, m measurement, rawPath string) error {
	if m.child == nil {
		return fmt.Errorf("verify %s: the child reported no restore point", datastore)
	}
	store, err := replica.OpenExisting(datastore)
	if err != nil {
		return err
	}
	rep, err := store.Replica("bench", vm.ID)
	if err != nil {
		return err
	}
	img, err := rep.OpenPoint(m.child.Point, vm.Disks[0].ID)
	if err != nil {
		return err
	}
	defer img.Close()
	raw, err := os.Open(rawPath)
	if err != nil {
		return err
	}
	defer raw.Close()
	st, err := raw.Stat()
	if err != nil {
		return err
	}
	if st.Size() != img.Size() {
		return fmt.Errorf("verify point %s: size %d, the checkpoint's raw file %d", m.child.Point, img.Size(), st.Size())
	}
	want := make([]byte, 1<<20)
	got := make([]byte, 1<<20)
	for off := int64(0); off < st.Size(); off += int64(len(want)) {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(int64(len(want)), st.Size()-off)
		if _, err := raw.ReadAt(want[:n], off); err != nil && err != io.EOF {
			return fmt.Errorf("verify: read %s at %d: %w", rawPath, off, err)
		}
		if _, err := img.ReadAt(got[:n], off); err != nil && err != io.EOF {
			return fmt.Errorf("verify: read point %s at %d: %w", m.child.Point, off, err)
		}
		if !bytes.Equal(want[:n], got[:n]) {
			return fmt.Errorf("verify: point %s differs from %s in the MiB at offset %d", m.child.Point, rawPath, off)
		}
	}
	logf("verified: point %s is byte-identical to %s", m.child.Point, filepath.Base(rawPath))
	return nil
}

func copyTree(from, to string) error {
	out, err := exec.Command("cp", "-a", from, to).CombinedOutput()
	if err != nil {
		return fmt.Errorf("cp -a %s %s: %w: %s", from, to, err, out)
	}
	return nil
}

func sync() { syscall.Sync() }

func (b *bench) all(ctx context.Context) (string, error) {
	var err error
	if b.self, err = os.Executable(); err != nil {
		return "", err
	}
	r := &results{cfg: b.cfg}
	h := lab.New("bench", b.lab)
	if err := b.checkRsyncProtocol(); err != nil {
		return "", err
	}
	r.rsyncCompress = b.rsyncCompress

	// 1. Full copy, once per kind of content. The mixed disk stays for the
	// incremental and the compression levels.
	var mixed *fullSetup
	kinds := b.cfg.contents
	if !slices.Contains(kinds, "mixed") && (b.cfg.section("inc") || b.cfg.section("levels")) {
		kinds = append([]string{"mixed"}, kinds...)
	}
	for _, kind := range kinds {
		fs, err := b.setupFull(ctx, h, kind)
		if err != nil {
			return "", err
		}
		if slices.Contains(b.cfg.contents, kind) && b.cfg.section("full") {
			fr, err := b.fullCopy(ctx, fs)
			if err != nil {
				return "", err
			}
			r.full = append(r.full, fr)
			if r.diskSize == 0 {
				r.diskSize, r.rawFrom = fs.rawSize, fs.rawFrom
			}
		}
		if kind == "mixed" {
			mixed = fs
			continue
		}
		h.ReleaseCheckpoint(ctx, fs.vm.ID, fs.cp.ID)
		os.Remove(fs.raw)
		os.RemoveAll(filepath.Join(b.lab, kind))
	}
	if mixed == nil {
		return r.markdown(), nil
	}
	vm, cp1, raw1 := mixed.vm, mixed.cp, mixed.raw
	base := filepath.Join(b.work, "datastore-base")
	if b.cfg.section("inc") {
		// The incremental starts from a datastore holding the full point.
		ds := filepath.Join(b.work, "datastore-full")
		os.RemoveAll(ds)
		m, err := b.replicate(vm.Name, cp1.ID, "", ds, "full", codec.Optimal)
		if err != nil {
			return "", err
		}
		if err := verifyReplica(ctx, ds, vm, m, raw1); err != nil {
			return "", err
		}
		if err := os.Rename(ds, base); err != nil {
			return "", err
		}
	}

	if b.cfg.section("inc") {
		if err := b.incremental(ctx, h, r, mixed, base); err != nil {
			return "", err
		}
	}
	if b.cfg.section("levels") {
		if err := b.levels(ctx, h, r, mixed); err != nil {
			return "", err
		}
	}
	os.Remove(raw1)
	if b.cfg.section("rss") {
		if err := b.peakRSS(ctx, h, r); err != nil {
			return "", err
		}
	}
	return r.markdown(), nil
}

// incremental measures a 1%-changed incremental from the full point in base
// (change tracking, digests) against rsync's delta algorithm.
func (b *bench) incremental(ctx context.Context, h *lab.Host, r *results, mixed *fullSetup, base string) error {
	vm, cp1, raw1 := mixed.vm, mixed.cp, mixed.raw
	ref1, err := h.ConvertToReferencePoint(ctx, vm.ID, cp1.ID, "")
	if err != nil {
		return err
	}
	logf("writing 1%% of the disk")
	if err := h.Write(ctx, vm.ID, 0, 1, 42); err != nil {
		return err
	}
	cp2, err := h.CreateCheckpoint(ctx, vm.ID, provider.CheckpointOptions{Name: "bench"})
	if err != nil {
		return err
	}
	raw2 := filepath.Join(b.work, "disk2.raw")
	if err := exportRaw(ctx, h, vm, cp2.ID, raw2); err != nil {
		return err
	}
	cbt := &series{name: "replicator incremental, CBT", bytes: b.cfg.size,
		command: "bench -child -mode cbt (lab ChangedRanges → blockplan.Changed)"}
	dig := &series{name: "replicator incremental, digests", bytes: b.cfg.size,
		command: "bench -child -mode digest (SendOptions.CompareDigests)"}
	rsyncInc := &series{name: "rsync --inplace --no-whole-file", bytes: b.cfg.size,
		command: "rsync --inplace --no-whole-file NEW.raw OLD.raw"}
	for i := range max(b.cfg.incRuns, 1) {
		for _, s := range []*series{cbt, dig} {
			ds := filepath.Join(b.work, "datastore-inc")
			os.RemoveAll(ds)
			if err := copyTree(base, ds); err != nil {
				return err
			}
			sync()
			mode := "cbt"
			if s == dig {
				mode = "digest"
			}
			logf("incremental run %d: %s", i+1, mode)
			m, err := b.replicate(vm.Name, cp2.ID, ref1, ds, mode, codec.Optimal)
			if err != nil {
				return err
			}
			s.runs = append(s.runs, m)
			if i == 0 {
				if err := verifyReplica(ctx, ds, vm, m, raw2); err != nil {
					return err
				}
			}
			os.RemoveAll(ds)
		}
		old := filepath.Join(b.work, "rsync-old.raw")
		if err := copyTree(raw1, old); err != nil {
			return err
		}
		sync()
		logf("incremental run %d: rsync", i+1)
		m, err := measure("rsync", "--inplace", "--no-whole-file", raw2, old)
		if err != nil {
			return err
		}
		rsyncInc.runs = append(rsyncInc.runs, m)
		os.Remove(old)
	}
	r.inc = []*series{cbt, dig, rsyncInc}
	if err := h.ReleaseCheckpoint(ctx, vm.ID, cp2.ID); err != nil {
		logf("release %s: %v", cp2.ID, err)
	}

	os.Remove(raw2)
	return nil
}

// levels measures the full path at every compression level over a new
// checkpoint of the mixed disk, each run followed by the zstd pipeline.
func (b *bench) levels(ctx context.Context, h *lab.Host, r *results, mixed *fullSetup) error {
	vm, raw1 := mixed.vm, mixed.raw
	// 3. Compression levels, over the incremental's checkpoint as a full copy.
	cp3, err := h.CreateCheckpoint(ctx, vm.ID, provider.CheckpointOptions{Name: "bench"})
	if err != nil {
		return err
	}
	for _, level := range codec.Levels() {
		if b.cfg.levelRuns <= 0 {
			break
		}
		s := &series{name: level.String(), bytes: b.cfg.size}
		z := &series{name: "zstd -1 \\| zstd -d", bytes: b.cfg.size}
		for i := range b.cfg.levelRuns {
			ds := filepath.Join(b.work, "datastore-level")
			os.RemoveAll(ds)
			sync()
			logf("level %s run %d", level, i+1)
			m, err := b.replicate(vm.Name, cp3.ID, "", ds, "full", level)
			if err != nil {
				return err
			}
			s.runs = append(s.runs, m)
			os.RemoveAll(ds)
			if m, err = b.zstdPipeline(raw1); err != nil {
				return err
			}
			z.runs = append(z.runs, m)
		}
		r.levels = append(r.levels, s)
		r.levelZstd = append(r.levelZstd, z)
	}
	h.ReleaseCheckpoint(ctx, vm.ID, cp3.ID)
	return nil
}

// peakRSS measures the peak memory of full copies of disks of several sizes.
func (b *bench) peakRSS(ctx context.Context, h *lab.Host, r *results) error {
	// 4. Peak RSS per disk size.
	for i, size := range b.cfg.rssSizes {
		name := fmt.Sprintf("rss%d", i)
		logf("peak RSS: %d MiB disk with %d MiB of data", size>>20, min(size, b.cfg.rssFill)>>20)
		v, err := lab.CreateVM(b.lab, name, []int64{size})
		if err != nil {
			return err
		}
		if err := b.fillSpread(ctx, h, v.ID, size); err != nil {
			return err
		}
		cp, err := h.CreateCheckpoint(ctx, v.ID, provider.CheckpointOptions{})
		if err != nil {
			return err
		}
		ds := filepath.Join(b.work, "datastore-rss")
		os.RemoveAll(ds)
		sync()
		m, err := b.replicate(name, cp.ID, "", ds, "full", codec.Optimal)
		if err != nil {
			return err
		}
		os.RemoveAll(ds)
		r.rss = append(r.rss, &series{name: sizeName(size), bytes: min(size, b.cfg.rssFill), runs: []measurement{m}})
		os.RemoveAll(filepath.Join(b.lab, name))
	}
	return nil
}

// zstdPipeline times `zstd -1 -c RAW | zstd -d -c > OUT` over the raw file.
func (b *bench) zstdPipeline(raw string) (measurement, error) {
	out := filepath.Join(b.work, "zstd.out")
	os.Remove(out)
	sync()
	defer os.Remove(out)
	return measure("sh", "-c", fmt.Sprintf("zstd -q -1 -c %q | zstd -q -d -c > %q", raw, out))
}

// fillSpread writes rssFill bytes of mixed content in 40 MiB stretches spread
// evenly over the disk, so that a large disk is mostly sparse but the
// transfer still carries real data from all over it.
func (b *bench) fillSpread(ctx context.Context, h *lab.Host, vm string, size int64) error {
	fill := min(size, b.cfg.rssFill)
	const stretch = 40 << 20
	n := max(1, fill/stretch)
	step := size / n / (1 << 20) * (1 << 20)
	for i := range n {
		off := i * step
		if err := fillMixed(ctx, h, vm, off, min(off+stretch, size), uint64(i+100)); err != nil {
			return err
		}
	}
	return nil
}
