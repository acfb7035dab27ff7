//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/replicator/replicator/internal/codec"
	"github.com/replicator/replicator/internal/provider"
	"github.com/replicator/replicator/internal/provider/lab"
)

// rsyncRemoteShell makes rsync speak its own protocol (and so compress with
// -z, which a local copy never does) to an rsync server it starts through
// the "remote shell": `sh -c 'shift; exec "$@"' sh HOST rsync --server …`
// drops the host name and runs the server command locally, its standard
// input and output being the pipe rsync would send over ssh.
const rsyncRemoteShell = `sh -c 'shift; exec "$@"' sh`

// fullSetup is a lab VM with one disk of one kind of content, its
// checkpoint and the checkpoint's raw file.
type fullSetup struct {
	kind    string
	vm      provider.VM
	cp      provider.Checkpoint
	raw     string
	rawSize int64
	rawFrom string
}

// fullResult holds the full-copy rows of one kind of content.
type fullResult struct {
	kind   string
	about  string
	ours   *series
	rsyncZ *series // rsync -z --whole-file over its protocol through a pipe
	rsync  *series // rsync --whole-file, a local copy
	zstd   *series
}

func (f *fullResult) rows() []*series { return []*series{f.ours, f.rsyncZ, f.rsync, f.zstd} }

// checkRsyncProtocol makes sure rsync can reach a server through the pipe
// of rsyncRemoteShell, and says which compressor it negotiates.
func (b *bench) checkRsyncProtocol() error {
	dir := filepath.Join(b.work, "rsync-check")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	src := filepath.Join(dir, "src")
	if err := os.WriteFile(src, []byte(strings.Repeat("replicator ", 1000)), 0o644); err != nil {
		return err
	}
	out, err := exec.Command("rsync", "-z", "--whole-file", "--debug=NSTR", "-e", rsyncRemoteShell, src, "localhost:"+dir+"/dst").CombinedOutput()
	if err != nil {
		return fmt.Errorf("rsync -z through %s: %w: %s", rsyncRemoteShell, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "negotiated compress") {
			_, v, _ := strings.Cut(line, ":")
			b.rsyncCompress = strings.TrimSpace(v)
		}
	}
	return nil
}

// setupFull creates the lab VM of one kind of content, its checkpoint and
// the checkpoint's raw file.
func (b *bench) setupFull(ctx context.Context, h *lab.Host, kind string) (*fullSetup, error) {
	logf("creating a %d MiB lab disk of %s content", b.cfg.size>>20, kind)
	vm, err := lab.CreateVM(b.lab, kind, []int64{b.cfg.size})
	if err != nil {
		return nil, err
	}
	if err := fill(ctx, h, vm.ID, kind, 0, b.cfg.size, 1); err != nil {
		return nil, err
	}
	cp, err := h.CreateCheckpoint(ctx, vm.ID, provider.CheckpointOptions{Name: "bench"})
	if err != nil {
		return nil, err
	}
	fs := &fullSetup{kind: kind, vm: vm, cp: cp, raw: filepath.Join(b.work, kind+".raw"),
		rawFrom: "the lab provider's checkpoint disk (disk.Image ReadAt)"}
	if out, err := exec.Command("qemu-img", "convert", "-O", "raw", cp.Disks[0].Path, fs.raw).CombinedOutput(); err == nil {
		fs.rawFrom = "`qemu-img convert -O raw` of the checkpoint's frozen VHDX"
	} else {
		logf("qemu-img convert: %v: %s; exporting through the provider", err, out)
		if err := exportRaw(ctx, h, vm, cp.ID, fs.raw); err != nil {
			return nil, err
		}
	}
	st, err := os.Stat(fs.raw)
	if err != nil {
		return nil, err
	}
	fs.rawSize = st.Size()
	return fs, nil
}

// fullCopy measures the full copy of one disk: the replicator, rsync -z
// over its protocol, a local rsync and the zstd pipeline, interleaved run by
// run after one uncounted run of each.
func (b *bench) fullCopy(ctx context.Context, fs *fullSetup) (*fullResult, error) {
	size := b.cfg.size
	r := &fullResult{kind: fs.kind, about: contentKinds[fs.kind].about,
		ours: &series{name: "replicator full (optimal)", bytes: size,
			command: "bench -child -mode full -level optimal (lab checkpoint → Sender → TLS loopback → agent → commit)"},
		rsyncZ: &series{name: "rsync -z --whole-file", bytes: size,
			command: `rsync -z --whole-file -e "sh -c 'shift; exec \"\$@\"' sh" RAW localhost:DIR/`},
		rsync: &series{name: "rsync --whole-file", bytes: size, command: "rsync --whole-file RAW DIR/"},
		zstd:  &series{name: "zstd -1 \\| zstd -d", bytes: size, command: "sh -c 'zstd -1 -c RAW | zstd -d -c > OUT'"},
	}
	runs := b.cfg.runs
	if b.cfg.warmup {
		// The first process to touch fresh memory pays for it (on virtual
		// machines the host backs guest pages lazily): one uncounted run of
		// each command, so that no measured run pays alone.
		runs++
	}
	// Each command of a round runs right after the one before it freed the
	// memory of its output. On these virtual machines the host takes freed
	// guest memory back within a second or two, and the next process to
	// write that much pays again to touch it (about 1 s per GiB of page
	// cache here): a command that starts writing late pays, one that starts
	// at once does not. The order turns by one every round, so that no
	// command always follows the same one.
	cmds := []struct {
		s   *series
		run func(i int) (measurement, error)
	}{
		{r.ours, func(i int) (measurement, error) {
			ds := filepath.Join(b.work, "datastore-full")
			os.RemoveAll(ds)
			sync()
			m, err := b.replicate(fs.vm.Name, fs.cp.ID, "", ds, "full", codec.Optimal)
			if err == nil && i == 0 {
				err = verifyReplica(ctx, ds, fs.vm, m, fs.raw)
			}
			os.RemoveAll(ds)
			return m, err
		}},
		{r.rsyncZ, func(int) (measurement, error) {
			dst := filepath.Join(b.work, "rsync-full")
			os.RemoveAll(dst)
			os.MkdirAll(dst, 0o755)
			sync()
			defer os.RemoveAll(dst)
			return measure("rsync", "-z", "--whole-file", "-e", rsyncRemoteShell, fs.raw, "localhost:"+dst+"/")
		}},
		{r.rsync, func(int) (measurement, error) {
			dst := filepath.Join(b.work, "rsync-full")
			os.RemoveAll(dst)
			os.MkdirAll(dst, 0o755)
			sync()
			defer os.RemoveAll(dst)
			return measure("rsync", "--whole-file", fs.raw, dst+"/")
		}},
		{r.zstd, func(int) (measurement, error) { return b.zstdPipeline(fs.raw) }},
	}
	for i := range runs {
		counted := !b.cfg.warmup || i > 0
		what := fmt.Sprintf("run %d", i)
		if !counted {
			what = "warm-up run"
		}
		for k := range cmds {
			c := cmds[(i+k)%len(cmds)]
			logf("full copy, %s disk, %s: %s", fs.kind, what, strings.ReplaceAll(c.s.name, `\|`, "|"))
			m, err := c.run(i)
			if err != nil {
				return nil, err
			}
			if counted {
				c.s.runs = append(c.s.runs, m)
			}
		}
	}
	return r, nil
}
