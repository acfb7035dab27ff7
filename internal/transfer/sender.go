package transfer

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/s2"

	"github.com/replicator/replicator/internal/blockplan"
	"github.com/replicator/replicator/internal/codec"
	"github.com/replicator/replicator/internal/digest"
	"github.com/replicator/replicator/internal/disk"
	"github.com/replicator/replicator/internal/zeros"
)

// Sender is the proxy's side of the data channel: one agent address, the
// client TLS configuration, and the shape of the pipeline. A Sender may send
// several disks at once.
type Sender struct {
	// Address is the agent's data channel, host:port.
	Address string
	// TLS holds the proxy's certificate and the CA pool (RootCAs) that signs
	// agents. ServerName defaults to the host of Address.
	TLS *tls.Config
	// DialTimeout bounds connecting and the TLS handshake (default 15 s).
	DialTimeout time.Duration
	// IdleTimeout ends an attempt when the agent takes no data and says
	// nothing for this long (default 2 min).
	IdleTimeout time.Duration
	// StallTimeout ends an attempt when data the agent has not acknowledged
	// is outstanding and no acknowledgement has come for this long (default
	// 30 s): a half-open connection, or a network path that stopped carrying
	// bytes without closing, is given up well before IdleTimeout. The agent
	// acknowledges about every 2 s while data flows.
	StallTimeout time.Duration
	// Workers read, digest, filter and compress blocks (default GOMAXPROCS).
	Workers int
	// InFlight is how many blocks the pipeline holds at once, whatever the
	// disk size (default 2×Workers+2). Memory is about InFlight × 2.2 × the
	// block size.
	InFlight int
	// BytesPerSecond caps the bytes this Sender puts on the wire per disk
	// transfer (0: no cap), to leave room on a shared WAN link.
	BytesPerSecond int64
	// Limit, when set, is waited on for every frame's bytes before they go:
	// a limit shared by all the transfers to one target (package throttle).
	Limit interface {
		Wait(ctx context.Context, n int64) error
	}
	// Conn, when set, gives each attempt an established connection whose
	// peer is already authenticated, instead of dialling Address with TLS:
	// a failback, where the agent sends on a connection the proxy opened
	// (the proxy always dials, the agent always accepts).
	Conn func(ctx context.Context) (net.Conn, error)
}

// SendOptions name the disk and how to send it.
type SendOptions struct {
	Job, VMID, DiskID, CheckpointID string
	// Token is the session token of the restore point (BeginRestorePoint's):
	// the agent refuses a sender without it.
	Token string
	// BlockSize is the block grid (a multiple of 512, 4 KiB to 64 MiB).
	BlockSize   int64
	Compression codec.Level
	// CompareDigests asks the agent for the digests of the replica's newest
	// complete point and skips every block whose digest is equal. With a nil
	// plan the sender then plans with blockplan.Digest (or blockplan.Full if
	// the replica has no digests, or blockplan.All if they were recorded with
	// another block size).
	CompareDigests bool
	// TempDir is where a digest table too large to keep in memory (over
	// 16 MiB: disks over 1 TiB at 1 MiB blocks) is spilled (default os.TempDir()).
	TempDir string
	// WholeBlocks sends every planned block whole, even when the plan says
	// only some of its parts changed. Without it such a block travels as
	// those parts alone, with the digest of the whole block, which the agent
	// checks by laying them over the replica's block before writing them.
	WholeBlocks bool
	// ZeroBlocksAsData sends allocated blocks that read as zeros as
	// compressed data, like any other block, instead of zero frames (job
	// setting exclude.zeroBlocks: false).
	ZeroBlocksAsData bool
}

// Result counts what one transfer did. JSON names are the contract's.
type Result struct {
	BytesRead       int64 `json:"bytesRead"`       // bytes read from the source
	BytesSent       int64 `json:"bytesSent"`       // payload bytes on the wire, after compression
	BytesWritten    int64 `json:"bytesWritten"`    // raw bytes the agent wrote (data and zeros)
	BlocksChanged   int64 `json:"blocksChanged"`   // blocks written on the replica, zero blocks included
	BlocksZero      int64 `json:"blocksZero"`      // of those, all-zero blocks sent as zero frames
	BlocksExcluded  int64 `json:"blocksExcluded"`  // blocks wholly inside excluded ranges, not sent
	BlocksUnchanged int64 `json:"blocksUnchanged"` // blocks whose digest equals the replica's, not sent
	ResumedFromByte int64 `json:"resumedFromByte"` // where the agent said to resume
	// Acknowledged is the last position the agent made durable; the disk's
	// size once the transfer is done.
	Acknowledged int64 `json:"acknowledged"`
	// DigestsCompared says whether the replica's digests were used.
	DigestsCompared bool `json:"digestsCompared"`
}

// Progress is reported on every acknowledgement and about once a second.
type Progress struct {
	Result
	DiskSize int64
}

// counters are updated by the pipeline and read by progress reports.
type counters struct {
	read, sent, written, changed, zero, excluded, unchanged, acked atomic.Int64
	ledger                                                         ledger
	// waiting is when the agent was last seen to make progress while
	// something it has not acknowledged is outstanding (unix nanoseconds;
	// 0: nothing outstanding).
	waiting atomic.Int64
	resumed int64
	digests bool
}

func (c *counters) result() Result {
	return Result{
		BytesRead: c.read.Load(), BytesSent: c.sent.Load(), BytesWritten: c.written.Load(),
		BlocksChanged: c.changed.Load(), BlocksZero: c.zero.Load(), BlocksExcluded: c.excluded.Load(),
		BlocksUnchanged: c.unchanged.Load(), ResumedFromByte: c.resumed, Acknowledged: c.acked.Load(),
		DigestsCompared: c.digests,
	}
}

func (s *Sender) defaults() (dial, idle time.Duration, workers, inFlight int) {
	dial, idle, workers, inFlight = s.DialTimeout, s.IdleTimeout, s.Workers, s.InFlight
	if dial <= 0 {
		dial = 15 * time.Second
	}
	if idle <= 0 {
		idle = 2 * time.Minute
	}
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	if inFlight <= 0 {
		inFlight = 2*workers + 2
	}
	inFlight = max(inFlight, workers)
	return
}

// SendDisk sends the blocks of plan from src to the agent, skipping those
// below the position the agent acknowledged earlier. excluded are byte ranges
// that need not travel (swap, page files, excluded guest files: sorted or
// not, overlapping or not): blocks wholly inside them are dropped, excluded
// bytes inside sent blocks are zeroed. plan may be nil with
// opts.CompareDigests (see SendOptions) and otherwise defaults to
// blockplan.Full over src.Allocated(). progress, if not nil, is called from
// the sender's goroutines one call at a time.
//
// SendDisk makes one attempt. When the connection breaks or the agent is
// unreachable it returns an error for which IsRetryable is true, with the
// counters of the attempt; calling it again resumes where the agent's durable
// position stands. SendDiskWithRetry does that in a loop; an activity may as
// well leave it to Temporal's retries. Any number of resumed attempts leave
// the replica byte-identical to one uninterrupted transfer, provided the
// source (a frozen checkpoint) does not change.
func (s *Sender) SendDisk(ctx context.Context, src disk.Image, plan blockplan.Plan, excluded []disk.Extent, opts SendOptions, progress func(Progress)) (Result, error) {
	var st counters
	err := s.send(ctx, src, plan, excluded, opts, progress, &st, nil)
	if err != nil {
		// Only what the agent acknowledged is known to be written.
		st.written.Store(st.ledger.acknowledged())
	}
	return st.result(), err
}

// ledger maps positions to the raw bytes sent up to them on one connection,
// for the frames the agent has not acknowledged yet, so that the bytes an
// agent made durable without managing to say so (the connection broke right
// after) are counted when the next attempt learns its resume position.
type ledger struct {
	mu      sync.Mutex
	entries []ledgerEntry // ascending
	acked   int64         // raw bytes up to the last acknowledged position
}

type ledgerEntry struct{ end, cum int64 }

// maxLedger bounds the ledger; beyond it frames go uncounted until the next
// acknowledgement (an agent acknowledges every 64 MiB by default: 16,384
// frames of the smallest block size).
const maxLedger = 1 << 18

func (l *ledger) add(end, cum int64) {
	l.mu.Lock()
	if len(l.entries) < maxLedger {
		l.entries = append(l.entries, ledgerEntry{end, cum})
	}
	l.mu.Unlock()
}

// ack records that everything below pos is durable and returns the raw bytes
// sent up to pos.
func (l *ledger) ack(pos int64) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := 0
	for i < len(l.entries) && l.entries[i].end <= pos {
		l.acked = l.entries[i].cum
		i++
	}
	l.entries = append(l.entries[:0], l.entries[i:]...)
	return l.acked
}

// pending reports whether frames are sent that the agent has not acknowledged.
func (l *ledger) pending() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries) > 0
}

func (l *ledger) acknowledged() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.acked
}

// send makes one attempt; onResume, if set, learns the agent's resume position.
func (s *Sender) send(ctx context.Context, src disk.Image, plan blockplan.Plan, excluded []disk.Extent, opts SendOptions, progress func(Progress), st *counters, onResume func(int64)) error {
	dialTimeout, idle, workers, inFlight := s.defaults()
	size, bs := src.Size(), opts.BlockSize
	h := Hello{Version: Version, Job: opts.Job, VMID: opts.VMID, DiskID: opts.DiskID, CheckpointID: opts.CheckpointID,
		DiskSize: size, BlockSize: bs, WantDigests: opts.CompareDigests, Token: opts.Token}
	if err := h.Validate(); err != nil {
		return fmt.Errorf("send %s: %w", h, err)
	}
	comp, err := codec.New(opts.Compression)
	if err != nil {
		return fmt.Errorf("send %s: %w", h, err)
	}

	parent := ctx
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	var conn net.Conn
	if s.Conn != nil {
		conn, err = s.Conn(ctx)
		if err != nil {
			err = s.failure(ctx, "wait for the receiver's connection", err)
		}
	} else {
		conn, err = s.dial(ctx, dialTimeout)
	}
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	br := bufio.NewReaderSize(conn, 64<<10)
	bw := bufio.NewWriterSize(conn, 256<<10)
	var enc encoder

	// Hello and the agent's answer.
	conn.SetDeadline(time.Now().Add(idle))
	if _, err := bw.Write(encodeHello(&enc, h)); err != nil {
		return s.failure(ctx, "send hello", err)
	}
	if err := bw.Flush(); err != nil {
		return s.failure(ctx, "send hello", err)
	}
	reply, table, err := readHelloReply(br, conn, h, idle, opts.TempDir)
	if err != nil {
		return s.failure(ctx, "read hello reply from "+s.Address, err)
	}
	if reply.Err != "" {
		return agentError(reply.Err, boolByte(reply.Retryable))
	}
	if reply.ResumeFrom < 0 || reply.ResumeFrom > size {
		return fmt.Errorf("send %s: agent says resume from %d, outside the disk of %d bytes", h, reply.ResumeFrom, size)
	}
	conn.SetDeadline(time.Time{})
	if onResume != nil {
		onResume(reply.ResumeFrom)
	}
	st.resumed = reply.ResumeFrom
	st.acked.Store(reply.ResumeFrom)
	var prev blockplan.Sums // nil unless digests are compared
	if table != nil {
		defer table.Close()
		if reply.DigestState == digestFollow && reply.DigestBlockSize == bs {
			prev = table
		}
	}
	if plan == nil {
		switch {
		case reply.DigestState == digestFollow && reply.DigestBlockSize == bs:
			plan = blockplan.Digest(size, bs, src.Allocated(), prev)
		case reply.DigestState == digestFollow:
			plan = blockplan.All(size, bs)
		default:
			plan = blockplan.Full(size, bs, src.Allocated())
		}
	}
	st.digests = prev != nil

	report := newReporter(progress, st, size)
	agent := s.readAgent(br, conn, size, st, report)
	stalled := watchStall(ctx, conn, st, s.stallTimeout())

	p := &pipeline{
		src: src, size: size, bs: bs, comp: comp, prev: prev, resume: reply.ResumeFrom,
		partSize: blockplan.PartSize(bs), partial: !opts.WholeBlocks, zeroAsData: opts.ZeroBlocksAsData,
		allocated: src.Allocated(), excluded: disk.Merge(excluded, size),
		order: make(chan *task, inFlight), work: make(chan *task, workers), free: make(chan *task, inFlight),
	}
	for range inFlight {
		p.free <- &task{done: make(chan struct{}, 1)}
	}
	var wg sync.WaitGroup
	wg.Go(func() { p.produce(ctx, plan) })
	for range workers {
		wg.Go(p.process)
	}
	p.limit = s.Limit
	frames, werr := p.write(ctx, conn, bw, &enc, idle, st, report, s.BytesPerSecond)
	if werr == nil {
		werr = p.err
	}
	if werr != nil {
		cancel()
		wg.Wait()
		conn.Close()
		<-agent.finished
		switch {
		case agent.agentSaid: // the agent's reason is the root cause
			return agent.err
		case stalled.Load() != nil:
			return fmt.Errorf("send %s: %w", h, *stalled.Load())
		case parent.Err() != nil:
			return fmt.Errorf("send %s: %w", h, context.Cause(parent))
		}
		return fmt.Errorf("send %s: %w", h, werr)
	}
	wg.Wait()

	// Done, then the agent's final word.
	conn.SetWriteDeadline(time.Now().Add(idle))
	if _, err := bw.Write(encodePosition(&enc, msgDone, frames)); err != nil {
		return s.failure(ctx, "send done", err)
	}
	if err := bw.Flush(); err != nil {
		return s.failure(ctx, "send done", err)
	}
	st.outstanding()
	conn.SetReadDeadline(time.Now().Add(idle))
	<-agent.finished
	if err := stalled.Load(); err != nil {
		return fmt.Errorf("send %s: %w", h, *err)
	}
	if agent.err != nil {
		return agent.err
	}
	if agent.done.Position != size || agent.done.Frames != frames {
		return fmt.Errorf("send %s: agent finished at position %d with %d frames, want %d and %d", h, agent.done.Position, agent.done.Frames, size, frames)
	}
	st.written.Store(agent.done.BytesWritten)
	st.acked.Store(agent.done.Position)
	report.report(true)
	return nil
}

func (s *Sender) stallTimeout() time.Duration {
	if s.StallTimeout > 0 {
		return s.StallTimeout
	}
	return 30 * time.Second
}

// outstanding notes that the agent has something to acknowledge.
func (c *counters) outstanding() { c.waiting.CompareAndSwap(0, time.Now().UnixNano()) }

// progressed notes an acknowledgement: the clock restarts if more is
// outstanding.
func (c *counters) progressed() {
	if c.ledger.pending() {
		c.waiting.Store(time.Now().UnixNano())
	} else {
		c.waiting.Store(0)
	}
}

// watchStall closes conn when the agent has acknowledged nothing for limit
// while something was outstanding, and then holds the reason. It stops with
// ctx.
func watchStall(ctx context.Context, conn net.Conn, st *counters, limit time.Duration) *atomic.Pointer[error] {
	var stalled atomic.Pointer[error]
	tick := min(time.Second, limit/4)
	go func() {
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			since := st.waiting.Load()
			if since == 0 || time.Since(time.Unix(0, since)) < limit {
				continue
			}
			err := &RetryableError{Err: fmt.Errorf("connection stalled: the agent acknowledged nothing for %s with data outstanding (last acknowledged position %d)", limit, st.acked.Load())}
			var e error = err
			stalled.Store(&e)
			conn.Close()
			return
		}
	}()
	return &stalled
}

// failure turns an I/O error into the caller's cancellation when that is what
// caused it, and into a retryable error otherwise.
func (s *Sender) failure(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %w", op, context.Cause(ctx))
	}
	return connError(op, err)
}

func (s *Sender) dial(ctx context.Context, timeout time.Duration) (*tls.Conn, error) {
	if s.TLS == nil {
		return nil, errors.New("sender: no TLS configuration")
	}
	d := net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", s.Address)
	if err != nil {
		return nil, s.failure(ctx, "connect to agent", err)
	}
	cfg := s.TLS.Clone()
	cfg.MinVersion = tls.VersionTLS13
	if cfg.ServerName == "" {
		if host, _, err := net.SplitHostPort(s.Address); err == nil {
			cfg.ServerName = host
		}
	}
	conn := tls.Client(raw, cfg)
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := conn.HandshakeContext(hctx); err != nil {
		raw.Close()
		return nil, s.failure(ctx, "TLS handshake with agent "+s.Address, err)
	}
	return conn, nil
}

// readHelloReply reads the agent's answer and the digest table that follows
// it. Only the digests of blocks that exist on this disk are kept.
func readHelloReply(br *bufio.Reader, conn net.Conn, h Hello, idle time.Duration, tempDir string) (helloReply, *digestTable, error) {
	typ, n, err := readHeader(br)
	if err != nil {
		return helloReply{}, nil, err
	}
	body, err := readBody(br, nil, n, maxControlLen, "hello reply")
	if err != nil {
		return helloReply{}, nil, err
	}
	if typ == msgError {
		flags, msg, err := decodeError(body)
		if err != nil {
			return helloReply{}, nil, err
		}
		return helloReply{Err: msg, Retryable: flags != 0}, nil, nil
	}
	if typ != msgHelloRep {
		return helloReply{}, nil, fmt.Errorf("message %q, want hello reply", typ)
	}
	r, err := decodeHelloReply(body)
	if err != nil || r.Err != "" || r.DigestState != digestFollow {
		return r, nil, err
	}
	if r.DigestCount < 0 || r.DigestBlockSize <= 0 {
		return r, nil, fmt.Errorf("digest table of %d entries of %d bytes", r.DigestCount, r.DigestBlockSize)
	}
	blocks := (h.DiskSize + h.BlockSize - 1) / h.BlockSize
	keep := int64(0)
	if r.DigestBlockSize == h.BlockSize {
		keep = min(r.DigestCount, blocks)
	}
	table, err := readSums(br, conn, r.DigestCount, keep, h.DiskSize, h.BlockSize, idle, tempDir)
	return r, table, err
}

// agentReader follows what the agent says while data flows.
type agentReader struct {
	finished  chan struct{}
	err       error
	agentSaid bool // err is the agent's own message
	done      doneReply
}

func (s *Sender) readAgent(br *bufio.Reader, conn net.Conn, size int64, st *counters, report *reporter) *agentReader {
	a := &agentReader{finished: make(chan struct{})}
	go func() {
		defer close(a.finished)
		buf := make([]byte, 0, maxControlLen)
		for {
			typ, n, err := readHeader(br)
			if err != nil {
				a.err = connError("read from agent", err)
				return
			}
			body, err := readBody(br, buf, n, maxControlLen, "agent")
			if err != nil {
				a.err = connError("read from agent", err)
				return
			}
			switch typ {
			case msgAck:
				pos, _, err := decodeAck(body)
				if err != nil || pos < st.acked.Load() || pos > size {
					a.err = fmt.Errorf("agent acknowledged position %d (last %d, disk %d bytes): %v", pos, st.acked.Load(), size, err)
					conn.Close()
					return
				}
				st.acked.Store(pos)
				st.ledger.ack(pos)
				st.progressed()
				report.report(true)
			case msgDoneReply:
				a.done, a.err = decodeDoneReply(body)
				return
			case msgError:
				flags, msg, err := decodeError(body)
				if err != nil {
					a.err = err
				} else {
					a.err, a.agentSaid = agentError(msg, flags), true
				}
				conn.Close()
				return
			default:
				a.err = fmt.Errorf("agent sent message %q", typ)
				conn.Close()
				return
			}
		}
	}()
	return a
}

// reporter calls the progress callback, one call at a time, at most about
// once a second unless forced.
type reporter struct {
	mu   sync.Mutex
	fn   func(Progress)
	st   *counters
	size int64
	last time.Time
}

func newReporter(fn func(Progress), st *counters, size int64) *reporter {
	return &reporter{fn: fn, st: st, size: size}
}

func (r *reporter) report(force bool) {
	if r.fn == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !force && time.Since(r.last) < time.Second {
		return
	}
	r.last = time.Now()
	r.fn(Progress{Result: r.st.result(), DiskSize: r.size})
}

// ---- pipeline ----

type taskKind uint8

const (
	kindRead     taskKind = iota // allocated: read, filter, digest, compress
	kindZero                     // not allocated: zeros, nothing to read
	kindExcluded                 // wholly excluded: dropped
)

// task is one block in flight. Tasks and their buffers are recycled: the
// pipeline owns exactly InFlight of them.
type task struct {
	b          blockplan.Block
	kind       taskKind
	exLo, exHi int // excluded extents overlapping the block
	raw, comp  []byte
	// results
	zero, unchanged bool
	parts           blockplan.Parts // not zero: the payload is these parts only
	tag             codec.Tag
	payload         []byte
	sum             digest.Sum
	err             error
	done            chan struct{}
}

type pipeline struct {
	limit interface {
		Wait(context.Context, int64) error
	}
	src       disk.Image
	size, bs  int64
	comp      codec.Compressor
	prev      blockplan.Sums // nil unless digests are compared
	resume    int64
	allocated []disk.Extent
	excluded  []disk.Extent
	// partSize is the size of a block's parts; partial says whether a block
	// of which only some parts changed may travel as those parts.
	partSize   int64
	partial    bool
	zeroAsData bool // zero blocks travel as data frames

	order chan *task // in plan order, to the writer
	work  chan *task // to the workers
	free  chan *task // recycled tasks
	err   error      // the producer's failure, visible once order is closed

	zeroSums sync.Map // raw length → digest of zeros
}

func (p *pipeline) zeroSum(n int64) digest.Sum {
	if v, ok := p.zeroSums.Load(n); ok {
		return v.(digest.Sum)
	}
	s := digest.Zero(int(n))
	p.zeroSums.Store(n, s)
	return s
}

// unchanged reports whether the replica already holds a block of this digest.
func (p *pipeline) unchanged(index int64, sum digest.Sum, length int64) bool {
	if p.prev == nil {
		return false
	}
	if index < p.prev.Len() {
		return p.prev.At(index) == sum
	}
	return sum == p.zeroSum(length) // beyond the table the replica reads zeros
}

// produce walks the plan and classifies each block; it stops at the first
// block that breaks the grid or order, or when ctx ends.
func (p *pipeline) produce(ctx context.Context, plan blockplan.Plan) {
	defer close(p.work)
	defer close(p.order)
	alloc, ex := 0, 0
	next := int64(0)
	for b := range plan {
		if b.Offset < p.resume {
			continue
		}
		if b.Offset%p.bs != 0 || b.Offset < next || b.Offset >= p.size || b.Length != min(p.bs, p.size-b.Offset) || b.Index != b.Offset/p.bs {
			p.err = fmt.Errorf("plan: block %d at offset %d of %d bytes is not the next block of the grid (block size %d, disk %d bytes, after %d)", b.Index, b.Offset, b.Length, p.bs, p.size, next)
			return
		}
		next = b.End()
		var t *task
		select {
		case t = <-p.free:
		case <-ctx.Done():
			p.err = context.Cause(ctx)
			return
		}
		t.b, t.err, t.zero, t.unchanged, t.payload, t.tag, t.parts = b, nil, false, false, nil, codec.TagNone, 0

		for alloc < len(p.allocated) && p.allocated[alloc].End() <= b.Offset {
			alloc++
		}
		for ex < len(p.excluded) && p.excluded[ex].End() <= b.Offset {
			ex++
		}
		t.exLo, t.exHi = ex, ex
		for t.exHi < len(p.excluded) && p.excluded[t.exHi].Offset < b.End() {
			t.exHi++
		}
		switch {
		case t.exHi > t.exLo && p.excluded[t.exLo].Offset <= b.Offset && p.excluded[t.exLo].End() >= b.End():
			t.kind = kindExcluded
		case alloc >= len(p.allocated) || p.allocated[alloc].Offset >= b.End():
			t.kind, t.zero, t.sum = kindZero, true, p.zeroSum(b.Length)
			t.unchanged = p.unchanged(b.Index, t.sum, b.Length)
		default:
			t.kind = kindRead
		}
		select {
		case p.order <- t:
		case <-ctx.Done():
			p.err = context.Cause(ctx)
			return
		}
		if t.kind != kindRead {
			t.done <- struct{}{}
			continue
		}
		select {
		case p.work <- t:
		case <-ctx.Done():
			t.err = context.Cause(ctx)
			t.done <- struct{}{}
			p.err = t.err
			return
		}
	}
}

// process is one worker: read, zero the excluded bytes, check for zeros,
// digest, compare, compress.
func (p *pipeline) process() {
	for t := range p.work {
		p.processOne(t)
		t.done <- struct{}{}
	}
}

func (p *pipeline) processOne(t *task) {
	b := t.b
	if int64(cap(t.raw)) < b.Length {
		t.raw = make([]byte, p.bs)
		t.comp = make([]byte, 0, s2.MaxEncodedLen(int(p.bs)))
	}
	raw := t.raw[:b.Length]
	n, err := p.src.ReadAt(raw, b.Offset)
	if n < len(raw) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		t.err = fmt.Errorf("read source at offset %d (%d bytes): %w", b.Offset, b.Length, err)
		return
	}
	for _, e := range p.excluded[t.exLo:t.exHi] {
		lo, hi := max(e.Offset, b.Offset)-b.Offset, min(e.End(), b.End())-b.Offset
		clear(raw[lo:hi])
	}
	if zeros.All(raw) {
		t.zero, t.sum = !p.zeroAsData, p.zeroSum(b.Length)
	} else {
		t.sum = digest.Of(raw)
	}
	if t.unchanged = p.unchanged(b.Index, t.sum, b.Length); t.unchanged || t.zero {
		return
	}
	if parts := p.partsToSend(t); parts != 0 {
		t.parts, raw = parts, gatherParts(raw, parts, p.partSize)
	}
	t.tag, t.payload = p.comp.Encode(t.comp[:0], raw)
}

// partsToSend returns the parts of a block to send alone, or zero to send
// the block whole: the parts that changed and those holding excluded bytes
// (zeroed on the replica too), unless that is every part. Any part left out
// is bytes neither compressed, sent nor written; the agent pays one read of
// the block for it.
func (p *pipeline) partsToSend(t *task) blockplan.Parts {
	b := t.b
	if !p.partial || b.Changed == 0 {
		return 0
	}
	parts := b.Changed
	for _, e := range p.excluded[t.exLo:t.exHi] {
		parts |= blockplan.Covering(e.Offset-b.Offset, e.End()-b.Offset, b.Length, p.partSize)
	}
	if parts == blockplan.AllParts(b.Length, p.partSize) {
		return 0
	}
	return parts
}

// gatherParts moves the bytes of parts to the front of raw, in order, and
// returns them.
func gatherParts(raw []byte, parts blockplan.Parts, partSize int64) []byte {
	n := int64(0)
	length := int64(len(raw))
	for i := range blockplan.PartCount(length, partSize) {
		if parts.Has(i) {
			lo, hi := int64(i)*partSize, min(int64(i+1)*partSize, length)
			n += int64(copy(raw[n:], raw[lo:hi]))
		}
	}
	return raw[:n]
}

// passedInterval is how often the writer tells the agent how far it got
// through blocks it skipped, so that a resume need not look at them again.
var passedInterval = time.Second

// write sends the tasks' frames in plan order and returns how many frames it
// sent.
func (p *pipeline) write(ctx context.Context, conn net.Conn, bw *bufio.Writer, enc *encoder, idle time.Duration, st *counters, report *reporter, rate int64) (int64, error) {
	var frames int64
	var hdr []byte
	var wire int64 // bytes written, for the rate cap
	start := time.Now()
	lastMsg := time.Now()
	skipped := false
	for t := range p.order {
		select {
		case <-t.done:
		default:
			// The next block is not ready: let the link carry what is buffered.
			if bw.Buffered() > 0 {
				conn.SetWriteDeadline(time.Now().Add(idle))
				if err := bw.Flush(); err != nil {
					return frames, connError("send", err)
				}
			}
			<-t.done
		}
		if t.err != nil {
			return frames, t.err
		}
		b := t.b
		if t.kind == kindRead {
			st.read.Add(b.Length)
		}
		switch {
		case t.kind == kindExcluded:
			st.excluded.Add(1)
			skipped = true
		case t.unchanged:
			st.unchanged.Add(1)
			skipped = true
		default:
			f := frame{Offset: b.Offset, RawLength: uint32(b.Length), Codec: t.tag, Sum: t.sum}
			written := b.Length
			if t.zero {
				f.Flags = frameZero
			} else {
				f.PayloadLen = uint32(len(t.payload))
			}
			if t.parts != 0 {
				f.Flags, f.Parts = framePartial, t.parts
				written = t.parts.Bytes(b.Length, p.partSize)
			}
			hdr = appendFrameHeader(hdr[:0], f)
			wire += int64(len(hdr)) + int64(f.PayloadLen)
			if d := pace(wire, rate, time.Since(start)); d > 0 {
				if err := bw.Flush(); err != nil {
					return frames, connError("send", err)
				}
				select {
				case <-time.After(d):
				case <-ctx.Done():
					return frames, context.Cause(ctx)
				}
			}
			if p.limit != nil {
				// Let what is buffered go while this frame waits for its turn.
				if bw.Buffered() > 0 {
					conn.SetWriteDeadline(time.Now().Add(idle))
					if err := bw.Flush(); err != nil {
						return frames, connError("send", err)
					}
				}
				if err := p.limit.Wait(ctx, int64(len(hdr))+int64(f.PayloadLen)); err != nil {
					if ctx.Err() != nil {
						return frames, context.Cause(ctx)
					}
					return frames, err
				}
			}
			conn.SetWriteDeadline(time.Now().Add(idle))
			if _, err := bw.Write(hdr); err != nil {
				return frames, connError(fmt.Sprintf("send frame at offset %d", b.Offset), err)
			}
			if !t.zero {
				if _, err := bw.Write(t.payload); err != nil {
					return frames, connError(fmt.Sprintf("send frame at offset %d", b.Offset), err)
				}
			}
			frames++
			st.outstanding()
			st.changed.Add(1)
			st.ledger.add(b.End(), st.written.Add(written))
			if t.zero {
				st.zero.Add(1)
			} else {
				st.sent.Add(int64(len(t.payload)))
			}
			skipped, lastMsg = false, time.Now()
		}
		if skipped && time.Since(lastMsg) >= passedInterval {
			conn.SetWriteDeadline(time.Now().Add(idle))
			if _, err := bw.Write(encodePosition(enc, msgPassed, b.End())); err != nil {
				return frames, connError("send position", err)
			}
			st.outstanding()
			skipped, lastMsg = false, time.Now()
		}
		t.payload = nil
		p.free <- t
		report.report(false)
	}
	if err := ctx.Err(); err != nil {
		return frames, context.Cause(ctx)
	}
	return frames, nil
}

// pace returns how long to wait before sending so that sent bytes since the
// start take at least sent/rate seconds; the first second's worth goes at
// once.
func pace(sent, rate int64, elapsed time.Duration) time.Duration {
	if rate <= 0 || sent <= rate {
		return 0
	}
	due := time.Duration(float64(sent-rate) / float64(rate) * float64(time.Second))
	return max(due-elapsed, 0)
}

// RetryPolicy bounds SendDiskWithRetry.
type RetryPolicy struct {
	// Attempts is the most attempts made (default 10).
	Attempts int
	// Backoff is the first wait between attempts, doubled each time up to
	// MaxBackoff (defaults 1 s and 30 s).
	Backoff, MaxBackoff time.Duration
}

// SendDiskWithRetry calls SendDisk until it succeeds, fails for good, or the
// policy's attempts run out, reconnecting after retryable failures. When the
// agent reports ErrReplicaDiffers it continues at once with whole blocks,
// without counting an attempt. The
// counters add up over attempts; ResumedFromByte is where the first attempt
// resumed. plan must be re-iterable (every plan of package blockplan is).
func (s *Sender) SendDiskWithRetry(ctx context.Context, src disk.Image, plan blockplan.Plan, excluded []disk.Extent, opts SendOptions, progress func(Progress), policy RetryPolicy) (Result, error) {
	if policy.Attempts <= 0 {
		policy.Attempts = 10
	}
	if policy.Backoff <= 0 {
		policy.Backoff = time.Second
	}
	if policy.MaxBackoff <= 0 {
		policy.MaxBackoff = 30 * time.Second
	}
	var total Result
	var last *counters // the previous attempt's
	wait := policy.Backoff
	attempt := 0
	for n := 1; ; n++ {
		attempt++
		var st counters
		// Bytes the previous attempt got durable without an acknowledgement.
		onResume := func(resume int64) {
			if last != nil {
				before := last.ledger.acknowledged()
				total.BytesWritten += last.ledger.ack(resume) - before
			}
		}
		wrapped := progress
		if progress != nil {
			wrapped = func(p Progress) { progress(Progress{Result: sum(total, p.Result, n == 1), DiskSize: p.DiskSize}) }
		}
		err := s.send(ctx, src, plan, excluded, opts, wrapped, &st, onResume)
		if err != nil {
			st.written.Store(st.ledger.acknowledged())
		}
		r := st.result()
		last = &st
		total = sum(total, r, n == 1)
		if errors.Is(err, ErrReplicaDiffers) && !opts.WholeBlocks {
			// The agent could not rebuild a block from its changed parts:
			// send whole blocks from the acknowledged position, at once.
			opts.WholeBlocks = true
			attempt--
			continue
		}
		if err == nil || !IsRetryable(err) || attempt >= policy.Attempts {
			if err != nil && IsRetryable(err) {
				err = fmt.Errorf("after %d attempts: %w", attempt, err)
			}
			return total, err
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return total, fmt.Errorf("%w (after: %v)", context.Cause(ctx), err)
		}
		wait = min(2*wait, policy.MaxBackoff)
	}
}

func sum(a, b Result, first bool) Result {
	r := Result{
		BytesRead: a.BytesRead + b.BytesRead, BytesSent: a.BytesSent + b.BytesSent,
		BytesWritten: a.BytesWritten + b.BytesWritten, BlocksChanged: a.BlocksChanged + b.BlocksChanged,
		BlocksZero: a.BlocksZero + b.BlocksZero, BlocksExcluded: a.BlocksExcluded + b.BlocksExcluded,
		BlocksUnchanged: a.BlocksUnchanged + b.BlocksUnchanged, ResumedFromByte: a.ResumedFromByte,
		Acknowledged: b.Acknowledged, DigestsCompared: a.DigestsCompared || b.DigestsCompared,
	}
	if first {
		r.ResumedFromByte = b.ResumedFromByte
	}
	return r
}
