package activities

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/replicator/replicator/internal/blockplan"
	"github.com/replicator/replicator/internal/codec"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/disk"
	"github.com/replicator/replicator/internal/replica"
	"github.com/replicator/replicator/internal/transfer"
	"github.com/replicator/replicator/internal/vhdx"
)

// tokenBytes is the size of a failback channel's token (64 hex characters).
const tokenBytes = 32

// failbackConnWait is how long the agent's sender waits for the proxy to
// connect (first, or again after a broken connection).
const failbackConnWait = 2 * time.Minute

// failbackPending bounds the connections of one channel in their handshake
// or token at once; more are closed at once.
const failbackPending = 8

func validToken(s string) bool {
	if len(s) != 2*tokenBytes {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// failbackChannels are the open failback channels of an agent, by operation.
type failbackChannels struct {
	mu   sync.Mutex
	open map[string]*failbackChannel
}

// failbackChannel is one failback's listener in the agent and the sender
// that writes the change set onto the connections the proxy opens to it.
type failbackChannel struct {
	addr, token string
	ln          net.Listener
	tls         *tls.Config
	log         *slog.Logger
	conns       chan net.Conn
	cancel      context.CancelFunc
	pending     chan struct{}
	// done is closed when the sender ended; res and err are then final.
	done chan struct{}
	res  contract.FailbackResult
	err  error
}

// OpenFailbackChannel opens the channel through which the replica VM's
// change set goes back: a listener on the data channel's interface (port
// chosen by the system) that the proxy connects to with its certificate and
// the returned token. The change set is exactly what differs between the
// replica VM and the newest restore point (what the source holds): the
// blocks its failover children hold, and those of the points newer than the
// one it failed over to (every allocated block with in.Whole, for a new VM).
// No disk is scanned: the VHDX files say what they hold. The compression is
// the job's configured one. Opening it again for the same operation returns
// the same channel.
func (t *Target) OpenFailbackChannel(ctx context.Context, in contract.OpenFailbackInput) (contract.FailbackChannel, error) {
	if _, err := t.targetJob(in.Job); err != nil {
		return contract.FailbackChannel{}, err
	}
	_, job, spec, err := configuredJob(t.Config, in.Job)
	if err != nil {
		return contract.FailbackChannel{}, err
	}
	if err := transfer.ValidName("vm", in.VMID); err != nil {
		return contract.FailbackChannel{}, nonRetryable(contract.ErrTypeBadInput, err)
	}
	op, err := t.beginOp(in.ReplicaOpActivityInput, opFailback)
	if err != nil {
		return contract.FailbackChannel{}, err
	}
	info, l := op.info, op.lifecycle
	if l.State != replica.StateFailover { // in failback, even by this operation
		return contract.FailbackChannel{}, op.refused(l)
	}
	if t.ServerTLS == nil {
		return contract.FailbackChannel{}, nonRetryable(contract.ErrTypeBadConfig, errors.New("the agent has no data channel certificate for the failback channel (tls)"))
	}
	level, err := codec.ParseLevel(job.Compression)
	if err != nil {
		return contract.FailbackChannel{}, nonRetryable(contract.ErrTypeBadConfig, err)
	}
	targetHost, _, err := net.SplitHostPort(spec.TargetAddress)
	if err != nil {
		return contract.FailbackChannel{}, nonRetryable(contract.ErrTypeBadConfig, fmt.Errorf("job %q target address %q: %w", in.Job, spec.TargetAddress, err))
	}

	t.failback.mu.Lock()
	defer t.failback.mu.Unlock()
	if c, ok := t.failback.open[in.Operation]; ok {
		return contract.FailbackChannel{Address: c.addr, Token: c.token}, nil
	}
	listenHost, _, _ := net.SplitHostPort(t.Listen)
	ln, err := net.Listen("tcp", net.JoinHostPort(listenHost, "0"))
	if err != nil {
		return contract.FailbackChannel{}, fmt.Errorf("failback channel: %w", err)
	}
	var raw [tokenBytes]byte
	if _, err := rand.Read(raw[:]); err != nil {
		ln.Close()
		return contract.FailbackChannel{}, err
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c := &failbackChannel{addr: net.JoinHostPort(targetHost, port), token: hex.EncodeToString(raw[:]), ln: ln,
		tls: t.ServerTLS, log: t.logger().With("failback", in.Operation), conns: make(chan net.Conn),
		cancel: cancel, pending: make(chan struct{}, failbackPending), done: make(chan struct{})}
	go c.accept(cctx)
	send := func(ctx context.Context) (contract.FailbackResult, error) {
		return t.sendFailback(ctx, in, l, info, level, c)
	}
	go func() {
		defer close(c.done)
		c.res, c.err = send(cctx)
	}()
	if t.failback.open == nil {
		t.failback.open = map[string]*failbackChannel{}
	}
	t.failback.open[in.Operation] = c
	return contract.FailbackChannel{Address: c.addr, Token: c.token}, nil
}

// CloseFailbackChannel ends the operation's channel and returns what its
// sender did: the result once every disk was sent, its error otherwise. A
// channel that ended early, or that this agent does not know (it
// restarted), is a FailbackInterrupted error: a retry of this activity could
// not change it, the workflow opens a new channel.
func (t *Target) CloseFailbackChannel(ctx context.Context, in contract.FailbackChannelInput) (contract.FailbackResult, error) {
	if err := checkOperation(in.Operation); err != nil {
		return contract.FailbackResult{}, err
	}
	t.failback.mu.Lock()
	c, ok := t.failback.open[in.Operation]
	delete(t.failback.open, in.Operation)
	t.failback.mu.Unlock()
	if !ok {
		return contract.FailbackResult{}, nonRetryable(contract.ErrTypeFailbackInterrupted,
			fmt.Errorf("failback channel %s is not open on this agent (it restarted?)", in.Operation))
	}
	ended := true
	select {
	case <-c.done:
	default:
		ended = false // the proxy gave up before the sender ended: stop it
	}
	c.cancel()
	c.ln.Close()
	<-c.done
	switch {
	case c.err == nil:
		return c.res, nil
	case !ended:
		// The workflow opens a new channel and sends again.
		return c.res, nonRetryable(contract.ErrTypeFailbackInterrupted,
			fmt.Errorf("the failback channel was closed before the change set was sent: %v", c.err))
	default:
		return c.res, classify(c.err)
	}
}

// accept admits the proxy's connections: TLS with the agent's data channel
// configuration (the peer must be a proxy), then the channel's token. An
// admitted connection goes to the sender; once the sender has ended, it is
// told the outcome.
func (c *failbackChannel) accept(ctx context.Context) {
	stop := context.AfterFunc(ctx, func() { c.ln.Close() })
	defer stop()
	for {
		raw, err := c.ln.Accept()
		if err != nil {
			return
		}
		select {
		case c.pending <- struct{}{}:
		default:
			raw.Close() // too many unfinished handshakes: a flood, not the proxy
			continue
		}
		go func() {
			conn, err := c.admit(ctx, raw)
			<-c.pending
			if err != nil {
				c.log.Warn("failback channel: connection refused", "remote", raw.RemoteAddr().String(), "err", err)
				raw.Close()
				return
			}
			select {
			case c.conns <- conn:
			case <-c.done:
				c.tellOutcome(conn)
			case <-ctx.Done():
				conn.Close()
			}
		}()
	}
}

func (c *failbackChannel) admit(ctx context.Context, raw net.Conn) (*tls.Conn, error) {
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	conn := tls.Server(raw, c.tls)
	if err := conn.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	got := make([]byte, 2*tokenBytes)
	if _, err := io.ReadFull(conn, got); err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	if subtle.ConstantTimeCompare(got, []byte(c.token)) != 1 {
		return nil, errors.New("wrong token")
	}
	raw.SetDeadline(time.Time{})
	return conn, nil
}

// tellOutcome answers a connection that came after the sender ended.
func (c *failbackChannel) tellOutcome(conn net.Conn) {
	defer conn.Close()
	conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if c.err == nil {
		conn.Write([]byte{failbackFinished})
		return
	}
	msg := c.err.Error()
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	b := []byte{failbackFailed, 0, 0}
	binary.BigEndian.PutUint16(b[1:], uint16(len(msg)))
	conn.Write(append(b, msg...))
}

// next is the sender's connection: the next one the proxy opened.
func (c *failbackChannel) next(ctx context.Context) (net.Conn, error) {
	timer := time.NewTimer(failbackConnWait)
	defer timer.Stop()
	select {
	case conn := <-c.conns:
		conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write([]byte{failbackDisk}); err != nil {
			conn.Close()
			return nil, err
		}
		conn.SetWriteDeadline(time.Time{})
		return conn, nil
	case <-timer.C:
		return nil, fmt.Errorf("no proxy connected to the failback channel within %v", failbackConnWait)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// sendFailback sends the change set of every disk of the replica VM.
func (t *Target) sendFailback(ctx context.Context, in contract.OpenFailbackInput, l replica.Lifecycle, info replica.VMInfo, level codec.Level, c *failbackChannel) (contract.FailbackResult, error) {
	res := contract.FailbackResult{Replica: contract.ReplicaOpResult{Job: in.Job, VM: info.Name, VMID: info.ID}}
	r, _, err := t.findReplica(in.Job, in.VM)
	if err != nil {
		return res, err
	}
	vm, err := t.Host.ReplicaVM(ctx, l.ReplicaVM)
	if err != nil {
		return res, classify(err)
	}
	pts, err := r.Points()
	if err != nil {
		return res, classify(err)
	}
	var newer []replica.Point
	for i, p := range pts {
		if p.ID == l.Point {
			newer = pts[i+1:]
		}
	}
	sender := &transfer.Sender{Conn: c.next}
	for _, d := range vm.Disks {
		img, err := vhdx.Open(d.Path)
		if err != nil {
			return res, fmt.Errorf("failback: replica VM disk %s: %w", d.Path, err)
		}
		changed := img.OwnAllocated()
		if in.Whole {
			changed = img.Allocated()
			newer = nil
		}
		for _, p := range newer {
			for _, pd := range p.Disks {
				if pd.ID != d.ID {
					continue
				}
				own, err := ownAllocated(pd.File)
				if err != nil {
					img.Close()
					return res, err
				}
				changed = append(changed, own...)
			}
		}
		changed = disk.Merge(changed, img.Size())
		dr := contract.DiskResult{ID: d.ID, Size: img.Size(), ChangeTracking: "failback"}
		for _, e := range changed {
			res.BytesChanged += e.Length
		}
		plan := blockplan.Changed(img.Size(), failbackBlockSize, changed)
		tr, err := sender.SendDiskWithRetry(ctx, img, plan, nil, transfer.SendOptions{
			Job: in.Job, VMID: in.VMID, DiskID: d.ID, CheckpointID: failbackCheckpoint, Token: c.token,
			BlockSize: failbackBlockSize, Compression: level, WholeBlocks: true, ZeroBlocksAsData: true,
		}, nil, transfer.RetryPolicy{Attempts: 3})
		img.Close()
		dr = diskResult(dr, tr)
		res.BytesSent += tr.BytesSent
		res.BytesWritten += tr.BytesWritten
		if err != nil {
			dr.Status, dr.Error = contract.StatusFailed, err.Error()
			res.Disks = append(res.Disks, dr)
			return res, fmt.Errorf("failback of disk %s: %w", d.ID, err)
		}
		dr.Status = contract.StatusSuccess
		res.Disks = append(res.Disks, dr)
	}
	return res, nil
}

func (t *Target) logger() *slog.Logger {
	if t.Logger != nil {
		return t.Logger
	}
	return slog.Default()
}

// checkOperation bounds the operation id a workflow passes (workflow id and
// run id, and an attempt number).
func checkOperation(op string) error {
	if op == "" || len(op) > 1024 {
		return nonRetryable(contract.ErrTypeBadInput, fmt.Errorf("operation id: %d bytes, want 1 to 1024", len(op)))
	}
	return nil
}
