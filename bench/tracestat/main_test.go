package main

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime/trace"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// spun keeps what spin counted, so that its loop is not optimised away.
var spun int

//go:noinline
func spin(d time.Duration) (n int) {
	for end := time.Now().Add(d); time.Now().Before(end); n++ {
	}
	return n
}

//go:noinline
func sleepInKernel(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	syscall.Nanosleep(&ts, nil)
}

// The goroutines of a traced program are found by name with their time on a
// CPU and in a system call.
func TestTimesByGoroutine(t *testing.T) {
	var buf bytes.Buffer
	if err := trace.Start(&buf); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { spun = spin(80 * time.Millisecond) })
	wg.Go(func() { sleepInKernel(80 * time.Millisecond) })
	wg.Wait()
	trace.Stop()
	path := filepath.Join(t.TempDir(), "t.trace")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(path, &out); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	row := func(name string) []string {
		for line := range strings.Lines(out.String()) {
			cells := strings.Split(line, "|")
			if len(cells) > 7 && strings.Contains(cells[1], name) {
				return cells
			}
		}
		t.Fatalf("no row for %s", name)
		return nil
	}
	secs := func(cell string) float64 {
		v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(cell), " s"), 64)
		if err != nil {
			t.Fatalf("cell %q: %v", cell, err)
		}
		return v
	}
	// The goroutines are named by the test's functions (closures of it).
	if s := row("TestTimesByGoroutine.func1"); secs(s[2]) < 0.07 {
		t.Errorf("the spinning goroutine ran %s, want about 0.08 s", s[2])
	}
	s := row("TestTimesByGoroutine.func2")
	if secs(s[3]) < 0.07 || secs(s[4]) > secs(s[3]) {
		t.Errorf("the sleeping goroutine: %s in system calls, %s of it with a P, want about 0.08 s in calls", s[3], s[4])
	}
	if !strings.HasPrefix(strings.TrimSpace(s[5]), "1 ") {
		t.Errorf("the sleeping goroutine made %s system calls, want 1", s[5])
	}
}

func TestRefusesWhatIsNotATrace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "not.trace")
	os.WriteFile(path, []byte("not a trace"), 0o600)
	err := run(path, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("run on a file that is no trace: %v, want an error naming it", err)
	}
}
