// Package transfer is the data channel between the source proxy and the
// target agent: Sender streams the planned blocks of one disk, Receiver checks
// every frame and writes it into the open restore point through a Sink, makes
// data, digests and position durable, and only then acknowledges the position.
// A broken connection costs at most the unacknowledged frames: on reconnect
// the agent says where to resume.
//
// # Protocol (version 2)
//
// One TLS 1.3 connection per disk, both ends authenticated by certificates of
// the same CA. Every message is
//
//	type (1 byte) | body length (uint32, big endian) | body
//
// and integers in bodies are big endian; strings are uint16 length + bytes.
//
//	proxy → agent  'H' Hello      magic "RPLC", version u16, flags u8 (1 = want digests),
//	                              disk size i64, block size i64, job, vm id, disk id, checkpoint id
//	agent → proxy  'R' HelloReply resume from i64, digest state u8 (0 not asked, 1 follow, 2 none),
//	                              digest block size i64, digest count i64, retryable u8, error string
//	agent → proxy  'S' Sums       up to 4096 digests of 16 bytes (when digest state is 1)
//	proxy → agent  'D' Data       offset i64, raw length u32, codec u8, flags u8 (1 = zero block,
//	                              2 = partial), payload length u32, XXH3-128 of the raw block
//	                              (16 bytes), [parts u64 when partial], payload
//	proxy → agent  'P' Passed     position i64: every planned block below it has been sent
//	agent → proxy  'A' Ack        position i64, durable on the agent; raw bytes written on this connection i64
//	proxy → agent  'F' Done       frames i64 sent on this connection
//	agent → proxy  'G' DoneReply  position i64, raw bytes written i64, frames i64
//	agent → proxy  'E' Error      flags u8 (1 = retryable, 2 = replica differs: send whole blocks),
//	                              message string; the agent closes the stream
//
// A data frame is exactly one block of the grid (offset a multiple of the
// block size, raw length the block's length) and frames arrive in ascending
// offset order. Its checksum is the block's digest (package digest), so the
// agent verifies the frame and obtains the digest it records with one hash.
// A zero frame has no payload: the agent writes zeros and records the digest
// of zeros.
//
// A partial frame (version 2) carries only some parts of its block: a block
// has at most 64 parts of blockplan.PartSize bytes, and bit i of the frame's
// parts set stands for part i; the payload decompresses to those parts, in
// order. The sender uses one when change tracking says that not all of the
// block changed. Its checksum is still the digest of the whole block: the
// agent lays the parts over the block its restore point holds so far (the
// previous point's), checks the result against the checksum, and only then
// writes the parts. A mismatch means the replica and the change tracking
// disagree outside the changed parts: the agent writes nothing of the frame
// and ends the stream with the "replica differs" flag, and the sender
// continues with whole blocks (ErrReplicaDiffers). A version 2 agent accepts
// version 1 senders, which never send partial frames.
//
// # Durability and resume
//
// The agent persists (Sink.Persist: data and digests fsynced, then the
// position recorded atomically) every ReceiverOptions.PersistBytes or
// PersistInterval, whichever comes first, and at Done; only then does it
// acknowledge. Writes after the last acknowledgement are not persisted when a
// connection fails: they are sent again. On reconnect the agent answers Hello
// with its durable position and the sender skips every planned block below it,
// so a transfer resumed any number of times writes the same bytes as one
// never interrupted. One connection at a time writes a disk: a new connection
// for the same disk and checkpoint closes the old one and waits for it.
//
// # Errors
//
// SendDisk makes one attempt; IsRetryable tells whether another attempt may
// succeed (connection lost, agent unreachable or busy). Certificate
// refusals, unsafe names, a missing restore-point session, corrupt frames and
// source read errors are final. SendDiskWithRetry retries within one call;
// an activity may instead let Temporal retry it, since the agent's position
// survives both.
//
// # Security
//
// TLS 1.3 only, client certificates required and verified against the
// configured CA, the agent's certificate verified by the proxy. Before
// anything is opened the agent checks the names in Hello (ValidName), the
// block size and the disk size; every frame is checked against the disk's
// size and the block grid, its payload bounded by its raw length, its
// decompressed size bounded by the declared length, and its checksum verified
// before a byte is written.
package transfer
