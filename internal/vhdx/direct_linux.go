package vhdx

import (
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// openDirect opens path a second time for direct I/O when the filesystem
// offers it for this file: writes through it go from the caller's buffer to
// storage, without a copy into the page cache (open(2), O_DIRECT). statx(2)
// with STATX_DIOALIGN (Linux 6.1) says whether direct I/O is supported and
// the alignment it needs of buffers and of file offsets and lengths; a file
// system that does not report it (tmpfs, older kernels) gets no direct
// file, and every write goes through the page cache as before.
func openDirect(path string) *directFile {
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, 0, unix.STATX_DIOALIGN, &st); err != nil ||
		st.Mask&unix.STATX_DIOALIGN == 0 || st.Dio_mem_align == 0 || st.Dio_offset_align == 0 {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_DIRECT, 0)
	if err != nil {
		return nil
	}
	spareProc.Do(addSpareProc)
	return &directFile{f: f, memAlign: uintptr(st.Dio_mem_align), offAlign: int64(st.Dio_offset_align)}
}

// spareProc adds one P (the Go scheduler's slot for running goroutines) the
// first time a direct file is opened, unless GOMAXPROCS is set in the
// environment. A direct write sleeps in the kernel until the device has the
// bytes, and the goroutine in it keeps its P meanwhile: the runtime hands the
// P to other goroutines only when its monitor thread notices the system call,
// on a tick that backs off to 10 ms while it finds nothing to do (the
// scheduler's retake in runtime/proc.go). A replica's writes come one after
// another, so without a spare P one core stood idle for most of their time
// while the agent's and the proxy's goroutines waited to run (an execution
// trace of a 2 GiB copy on two cores: 359 writes kept a P for 0.76 s of the
// 2.55 s run, and the runtime took it back in 20 of them; BENCHMARKS.md,
// "A spare P for the direct writes"). While no write sleeps, the goroutines
// of every P share the cores as the kernel schedules their threads. Setting
// GOMAXPROCS ends the runtime's own updates of it to a changed CPU limit of
// the container (go1.25); the limit at the first direct file stays.
var spareProc sync.Once

func addSpareProc() {
	if os.Getenv("GOMAXPROCS") != "" {
		return
	}
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 1)
}

// directFile is a file opened for direct I/O and the alignment it needs.
type directFile struct {
	f        *os.File
	memAlign uintptr
	offAlign int64
}

// fits reports whether n bytes at off meet the file's alignment (the bytes
// themselves are copied into an aligned buffer before they go).
func (d *directFile) fits(off, n int64) bool {
	return n > 0 && off%d.offAlign == 0 && n%d.offAlign == 0
}

// writeAt writes b at off by direct I/O.
func (d *directFile) writeAt(b []byte, off int64) error {
	_, err := d.f.WriteAt(b, off)
	return err
}
