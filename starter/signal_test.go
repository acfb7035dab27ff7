//go:build unix

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/devserver"
	"github.com/replicator/replicator/internal/replica"
	"github.com/replicator/replicator/internal/replica/replicatest"
	"github.com/replicator/replicator/internal/testkit"
)

var (
	starterBinOnce sync.Once
	starterBin     string
	starterBinErr  error
	starterBinOut  []byte
)

// TestMain removes the starter binary the signal tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	if starterBin != "" {
		os.RemoveAll(filepath.Dir(starterBin))
	}
	os.Exit(code)
}

// buildStarter builds the starter command once for the tests that signal it.
func buildStarter(t *testing.T) string {
	t.Helper()
	starterBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "starter-bin-")
		if err != nil {
			starterBinErr = err
			return
		}
		starterBin = filepath.Join(dir, "starter")
		starterBinOut, starterBinErr = exec.Command("go", "build", "-o", starterBin, ".").CombinedOutput()
	})
	if starterBinErr != nil {
		t.Fatalf("go build starter: %v\n%s", starterBinErr, starterBinOut)
	}
	return starterBin
}

// started is a starter process with its output collected.
type started struct {
	cmd            *exec.Cmd
	stdout, stderr testkit.SyncBuffer
	done           chan struct{} // closed when the process has ended
	err            error         // of Wait, once done is closed
}

func startStarter(t *testing.T, env []string, args ...string) *started {
	t.Helper()
	s := &started{cmd: exec.Command(buildStarter(t), args...), done: make(chan struct{})}
	s.cmd.Env = append(os.Environ(), env...)
	s.cmd.Stdout, s.cmd.Stderr = &s.stdout, &s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		<-s.done
	})
	return s
}

// waitFor polls cond every few milliseconds until it holds, failing the
// test after limit or when the process ends first.
func (s *started) waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		select {
		case <-s.done:
			t.Fatalf("starter ended (%v) before %s\nstdout: %s\nstderr: %s", s.err, what, s.stdout.String(), s.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s\nstdout: %s\nstderr: %s", what, limit, s.stdout.String(), s.stderr.String())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// exitCode waits (at most limit) for the process and returns its exit code.
func (s *started) exitCode(t *testing.T, limit time.Duration) int {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(limit):
		t.Fatalf("starter still running %s after SIGINT\nstderr: %s", limit, s.stderr.String())
	}
	return s.cmd.ProcessState.ExitCode()
}

// Ctrl-C during an export of several disks leaves no file behind: neither
// the disk being written (its temporary file) nor the disks already done.
func TestInterruptedExportLeavesNoFile(t *testing.T) {
	dataDir := t.TempDir()
	st, err := replica.Open(filepath.Join(dataDir, "replicas"))
	if err != nil {
		t.Fatal(err)
	}
	// A small first disk, then a large one: the signal comes while the
	// second is being written, the first already renamed into place.
	const big = 128 << 20
	vm := replica.VMInfo{ID: "vm-big", Name: "big01", Generation: 2, Disks: []replica.DiskInfo{
		{ID: "boot", Size: 1 << 20, SectorSize: 512}, {ID: "data", Size: big, SectorSize: 512}}}
	w := replicatest.Lock(t, st, "demo", "test", vm)
	replicatest.CommitPoint(t, w, replica.SessionSpec{CheckpointID: "ck", ChangeTracking: "full", BlockSize: 1 << 20}, vm.Disks,
		func(_ int, d replica.DiskInfo, dw *replica.DiskWriter) error {
			blk := make([]byte, 1<<20)
			for off := int64(0); off < d.Size; off += int64(len(blk)) {
				for i := range blk {
					blk[i] = byte(off>>20) + byte(i)
				}
				if _, err := dw.WriteAt(blk, off); err != nil {
					return err
				}
			}
			return nil
		})
	w.Close()

	out := filepath.Join(t.TempDir(), "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, verb := range [][]string{{"export"}, {"failover"}} { // failover --out is export's old name
		t.Run(verb[0], func(t *testing.T) {
			s := startStarter(t, nil, append(verb, "demo", "big01", "--out", filepath.Join(out, "big01.img"), "--data-dir", dataDir)...)
			// The second disk's temporary file: the first disk is in place.
			tmpOfSecond := filepath.Join(out, ".big01-1.img.tmp-*")
			s.waitFor(t, "temporary file of the second disk", time.Minute, func() bool {
				m, _ := filepath.Glob(tmpOfSecond)
				return len(m) > 0
			})
			// Stop the process where it is, so that the signal arrives
			// while the second disk is being written, however fast the
			// machine copies.
			s.cmd.Process.Signal(syscall.SIGSTOP)
			if _, err := os.Stat(filepath.Join(out, "big01.img")); err != nil {
				t.Fatalf("the first disk is not in place before the signal: %v", err)
			}
			s.cmd.Process.Signal(syscall.SIGINT)
			s.cmd.Process.Signal(syscall.SIGCONT)
			if code := s.exitCode(t, time.Minute); code != exitInterrupted {
				t.Fatalf("exit code %d, want %d\nstdout: %s\nstderr: %s", code, exitInterrupted, s.stdout.String(), s.stderr.String())
			}
			if !strings.Contains(s.stderr.String(), "interrupted; nothing was written to "+filepath.Join(out, "big01.img")) {
				t.Errorf("stderr does not say the export was interrupted and nothing written:\n%s", s.stderr.String())
			}
			if left, _ := os.ReadDir(out); len(left) != 0 {
				var names []string
				for _, e := range left {
					names = append(names, e.Name())
				}
				t.Fatalf("files left in the --out folder after Ctrl-C: %v", names)
			}
		})
	}
}

// Against an embedded Temporal server: Ctrl-C while `run --watch` or `run
// --wait` follows a run, or while a failover waits for its workflow, stops
// the waiting only (the workflow keeps running in Temporal, and stderr says
// how to follow it again); run and schedule print text or JSON.
func TestCommandsAgainstTemporal(t *testing.T) {
	testkit.Long(t, "embedded Temporal server")
	dir := t.TempDir()
	addr := testkit.FreeAddr(t)
	srv, err := devserver.Start(devserver.Options{DataDir: filepath.Join(dir, "temporal"), FrontendAddress: addr, Namespace: "default"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	c, err := client.Dial(client.Options{HostPort: addr, Namespace: "default"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// No worker polls the task queue: the workflows the starter starts stay
	// running until the test ends, whatever the starter does on exit.
	env := []string{"REPLICATOR_TEMPORAL_ADDRESS=" + addr}
	for _, c2 := range []struct {
		name   string
		args   []string
		id     *regexp.Regexp // the workflow id, from stderr
		advice string         // how to follow it again
	}{
		{"run --watch", []string{"run", "demo", "--watch"}, regexp.MustCompile(`started workflow (\S+) `), "starter run --attach %s --watch"},
		{"run --wait", []string{"run", "demo", "--wait"}, regexp.MustCompile(`started workflow (\S+) `), "starter status %s"},
		{"failover", []string{"failover", "demo", "web01"}, nil, "temporal workflow result --workflow-id %s"},
	} {
		t.Run(c2.name, func(t *testing.T) {
			s := startStarter(t, env, append(c2.args, "--data-dir", dir)...)
			var id string
			if c2.id != nil {
				s.waitFor(t, "started workflow", time.Minute, func() bool { return c2.id.MatchString(s.stderr.String()) })
				id = c2.id.FindStringSubmatch(s.stderr.String())[1]
			} else {
				// the replica's operation id: wait until the workflow exists
				id = contract.ReplicaOpWorkflowID("demo", "web01")
				s.waitFor(t, "workflow "+id, time.Minute, func() bool {
					_, err := c.DescribeWorkflowExecution(context.Background(), id, "")
					return err == nil
				})
			}
			s.cmd.Process.Signal(syscall.SIGINT)
			if code := s.exitCode(t, 30*time.Second); code != exitInterrupted {
				t.Fatalf("exit code %d, want %d\nstderr: %s", code, exitInterrupted, s.stderr.String())
			}
			if want := strings.ReplaceAll(c2.advice, "%s", id); !strings.Contains(s.stderr.String(), want) {
				t.Errorf("stderr does not say %q:\n%s", want, s.stderr.String())
			}
			d, err := c.DescribeWorkflowExecution(context.Background(), id, "")
			if err != nil {
				t.Fatal(err)
			}
			if st := d.WorkflowExecutionInfo.Status; st != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
				t.Errorf("workflow %s is %s after Ctrl-C, want running", id, st)
			}
		})
	}

	// The commands that talk to Temporal print text by default and JSON
	// when asked, with the same figures.
	t.Run("output", func(t *testing.T) {
		t.Setenv("REPLICATOR_TEMPORAL_ADDRESS", addr)
		starter := func(args ...string) string {
			t.Helper()
			root := newRootCommand()
			var stdout, stderr bytes.Buffer
			root.SetOut(&stdout)
			root.SetErr(&stderr)
			root.SetArgs(append(args, "--data-dir", dir))
			if err := root.Execute(); err != nil {
				t.Fatalf("starter %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
			}
			return stdout.String()
		}
		text := starter("run", "demo")
		if !regexp.MustCompile(`^demo-\S+\n$`).MatchString(text) {
			t.Errorf("run, text: %q, want the workflow id alone", text)
		}
		var started struct{ WorkflowID, RunID string }
		if out := starter("run", "demo", "--output", "json"); json.Unmarshal([]byte(out), &started) != nil || !strings.HasPrefix(started.WorkflowID, "demo-") || started.RunID == "" {
			t.Errorf("run --output json: %q", out)
		}
		if out := starter("schedule", "create", "demo", "--interval", "1h"); out != contract.ScheduleID("demo")+"\n" {
			t.Errorf("schedule create, text: %q", out)
		}
		// The schedule list is eventually consistent (visibility): wait for it.
		var list []struct {
			ID     string   `json:"id"`
			Paused bool     `json:"paused"`
			Next   []string `json:"nextRuns"`
		}
		deadline := time.Now().Add(30 * time.Second)
		for len(list) == 0 {
			if time.Now().After(deadline) {
				t.Fatal("schedule list --output json: the new schedule is not listed within 30 s")
			}
			time.Sleep(200 * time.Millisecond)
			if err := json.Unmarshal([]byte(starter("schedule", "list", "--output", "json")), &list); err != nil {
				t.Fatal(err)
			}
		}
		if list[0].ID != contract.ScheduleID("demo") || list[0].Paused || len(list[0].Next) == 0 {
			t.Errorf("schedule list --output json: %+v", list)
		}
		row := regexp.MustCompile(`(?m)^SCHEDULE\s+PAUSED\s+NEXT RUNS\n` + regexp.QuoteMeta(list[0].ID) + `\s+false\s+` + regexp.QuoteMeta(list[0].Next[0]))
		if out := starter("schedule", "list"); !row.MatchString(out) {
			t.Errorf("schedule list, text:\n%s\nwant a row matching %s", out, row)
		}
		starter("schedule", "delete", "demo")
	})
}
