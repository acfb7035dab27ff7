// Package replica is the replica store on the target: it keeps every VM
// replicated to this agent under <datastore>/<job>/<vm-id>/ as a chain of
// restore points, writes the open restore point of a run (resumable per disk),
// commits it atomically, applies retention by merging the oldest child into the
// base, and reads any listed point back for failover and verify.
//
// Layout of one replica:
//
//	replica.json                      metadata (versioned): VM, points, open session, pending merge
//	disks/<disk-id>/<point-id>.vhdx   the first point is the base, each later one a differencing child
//	digests/<disk-id>/<point-id>.sum  per-block digests of the point's bytes
//	reference.json                    source reference point of each point (change tracking)
//	lock                              held (flock) by the one writer; says who holds it
//	readers                           held shared by readers, exclusively by a merge
//
// Only complete restore points are listed. Every metadata change is written to a
// temporary file, synced, renamed over replica.json and the directory synced, so
// that a crash at any moment leaves a replica that opens; a merge interrupted by
// a crash is finished by the next writer from the intent recorded before it
// started.
//
// Digests describe the replica's bytes at each point, block by block (the
// session's block size; the last block may be short). A new point starts from
// the previous point's digests; a base starts from the digest of zeros.
// Readers (verify, failover) take no writer lock: they read the metadata and
// the files of listed points, which only a retention merge changes, and a
// merge waits for them.
package replica
