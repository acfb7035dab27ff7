// Command tracestat reads an execution trace (runtime/trace: `bench -profile
// DIR -trace` and REPLICATOR_FULLCOPY_TRACE write them) and says where the
// goroutines spent the run: how many ran Go code at once, and for each kind of
// goroutine its time on a CPU, in system calls, runnable and waiting, and how
// long its system calls kept a P (the scheduler's slot to run Go code: a
// goroutine in a system call keeps its P until the call returns or the
// runtime's monitor hands the P to another thread).
//
//	go run ./bench/tracestat FILE.trace
//
// A goroutine is named by the outermost function of this module (or of the
// traced program's main package) on its stack the first time it stops
// running, else by the function it was started with.
package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"golang.org/x/exp/trace"
)

const module = "github.com/replicator/replicator/"

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: tracestat FILE.trace")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "tracestat:", err)
		os.Exit(1)
	}
}

// goroutine is what one goroutine did (seconds) and its current state.
type goroutine struct {
	name                       string // its outermost function of this module, else its entry
	ours                       bool   // name is a function of this module
	running, syscall, runnable float64
	pHeld                      float64 // of syscall: time a P stayed with the call
	syscalls, stolen           int     // system calls, and those whose P was taken
	waiting                    map[string]float64
	since                      trace.Time
	reason                     string       // why it last stopped running, and where
	sysFrom                    trace.Time   // when its last system call began
	sysP                       trace.ProcID // the P it held then (pHolder says whether it still does)
}

func run(path string, out io.Writer) error {
	gs, atOnce, total, err := read(path)
	if err != nil {
		return err
	}
	report(out, gs, atOnce, total)
	return nil
}

// read replays the trace at path: what each goroutine did, and the seconds
// with 0, 1, 2 and 3 or more goroutines running Go code.
func read(path string) (gs map[trace.GoID]*goroutine, atOnce map[int]float64, total float64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, 0, err
	}
	defer f.Close()
	r, err := trace.NewReader(f)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("%s: %w", path, err)
	}
	gs = map[trace.GoID]*goroutine{}
	pHolder := map[trace.ProcID]*goroutine{} // P → goroutine in a system call on it
	running := 0                             // goroutines running Go code
	var first, last trace.Time
	atOnce = map[int]float64{}
	secs := func(d trace.Time) float64 { return float64(d) / 1e9 }

	for {
		ev, err := r.ReadEvent()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, 0, fmt.Errorf("%s: %w", path, err)
		}
		t := ev.Time()
		if first == 0 {
			first, last = t, t
		}
		atOnce[min(running, 3)] += secs(t - last)
		last = t
		if ev.Kind() != trace.EventStateTransition {
			continue
		}
		st := ev.StateTransition()
		if st.Resource.Kind == trace.ResourceProc {
			// A P taken from a thread in a system call (ProcSteal).
			if from, to := st.Proc(); from == trace.ProcRunning && to == trace.ProcIdle {
				p := st.Resource.Proc()
				if g := pHolder[p]; g != nil {
					g.pHeld += secs(t - g.sysFrom)
					g.stolen++
					delete(pHolder, p)
				}
			}
			continue
		}
		if st.Resource.Kind != trace.ResourceGoroutine {
			continue
		}
		id := st.Resource.Goroutine()
		from, to := st.Goroutine()
		g := gs[id]
		if g == nil {
			g = &goroutine{since: t, waiting: map[string]float64{}}
			gs[id] = g
		}
		if g.name == "" {
			g.name = entry(st.Stack)
		}
		if !g.ours && from == trace.GoRunning {
			if name := outermost(ev.Stack()); name != "" {
				g.name, g.ours = name, true
			}
		}
		d := secs(t - g.since)
		switch from {
		case trace.GoRunning:
			g.running += d
			running--
		case trace.GoSyscall:
			g.syscall += d
			if pHolder[g.sysP] == g {
				g.pHeld += secs(t - g.sysFrom)
				delete(pHolder, g.sysP)
			}
		case trace.GoRunnable:
			g.runnable += d
		case trace.GoWaiting:
			g.waiting[g.reason] += d
		}
		if from == trace.GoRunning && to != trace.GoSyscall {
			g.reason = st.Reason + " in " + innermost(ev.Stack())
		}
		switch to {
		case trace.GoRunning:
			running++
		case trace.GoSyscall:
			g.syscalls++
			g.sysFrom, g.sysP = t, ev.Proc()
			pHolder[g.sysP] = g
		}
		g.since = t
	}
	if first == 0 {
		return nil, nil, 0, fmt.Errorf("%s: no events", path)
	}
	return gs, atOnce, secs(last - first), nil
}

// report prints the goroutines of one name together, busiest first.
func report(out io.Writer, gs map[trace.GoID]*goroutine, atOnce map[int]float64, total float64) {
	byName := map[string]*goroutine{}
	count := map[string]int{}
	for _, g := range gs {
		sum := byName[g.name]
		if sum == nil {
			sum = &goroutine{name: g.name, waiting: map[string]float64{}}
			byName[g.name] = sum
		}
		count[g.name]++
		sum.running += g.running
		sum.syscall += g.syscall
		sum.runnable += g.runnable
		sum.pHeld += g.pHeld
		sum.syscalls += g.syscalls
		sum.stolen += g.stolen
		for k, v := range g.waiting {
			sum.waiting[k] += v
		}
	}
	list := make([]*goroutine, 0, len(byName))
	for _, g := range byName {
		if g.running+g.syscall >= 0.005 {
			list = append(list, g)
		}
	}
	slices.SortFunc(list, func(a, b *goroutine) int { return cmp.Compare(b.running+b.syscall, a.running+a.syscall) })

	fmt.Fprintf(out, "trace of %.3f s\n\n", total)
	fmt.Fprintf(out, "goroutines running Go code at once: none %.3f s, one %.3f s, two %.3f s, three or more %.3f s\n\n",
		atOnce[0], atOnce[1], atOnce[2], atOnce[3])
	fmt.Fprintln(out, "| goroutines (how many) | running Go code | in system calls | of which a P stayed with the call | system calls (P taken away) | runnable | waiting (the longest reason) |")
	fmt.Fprintln(out, "|---|---|---|---|---|---|---|")
	for _, g := range list {
		why, most, waited := "", 0.0, 0.0
		for k, v := range g.waiting {
			waited += v
			if v > most {
				why, most = k, v
			}
		}
		w := fmt.Sprintf("%.3f s", waited)
		if most > 0 {
			w += fmt.Sprintf(" (%.3f s %s)", most, why)
		}
		fmt.Fprintf(out, "| %s (%d) | %.3f s | %.3f s | %.3f s | %d (%d) | %.3f s | %s |\n",
			short(g.name), count[g.name], g.running, g.syscall, g.pHeld, g.syscalls, g.stolen, g.runnable, w)
	}
}

// outermost is the outermost function of this module (or of a main
// package) on the stack.
func outermost(st trace.Stack) string {
	name := ""
	for f := range st.Frames() {
		if strings.HasPrefix(f.Func, module) || strings.HasPrefix(f.Func, "main.") {
			name = f.Func
		}
	}
	return name
}

// innermost is the innermost function of this module on the stack, or the
// innermost function.
func innermost(st trace.Stack) string {
	top := ""
	for f := range st.Frames() {
		if strings.HasPrefix(f.Func, module) {
			return short(f.Func)
		}
		if top == "" {
			top = f.Func
		}
	}
	return top
}

// entry is the function a goroutine was started with, from the stack of its
// creation's transition.
func entry(st trace.Stack) string {
	name := ""
	for f := range st.Frames() {
		name = f.Func
	}
	return name
}

func short(name string) string { return strings.TrimPrefix(name, module) }
