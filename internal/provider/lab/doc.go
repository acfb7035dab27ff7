// Package lab is a file-backed stand-in for a Hyper-V host, for running and
// testing replication where no Hyper-V exists.
//
// A lab host is a folder of VMs. Each VM is a folder holding vm.json (its
// identity, disks, checkpoints and reference points) and VHDX disks. It
// behaves like Hyper-V where replication depends on it:
//
//   - A checkpoint freezes the disk files the VM writes to; a differencing
//     child <disk>_<checkpoint-id>.avhdx takes their place. Readers open the
//     frozen chain read-only.
//   - Every write is recorded in a persistent change map (one bit per 64 KiB)
//     before the data is written, so a crash never loses a change. A
//     checkpoint closes the current change interval; the changed ranges
//     between a reference point and a checkpoint are the union of the
//     intervals between them, like resilient change tracking (RCT).
//   - Releasing a checkpoint merges the child back into its parent; turning
//     it into a reference point does the same and keeps the checkpoint moment
//     as the baseline of the next changed ranges.
//
// Every change of the metadata and every write to a disk holds an flock on
// <vm>/lock, so `starter lab write` in another process may run while a
// replication reads a checkpoint.
package lab
