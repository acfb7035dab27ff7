// Package filelock takes the advisory, process-wide lock on an open file
// that the lab host and the Hyper-V simulator use to serialise changes to a
// VM's files between processes (flock on Unix, LockFileEx on Windows). The
// operating system releases it when the file is closed or the process dies,
// so a killed process never leaves a lock behind.
package filelock
