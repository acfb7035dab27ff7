package transfer

import (
	"bufio"
	"bytes"
	"container/list"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/replicator/replicator/internal/blockplan"
	"github.com/replicator/replicator/internal/codec"
	"github.com/replicator/replicator/internal/digest"
)

// Target is where the agent writes replicas: the replica store implements it.
type Target interface {
	// Admit decides whether the sender of h may touch the restore point
	// of h.CheckpointID at all: h.Token must be the point's session token
	// (and h.BlockSize its block size). It is called before OpenDisk and
	// Digests, and before the connection may displace another one writing
	// the same disk; an error that wraps ErrBadToken refuses for good. peer
	// is the common name of the client's certificate.
	Admit(ctx context.Context, h Hello, peer string) error
	// OpenDisk opens the disk of h in the restore-point session of
	// h.CheckpointID; it fails when no such session is open. peer is the
	// common name of the client's certificate.
	OpenDisk(ctx context.Context, h Hello, peer string) (Sink, error)
	// Digests returns the per-block digests of the disk in the replica's
	// newest complete restore point, or ErrNoDigests if there is none. A
	// block never written (it reads as zeros) may be reported with the
	// digest of zeros or with an all-zero Sum; the sender takes both as zeros.
	Digests(ctx context.Context, h Hello) (blockSize int64, sums []digest.Sum, err error)
}

// Sink is one disk of an open restore point. The receiver calls it from one
// goroutine at a time.
type Sink interface {
	io.WriterAt
	// ReadAt reads the disk of the point as written so far (through to the
	// earlier points it is based on): a block written from its changed parts
	// only is read back whole to check it against the source's digest.
	io.ReaderAt
	// Position is the durable resume position: every block below it was
	// written and persisted by an earlier Persist.
	Position() int64
	// SetDigest records the digest of block blockIndex of this point.
	SetDigest(blockIndex int64, d digest.Sum)
	// Persist makes every write and digest so far durable (fsync), then
	// records pos durably; only then is pos acknowledged to the sender.
	Persist(pos int64) error
	// Complete marks the disk fully transferred. It may be called again
	// after a retried Done and must then succeed again.
	Complete() error
	// Close releases the disk; unpersisted writes may be lost.
	Close() error
}

// ReceiverOptions tune the agent. Zero values take the defaults.
type ReceiverOptions struct {
	// PersistBytes and PersistInterval: the receiver persists and
	// acknowledges after this many raw bytes or this much time, whichever
	// comes first (defaults 64 MiB and 2 s), and at Done.
	PersistBytes    int64
	PersistInterval time.Duration
	// HandshakeTimeout bounds the TLS handshake and the Hello (10 s): a
	// client that cannot finish both in that time is cut off.
	HandshakeTimeout time.Duration
	// MaxPendingHandshakes bounds the connections in their handshake or
	// Hello at once (256), MaxPendingPerAddress those from one IP address
	// (32). Beyond either bound the oldest pending connection is closed, so
	// that stalled clients cannot keep a sender that completes its
	// handshake promptly out.
	MaxPendingHandshakes int
	MaxPendingPerAddress int
	// IdleTimeout ends a connection that makes no progress for this long
	// (2 min): no new block, no advance of its position. Messages that do not
	// move the transfer forward do not keep it alive.
	IdleTimeout time.Duration
	// MaxBlockSize bounds the block size a sender may declare (64 MiB).
	MaxBlockSize int64
	// MaxConnections bounds the disks received at once (16); a sender beyond
	// it is told the agent is busy, a retryable error. A connection takes
	// its slot only once it has presented a valid session token.
	MaxConnections int
	// MaxBufferBytes bounds the block buffers of all connections together
	// (1 GiB); each holds about eight blocks, and SinkBufferBytes. A sender
	// whose buffers would pass it is told the agent is busy.
	MaxBufferBytes int64
	// SinkBufferBytes is what the Target's Sink of one open disk may hold
	// besides the receiver's buffers (the replica store's writes on their
	// way to storage: replica.WriteBufferBytes), counted against
	// MaxBufferBytes for each connection.
	SinkBufferBytes int64
	// Logger receives one line per connection outcome (default slog.Default()).
	Logger *slog.Logger
}

func (o *ReceiverOptions) defaults() {
	if o.PersistBytes <= 0 {
		o.PersistBytes = 64 << 20
	}
	if o.PersistInterval <= 0 {
		o.PersistInterval = 2 * time.Second
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 10 * time.Second
	}
	if o.MaxPendingHandshakes <= 0 {
		o.MaxPendingHandshakes = 256
	}
	if o.MaxPendingPerAddress <= 0 {
		o.MaxPendingPerAddress = 32
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 2 * time.Minute
	}
	if o.MaxBlockSize <= 0 || o.MaxBlockSize > MaxBlockSize {
		o.MaxBlockSize = MaxBlockSize
	}
	if o.MaxConnections <= 0 {
		o.MaxConnections = 16
	}
	if o.MaxBufferBytes <= 0 {
		o.MaxBufferBytes = 1 << 30
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Receiver is the agent's side of the data channel.
type Receiver struct {
	target Target
	tls    *tls.Config
	opts   ReceiverOptions

	mu     sync.Mutex
	active map[string]*session // by disk and checkpoint
	// conns and buffers are what admitted connections hold.
	conns   int
	buffers int64
	// pending are the connections in their handshake or Hello, oldest first.
	pending *list.List // of *pendingConn
	perAddr map[string]int
}

// session is one connection that holds a disk open.
type session struct {
	conn net.Conn
	done chan struct{}
}

// pendingConn is a connection not yet admitted.
type pendingConn struct {
	conn net.Conn
	addr string
	elem *list.Element
}

// NewReceiver returns a receiver writing into t. tlsConf must hold the
// agent's certificate and the CA pool that signs clients (ClientCAs); the
// receiver enforces TLS 1.3 and a verified client certificate whatever it
// says (and keeps tlsConf's VerifyConnection, which checks the client's role).
func NewReceiver(t Target, tlsConf *tls.Config, o ReceiverOptions) *Receiver {
	o.defaults()
	c := tlsConf.Clone()
	c.MinVersion = tls.VersionTLS13
	c.ClientAuth = tls.RequireAndVerifyClientCert
	return &Receiver{target: t, tls: c, opts: o, active: map[string]*session{}, pending: list.New(), perAddr: map[string]int{}}
}

// Serve accepts connections on ln until ctx ends, then closes ln and every
// connection and returns nil. Each connection transfers one disk.
func (r *Receiver) Serve(ctx context.Context, ln net.Listener) error {
	if r.tls.ClientCAs == nil {
		return errors.New("receiver: TLS configuration has no client CA pool")
	}
	if len(r.tls.Certificates) == 0 && r.tls.GetCertificate == nil {
		return errors.New("receiver: TLS configuration has no certificate")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var err error
	for {
		var c net.Conn
		c, err = ln.Accept()
		if err != nil {
			break
		}
		p := r.addPending(c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.handle(ctx, c, p)
		}()
	}
	cancel()
	wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("receiver: accept on %s: %w", ln.Addr(), err)
}

// addPending records a connection entering its handshake; over the bounds,
// the oldest pending connection (of the same address first) is closed.
func (r *Receiver) addPending(c net.Conn) *pendingConn {
	addr := c.RemoteAddr().String()
	if host, _, err := net.SplitHostPort(addr); err == nil {
		addr = host
	}
	p := &pendingConn{conn: c, addr: addr}
	r.mu.Lock()
	defer r.mu.Unlock()
	p.elem = r.pending.PushBack(p)
	r.perAddr[addr]++
	if r.perAddr[addr] > r.opts.MaxPendingPerAddress {
		for e := r.pending.Front(); e != nil; e = e.Next() {
			if old := e.Value.(*pendingConn); old.addr == addr {
				r.evictLocked(old)
				break
			}
		}
	}
	if r.pending.Len() > r.opts.MaxPendingHandshakes {
		r.evictLocked(r.pending.Front().Value.(*pendingConn))
	}
	return p
}

func (r *Receiver) evictLocked(p *pendingConn) {
	r.donePendingLocked(p)
	p.conn.Close()
}

// donePending records that a connection left its handshake and Hello.
func (r *Receiver) donePending(p *pendingConn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.donePendingLocked(p)
}

func (r *Receiver) donePendingLocked(p *pendingConn) {
	if p.elem == nil {
		return
	}
	r.pending.Remove(p.elem)
	p.elem = nil
	if r.perAddr[p.addr]--; r.perAddr[p.addr] <= 0 {
		delete(r.perAddr, p.addr)
	}
}

// bufferBytes is what one connection of block size bs holds: the payload
// and decoded block of each of its receiveSlots frames, a block read back for
// partial frames, zeros, the buffered reader and writer, and the sink's own.
func (r *Receiver) bufferBytes(bs int64) int64 {
	return (2*receiveSlots+2)*bs + 256<<10 + 64<<10 + max(r.opts.SinkBufferBytes, 0)
}

// admit takes a connection slot and the connection's buffers from the
// agent's budget, or says why it cannot.
func (r *Receiver) admit(bs int64) (release func(), err error) {
	need := r.bufferBytes(bs)
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.conns >= r.opts.MaxConnections:
		return nil, fmt.Errorf("agent busy: %d transfers in progress", r.opts.MaxConnections)
	case r.buffers+need > r.opts.MaxBufferBytes:
		return nil, fmt.Errorf("agent busy: the buffers of the transfers in progress (%d bytes) leave no room for %d more (limit %d)", r.buffers, need, r.opts.MaxBufferBytes)
	}
	r.conns++
	r.buffers += need
	return func() {
		r.mu.Lock()
		r.conns--
		r.buffers -= need
		r.mu.Unlock()
	}, nil
}

// handle runs one connection: handshake and Hello within the handshake
// deadline, the session token checked, then a slot taken and the disk received.
func (r *Receiver) handle(ctx context.Context, raw net.Conn, p *pendingConn) {
	defer raw.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()
	log := r.opts.Logger.With("remote", raw.RemoteAddr().String())

	raw.SetDeadline(time.Now().Add(r.opts.HandshakeTimeout))
	conn := tls.Server(raw, r.tls)
	if err := conn.HandshakeContext(ctx); err != nil {
		r.donePending(p)
		log.Warn("data channel: TLS handshake refused", "err", err)
		return
	}
	r.session(ctx, raw, conn, p, log)
}

// ServeConn receives one disk on conn, a TLS connection this side dialled
// and whose handshake (and so the peer's role) its configuration checked:
// the failback channel, where the proxy opens the connection and the agent
// sends. The Hello, Admit, the slot and buffer budget apply as on Serve.
func (r *Receiver) ServeConn(ctx context.Context, conn *tls.Conn) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	conn.SetDeadline(time.Now().Add(r.opts.HandshakeTimeout))
	r.session(ctx, conn, conn, nil, r.opts.Logger.With("remote", conn.RemoteAddr().String()))
}

// session runs one connection after its TLS handshake: Hello, the session
// token checked (Admit), a slot taken and the disk received. p is the
// pending entry of an accepted connection (nil for ServeConn).
func (r *Receiver) session(ctx context.Context, raw net.Conn, conn *tls.Conn, p *pendingConn, log *slog.Logger) {
	done := func() {
		if p != nil {
			r.donePending(p)
		}
	}
	peer := conn.ConnectionState().PeerCertificates[0].Subject.CommonName
	log = log.With("peer", peer)
	// Small buffers until the sender is admitted: a client that only
	// completes a handshake holds a few KiB.
	c := &receiverConn{r: r, conn: conn, raw: raw, br: bufio.NewReaderSize(conn, 4096), bw: bufio.NewWriterSize(conn, 4096), log: log}
	err := c.readHello()
	done()
	if err == nil && c.pinged {
		log.Debug("data channel: answered a probe")
		return
	}
	if err == nil {
		if err = r.target.Admit(ctx, c.hello, peer); err != nil {
			err = reject("hello %s: %w", c.hello, err)
		}
	}
	if err != nil {
		r.refuse(ctx, c, err)
		return
	}
	release, err := r.admit(c.hello.BlockSize)
	if err != nil {
		c.sendError(errRetryable, err.Error())
		log.Warn("data channel: refused", "disk", c.hello.String(), "err", err)
		return
	}
	defer release()
	// The Hello was read through the small buffer; what followed it stays
	// in front of the connection.
	rest, _ := c.br.Peek(c.br.Buffered())
	c.br = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(rest)), conn), 256<<10)
	c.bw = bufio.NewWriterSize(conn, 64<<10)
	if err := c.run(ctx, peer); err != nil {
		r.refuse(ctx, c, err)
		return
	}
	log.Info("data channel: disk received", "disk", c.hello.String(), "bytes", c.written, "frames", c.frames)
}

// refuse tells the sender why its transfer ends and logs it.
func (r *Receiver) refuse(ctx context.Context, c *receiverConn, err error) {
	var pe *protocolError
	var flags uint8
	if !errors.As(err, &pe) || pe.retryable {
		flags |= errRetryable
	}
	if pe != nil && pe.differs {
		flags |= errReplicaDiffers
	}
	if ctx.Err() == nil {
		c.sendError(flags, err.Error())
	}
	c.log.Warn("data channel: transfer ended", "disk", c.hello.String(), "err", err)
}

// protocolError is a failure caused by what the sender sent.
type protocolError struct {
	err       error
	retryable bool
	differs   bool // a partial frame did not give the source's block
}

func (e *protocolError) Error() string { return e.err.Error() }
func (e *protocolError) Unwrap() error { return e.err }

func reject(format string, args ...any) error {
	return &protocolError{err: fmt.Errorf(format, args...)}
}

type receiverConn struct {
	r      *Receiver
	pinged bool // the connection was a probe's ping
	conn   *tls.Conn
	raw    net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	enc    encoder
	log    *slog.Logger

	hello Hello
	sink  Sink
	// Of the reading goroutine:
	next int64 // frames must start at or after this offset
	// progressAt is when the transfer last moved forward.
	progressAt time.Time

	// Of the writing goroutine (and of the connection once it ends):
	pos    int64 // everything below is written: the position to persist
	acked  int64 // last persisted position
	pend   int64 // raw bytes written since the last persist
	last   time.Time
	frames int64
	// written counts raw bytes written on this connection.
	written int64
}

// readHello reads and checks the Hello.
func (c *receiverConn) readHello() error {
	typ, n, err := readHeader(c.br)
	if err != nil {
		return fmt.Errorf("read hello: %w", err)
	}
	if typ == msgPing {
		body, err := readBody(c.br, nil, n, maxControlLen, "ping")
		if err != nil {
			return reject("read ping: %w", err)
		}
		c.pinged = true
		return c.pong(body)
	}
	if typ != msgHello {
		return reject("first message is %q, want hello", typ)
	}
	body, err := readBody(c.br, nil, n, maxControlLen, "hello")
	if err != nil {
		return reject("read hello: %w", err)
	}
	h, err := decodeHello(body)
	if err != nil {
		return reject("%w", err)
	}
	if err := h.Validate(); err != nil {
		return reject("hello: %w", err)
	}
	if h.BlockSize > c.r.opts.MaxBlockSize {
		return reject("hello: block size %d exceeds this agent's limit %d", h.BlockSize, c.r.opts.MaxBlockSize)
	}
	c.hello = h
	return nil
}

// run receives the disk of an admitted Hello.
func (c *receiverConn) run(ctx context.Context, peer string) (err error) {
	h := c.hello
	c.raw.SetDeadline(time.Now().Add(c.r.opts.HandshakeTimeout))
	release := c.r.claim(h, c.raw)
	defer release()

	sink, err := c.r.target.OpenDisk(ctx, h, peer)
	if err != nil {
		return reject("open disk %s: %w", h, err)
	}
	c.sink = sink
	defer func() {
		// Writes after the last acknowledgement are not persisted on a
		// failure: the sender counts only what was acknowledged and sends
		// the rest again, so the figures of a resumed transfer add up.
		if cerr := sink.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close disk %s: %w", h, cerr)
		}
	}()
	pos := sink.Position()
	if pos < 0 || pos > h.DiskSize {
		return fmt.Errorf("disk %s: stored position %d outside the disk of %d bytes", h, pos, h.DiskSize)
	}
	c.next, c.pos, c.acked, c.last, c.progressAt = pos, pos, pos, time.Now(), time.Now()

	reply := helloReply{ResumeFrom: pos}
	var sums []digest.Sum
	if h.WantDigests {
		bs, s, err := c.r.target.Digests(ctx, h)
		switch {
		case errors.Is(err, ErrNoDigests):
			reply.DigestState = digestNone
		case err != nil:
			return fmt.Errorf("digests of %s: %w", h, err)
		default:
			reply.DigestState, reply.DigestBlockSize, reply.DigestCount, sums = digestFollow, bs, int64(len(s)), s
		}
	}
	if _, err := c.bw.Write(encodeHelloReply(&c.enc, reply)); err != nil {
		return fmt.Errorf("send hello reply: %w", err)
	}
	for len(sums) > 0 {
		k := min(len(sums), sumsPerMessage)
		c.enc.begin(msgSums)
		for _, s := range sums[:k] {
			c.enc.b = append(c.enc.b, s[:]...)
		}
		if _, err := c.bw.Write(c.enc.finish()); err != nil {
			return fmt.Errorf("send digests: %w", err)
		}
		sums = sums[k:]
	}
	if err := c.bw.Flush(); err != nil {
		return fmt.Errorf("send hello reply: %w", err)
	}
	c.raw.SetDeadline(time.Time{})
	return c.receive(ctx)
}

// EndTransfers closes every connection writing a disk of the VM and waits
// until each has released its disk. A run opening the VM's next restore
// point calls it: a connection still open then is left over from an earlier
// attempt (a half-open connection the agent has not yet timed out, bytes
// still draining from a cancelled transfer) and would hold the point's
// disks open.
func (r *Receiver) EndTransfers(job, vmID string) {
	prefix := job + "\x00" + vmID + "\x00"
	r.mu.Lock()
	var old []*session
	for key, s := range r.active {
		if strings.HasPrefix(key, prefix) {
			old = append(old, s)
		}
	}
	r.mu.Unlock()
	for _, s := range old {
		s.conn.Close()
		<-s.done
	}
}

// claim registers the connection as the one writing h's disk. An older
// connection still holding it (the sender reconnected before this side saw
// the old one die) is closed and waited for, so that one writer at a time
// touches a disk.
func (r *Receiver) claim(h Hello, conn net.Conn) (release func()) {
	key := h.Job + "\x00" + h.VMID + "\x00" + h.DiskID + "\x00" + h.CheckpointID
	s := &session{conn: conn, done: make(chan struct{})}
	for {
		r.mu.Lock()
		old := r.active[key]
		if old == nil {
			r.active[key] = s
			r.mu.Unlock()
			break
		}
		r.mu.Unlock()
		old.conn.Close()
		<-old.done
	}
	return func() {
		r.mu.Lock()
		if r.active[key] == s {
			delete(r.active, key)
		}
		r.mu.Unlock()
		close(s.done)
	}
}

// receiveSlots is how many frames a connection holds between reading and
// writing: one being read, one waiting, one being written. While the
// replica's writes and fsyncs run, the next frames are read, decrypted,
// decoded and checked on another core.
const receiveSlots = 3

// slot holds one data frame from the reading goroutine to the writing one.
type slot struct {
	payload []byte // the frame's payload as received
	raw     []byte // the decoded block, allocated for the first compressed frame
}

// writeOp is one step of the writing goroutine, in the order the sender sent
// them: a checked data frame, a passed position, or Done.
type writeOp struct {
	typ  byte // msgData, msgPassed or msgDone
	f    frame
	data []byte // msgData: the block (or its parts) as decoded and checked
	slot *slot  // to give back once written; nil for zero frames
	// pos is the position of msgPassed (advance: beyond the last one) or
	// the sender's frame count of msgDone.
	pos     int64
	advance bool
}

// errWriterStopped tells the reading goroutine that the writing one failed;
// the writer's error is the one reported.
var errWriterStopped = errors.New("replica writer stopped")

// receive reads frames until Done. One goroutine reads, decrypts, decodes
// and checks frames; another writes them to the sink, persists and
// acknowledges, in order. The sink is used by the writing goroutine alone.
func (c *receiverConn) receive(ctx context.Context) error {
	ops := make(chan writeOp, receiveSlots-1)
	free := make(chan *slot, receiveSlots)
	for range receiveSlots {
		free <- &slot{payload: make([]byte, c.hello.BlockSize)}
	}
	stopped := make(chan struct{})
	var werr error
	go func() {
		werr = c.writeOps(ctx, ops, free)
		close(stopped)
		if werr != nil {
			// A reader waiting for the sender's next message learns now.
			c.raw.SetReadDeadline(time.Now())
		}
	}()
	// When reading fails, the frames read before are still written (and
	// persisted, if it is time): the first failure is the one reported.
	rerr := c.readFrames(ctx, ops, free, stopped)
	close(ops)
	<-stopped
	if rerr != nil && !errors.Is(rerr, errWriterStopped) {
		return rerr
	}
	if werr != nil {
		return werr
	}
	// Wait for the sender to close, so the done reply is not cut by a reset.
	c.raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.Copy(io.Discard, io.LimitReader(c.br, 1<<20))
	return nil
}

// readFrames reads and checks messages and hands them to the writing
// goroutine, until Done has been handed over (nil) or something fails.
func (c *receiverConn) readFrames(ctx context.Context, ops chan<- writeOp, free chan *slot, stopped <-chan struct{}) error {
	h := c.hello
	bs := h.BlockSize
	var zeros []byte // read-only, shared by every zero frame
	partSize := blockplan.PartSize(bs)
	zeroSum := map[int64]digest.Sum{}
	control := make([]byte, 0, maxControlLen)
	var hdr [dataHeaderLen]byte
	send := func(op writeOp) error {
		select {
		case ops <- op:
			return nil
		case <-stopped:
			return errWriterStopped
		}
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		// The deadline runs from the last progress, not the last message:
		// a sender that repeats its position cannot hold the slot forever.
		c.raw.SetReadDeadline(c.progressAt.Add(c.r.opts.IdleTimeout))
		select {
		case <-stopped: // checked after the deadline is set: see receive
			return errWriterStopped
		default:
		}
		typ, n, err := readHeader(c.br)
		if err != nil {
			select {
			case <-stopped: // the writer's failure cut the read short
				return errWriterStopped
			default:
			}
			return fmt.Errorf("read from sender after offset %d: %w", c.next, err)
		}
		switch typ {
		case msgData:
			if n < dataHeaderLen || int64(n) > dataHeaderLen+partsLen+bs {
				return reject("data frame after offset %d: length %d outside [%d, %d]", c.next, n, dataHeaderLen, dataHeaderLen+partsLen+bs)
			}
			if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
				return fmt.Errorf("read frame after offset %d: %w", c.next, err)
			}
			f := decodeFrameHeader(hdr[:])
			partial := f.Flags&framePartial != 0
			if partial {
				var pb [partsLen]byte
				if n < dataHeaderLen+partsLen {
					return reject("partial frame at offset %d: length %d leaves no room for its parts", f.Offset, n)
				}
				if _, err := io.ReadFull(c.br, pb[:]); err != nil {
					return fmt.Errorf("read frame at offset %d: %w", f.Offset, err)
				}
				f.Parts = blockplan.Parts(binary.BigEndian.Uint64(pb[:]))
			}
			if err := c.check(f, n, partSize); err != nil {
				return err
			}
			op := writeOp{typ: msgData, f: f}
			if f.Flags&frameZero != 0 {
				want, ok := zeroSum[int64(f.RawLength)]
				if !ok {
					want = digest.Zero(int(f.RawLength))
					zeroSum[int64(f.RawLength)] = want
				}
				if f.Sum != want {
					return reject("zero frame at offset %d: checksum %s is not that of zeros", f.Offset, f.Sum)
				}
				if zeros == nil {
					zeros = make([]byte, bs)
				}
				op.data = zeros[:f.RawLength]
			} else {
				select {
				case op.slot = <-free:
				case <-stopped:
					return errWriterStopped
				}
				p := op.slot.payload[:f.PayloadLen]
				if _, err := io.ReadFull(c.br, p); err != nil {
					return fmt.Errorf("read payload at offset %d: %w", f.Offset, err)
				}
				rawLen := int64(f.RawLength)
				if partial {
					rawLen = f.Parts.Bytes(rawLen, partSize)
				}
				if f.Codec != codec.TagNone && op.slot.raw == nil {
					op.slot.raw = make([]byte, bs)
				}
				op.data, err = codec.DecodeShared(op.slot.raw, f.Codec, p, int(rawLen))
				if err != nil && partial {
					return reject("partial frame at offset %d: %w", f.Offset, err)
				}
				if err != nil {
					return reject("frame at offset %d: %w", f.Offset, err)
				}
				// A partial frame's digest is that of the whole block: the
				// writing goroutine checks it over the replica's block.
				if !partial {
					if got := digest.Of(op.data); got != f.Sum {
						return reject("frame at offset %d: checksum mismatch (frame says %s, data is %s)", f.Offset, f.Sum, got)
					}
				}
			}
			c.next = f.Offset + int64(f.RawLength)
			c.progressAt = time.Now()
			if err := send(op); err != nil {
				return err
			}
		case msgPassed:
			body, err := readBody(c.br, control, n, maxControlLen, "passed")
			if err != nil {
				return reject("read passed: %w", err)
			}
			pos, err := decodePosition(body, "passed")
			if err != nil {
				return reject("%w", err)
			}
			if pos < c.next || pos > h.DiskSize {
				return reject("passed position %d outside [%d, %d]", pos, c.next, h.DiskSize)
			}
			op := writeOp{typ: msgPassed, pos: pos, advance: pos > c.next}
			if op.advance {
				c.next = pos
				c.progressAt = time.Now()
			}
			if err := send(op); err != nil {
				return err
			}
		case msgDone:
			body, err := readBody(c.br, control, n, maxControlLen, "done")
			if err != nil {
				return reject("read done: %w", err)
			}
			frames, err := decodePosition(body, "done")
			if err != nil {
				return reject("%w", err)
			}
			return send(writeOp{typ: msgDone, pos: frames})
		default:
			return reject("message type %q unknown after offset %d", typ, c.next)
		}
	}
}

// writeOps applies the reading goroutine's steps in order until Done, the
// end of ops, or a failure; when ctx ends it stops without writing more.
func (c *receiverConn) writeOps(ctx context.Context, ops <-chan writeOp, free chan<- *slot) error {
	h := c.hello
	var whole []byte // a partly written block read back
	partSize := blockplan.PartSize(h.BlockSize)
	for op := range ops {
		if ctx.Err() != nil {
			return nil
		}
		var err error
		switch op.typ {
		case msgData:
			if op.f.Flags&framePartial != 0 {
				if whole == nil {
					whole = make([]byte, h.BlockSize)
				}
				if err = c.writeParts(op.f, op.data, whole, partSize); err == nil {
					err = c.received(op.f, op.f.Parts.Bytes(int64(op.f.RawLength), partSize))
				}
			} else if err = c.writeBlock(op.f, op.data); err != nil {
				err = fmt.Errorf("write %s at offset %d: %w", h, op.f.Offset, err)
			} else {
				err = c.received(op.f, int64(op.f.RawLength))
			}
		case msgPassed:
			if op.advance {
				c.pos = op.pos
				c.pend++ // a position to persist even without new bytes
			}
			err = c.maybePersist(false)
		case msgDone:
			return c.done(op.pos)
		}
		if op.slot != nil {
			free <- op.slot
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// BlockWriter is a Sink that takes a whole block with its digest. The
// receiver has checked the digest over exactly these bytes (or, for a zero
// frame, that it is the digest of zeros), so the sink records it instead of
// digesting the block again.
type BlockWriter interface {
	WriteBlock(index int64, p []byte, sum digest.Sum) error
}

// writeBlock writes a whole block whose digest f.Sum the reading goroutine
// checked over data.
func (c *receiverConn) writeBlock(f frame, data []byte) error {
	if bw, ok := c.sink.(BlockWriter); ok {
		return bw.WriteBlock(f.Offset/c.hello.BlockSize, data, f.Sum)
	}
	_, err := c.sink.WriteAt(data, f.Offset)
	return err
}

// done closes a transfer whose sender counted frames: everything is
// persisted, the disk completed, and the sender told.
func (c *receiverConn) done(frames int64) error {
	h := c.hello
	if frames != c.frames {
		return reject("done: sender sent %d frames, agent received %d", frames, c.frames)
	}
	c.pos = h.DiskSize
	c.pend++
	if err := c.maybePersist(true); err != nil {
		return err
	}
	if err := c.sink.Complete(); err != nil {
		return fmt.Errorf("complete %s: %w", h, err)
	}
	c.pend = 0
	if _, err := c.bw.Write(encodeDoneReply(&c.enc, doneReply{Position: c.acked, BytesWritten: c.written, Frames: c.frames})); err != nil {
		return fmt.Errorf("send done reply: %w", err)
	}
	if err := c.bw.Flush(); err != nil {
		return fmt.Errorf("send done reply: %w", err)
	}
	return nil
}

// received records a frame written (written raw bytes of it) and persists
// when it is time.
func (c *receiverConn) received(f frame, written int64) error {
	c.sink.SetDigest(f.Offset/c.hello.BlockSize, f.Sum)
	c.pos = f.Offset + int64(f.RawLength)
	c.pend += written
	c.written += written
	c.frames++
	return c.maybePersist(false)
}

// writeParts checks a partial frame and writes it: its parts (raw, decoded),
// laid over the block the point holds so far (the previous point's, or an
// earlier attempt's), must give the source's digest of the whole block; only
// then are the parts written. A mismatch means the replica's earlier point
// and the change tracking disagree outside the changed parts (or the frame is
// corrupt): nothing is written, and the sender is told to send whole blocks.
func (c *receiverConn) writeParts(f frame, raw, whole []byte, partSize int64) error {
	h := c.hello
	length := int64(f.RawLength)
	// The block: the frame's parts, and the rest as the point holds it.
	block := whole[:length]
	type run struct{ lo, hi int64 }
	var runs [64]run // of consecutive parts in the frame
	nr := 0
	readTo := int64(0) // the point's bytes are read up to here
	readGap := func(to int64) error {
		if to <= readTo {
			return nil
		}
		if _, err := c.sink.ReadAt(block[readTo:to], f.Offset+readTo); err != nil && !(errors.Is(err, io.EOF) && f.Offset+to == h.DiskSize) {
			return fmt.Errorf("read %s at offset %d: %w", h, f.Offset+readTo, err)
		}
		return nil
	}
	at := int64(0)
	for i, n := 0, blockplan.PartCount(length, partSize); i < n; {
		if !f.Parts.Has(i) {
			i++
			continue
		}
		j := i
		for j < n && f.Parts.Has(j) {
			j++
		}
		r := run{int64(i) * partSize, min(int64(j)*partSize, length)}
		if err := readGap(r.lo); err != nil {
			return err
		}
		at += int64(copy(block[r.lo:r.hi], raw[at:]))
		runs[nr], readTo = r, r.hi
		nr++
		i = j
	}
	if err := readGap(length); err != nil {
		return err
	}
	if got := digest.Of(block); got != f.Sum {
		return &protocolError{retryable: true, differs: true, err: fmt.Errorf(
			"block at offset %d: its changed parts over the replica's block give %s, the source's block is %s: the replica's earlier point and the change tracking disagree (or the frame is corrupt); nothing of it was written, send whole blocks",
			f.Offset, got, f.Sum)}
	}
	for _, r := range runs[:nr] {
		if _, err := c.sink.WriteAt(block[r.lo:r.hi], f.Offset+r.lo); err != nil {
			return fmt.Errorf("write %s at offset %d: %w", h, f.Offset+r.lo, err)
		}
	}
	return nil
}

// check validates a data frame header before anything is read or written.
func (c *receiverConn) check(f frame, bodyLen uint32, partSize int64) error {
	h := c.hello
	partial := f.Flags&framePartial != 0
	switch {
	case f.Offset < 0 || f.Offset >= h.DiskSize:
		return reject("frame offset %d outside the disk of %d bytes", f.Offset, h.DiskSize)
	case f.Offset%h.BlockSize != 0:
		return reject("frame offset %d is not a multiple of the block size %d", f.Offset, h.BlockSize)
	case f.Offset < c.next:
		return reject("frame offset %d below the position %d (frames must ascend)", f.Offset, c.next)
	case int64(f.RawLength) != min(h.BlockSize, h.DiskSize-f.Offset):
		return reject("frame at offset %d: raw length %d, block is %d bytes", f.Offset, f.RawLength, min(h.BlockSize, h.DiskSize-f.Offset))
	case bodyLen != f.bodyLen():
		return reject("frame at offset %d: payload length %d disagrees with message length %d", f.Offset, f.PayloadLen, bodyLen)
	case f.PayloadLen > f.RawLength:
		return reject("frame at offset %d: payload of %d bytes for %d raw bytes", f.Offset, f.PayloadLen, f.RawLength)
	case f.Flags&^(frameZero|framePartial) != 0 || (partial && h.Version < 2):
		return reject("frame at offset %d: unknown flags %#x", f.Offset, f.Flags)
	case partial && f.Flags&frameZero != 0:
		return reject("frame at offset %d: a zero frame cannot be partial", f.Offset)
	case partial && (f.Parts == 0 || f.Parts&^blockplan.AllParts(int64(f.RawLength), partSize) != 0):
		return reject("partial frame at offset %d: parts %#x are not parts of a block of %d bytes (%d-byte parts)", f.Offset, uint64(f.Parts), f.RawLength, partSize)
	case partial && int64(f.PayloadLen) > f.Parts.Bytes(int64(f.RawLength), partSize):
		return reject("partial frame at offset %d: payload of %d bytes for %d bytes of parts", f.Offset, f.PayloadLen, f.Parts.Bytes(int64(f.RawLength), partSize))
	case f.Codec != codec.TagNone && f.Codec != codec.TagS2 && f.Codec != codec.TagZstd:
		return reject("frame at offset %d: codec tag %d unknown", f.Offset, f.Codec)
	case f.Flags&frameZero != 0 && (f.PayloadLen != 0 || f.Codec != codec.TagNone):
		return reject("zero frame at offset %d carries a payload", f.Offset)
	}
	return nil
}

// maybePersist persists and acknowledges when enough bytes or time passed,
// or always when force is set.
func (c *receiverConn) maybePersist(force bool) error {
	if c.pend == 0 || (!force && c.pend < c.r.opts.PersistBytes && time.Since(c.last) < c.r.opts.PersistInterval) {
		return nil
	}
	if err := c.sink.Persist(c.pos); err != nil {
		return fmt.Errorf("persist %s at position %d: %w", c.hello, c.pos, err)
	}
	c.acked, c.pend, c.last = c.pos, 0, time.Now()
	if force {
		return nil // the done reply carries the position
	}
	c.raw.SetWriteDeadline(time.Now().Add(c.r.opts.IdleTimeout))
	if _, err := c.bw.Write(encodeAck(&c.enc, c.acked, c.written)); err != nil {
		return fmt.Errorf("send ack %d: %w", c.acked, err)
	}
	if err := c.bw.Flush(); err != nil {
		return fmt.Errorf("send ack %d: %w", c.acked, err)
	}
	return nil
}

// sendError tells the sender why the stream ends, then lets it read that
// before the connection closes.
func (c *receiverConn) sendError(flags uint8, msg string) {
	c.raw.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.bw.Write(encodeError(&c.enc, flags, msg)); err != nil {
		return
	}
	if c.bw.Flush() != nil {
		return
	}
	c.conn.CloseWrite()
	c.raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.Copy(io.Discard, io.LimitReader(c.raw, 256<<20))
}
