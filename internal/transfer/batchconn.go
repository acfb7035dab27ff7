package transfer

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"
)

// crypto/tls writes every record of at most 16 KiB with its own write on the
// connection beneath it and reads the records one at a time, so a block of
// 1 MiB costs 64 socket writes on the sender and as many reads on the
// agent, each with the work of the TCP stack around it (segments,
// acknowledgements, wake-ups): on loopback and fast links that costs about
// as much CPU as the encryption itself. The two types below sit between
// tls.Conn and the socket so that the records of one large write leave in a
// few socket writes, and the agent takes what has arrived in few reads.
// They change nothing of what goes on the wire.

// batchWriteBytes is how much the sender gathers before a socket write:
// sixteen full records and their overhead.
const batchWriteBytes = 16 * (16<<10 + 256)

// recordBatcher is the socket under a tls.Conn. Once gathering (after the
// handshake) it keeps the records TLS writes and sends them in writes of
// batchWriteBytes, and what is left when told to flush; before that, as
// during the handshake, it writes through at once.
type recordBatcher struct {
	net.Conn
	mu     sync.Mutex
	gather bool
	buf    []byte
	err    error // the first failed socket write: later writes fail alike
	// writing is set while a socket write is under way (see batchedTLS.Close).
	writing atomic.Bool
}

func (b *recordBatcher) write(p []byte) (int, error) {
	b.writing.Store(true)
	defer b.writing.Store(false)
	return b.Conn.Write(p)
}

func (b *recordBatcher) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return 0, b.err
	}
	if !b.gather {
		return b.write(p)
	}
	if len(b.buf)+len(p) > cap(b.buf) {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) > cap(b.buf) {
			return b.write(p)
		}
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func (b *recordBatcher) flushLocked() error {
	if b.err != nil {
		return b.err
	}
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.write(b.buf)
	b.buf = b.buf[:0]
	if err != nil {
		b.err = err
	}
	return err
}

// Flush sends the records gathered so far.
func (b *recordBatcher) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flushLocked()
}

// Close sends what is gathered (TLS's closing alert among it), unless a
// socket write is blocked, then closes.
func (b *recordBatcher) Close() error {
	if b.mu.TryLock() {
		b.flushLocked()
		b.gather = false
		b.mu.Unlock()
	}
	return b.Conn.Close()
}

// batchedTLS is a tls.Conn whose records are gathered into few socket
// writes: what Write wrote is certain to be on its way only after Flush.
// The sender flushes whenever it would otherwise wait (for the next block,
// for the agent's answer) and at the end, as it flushes its bufio.Writer.
type batchedTLS struct {
	*tls.Conn
	raw *recordBatcher
}

// dialBatchedTLS runs the client handshake over raw, then gathers records.
func dialBatchedTLS(ctx context.Context, raw net.Conn, cfg *tls.Config) (*batchedTLS, error) {
	b := &recordBatcher{Conn: raw}
	c := &batchedTLS{Conn: tls.Client(b, cfg), raw: b}
	if err := c.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	b.mu.Lock()
	b.buf = make([]byte, 0, batchWriteBytes)
	b.gather = true
	b.mu.Unlock()
	return c, nil
}

// Flush sends every record written so far.
func (c *batchedTLS) Flush() error { return c.raw.Flush() }

// Close closes the connection. A socket write blocked on a peer that takes
// nothing is ended first by closing the socket, as tls.Conn.Close does for
// a Write in flight (a Flush is not one, and TLS would otherwise wait for it
// to send its closing alert).
func (c *batchedTLS) Close() error {
	if c.raw.writing.Load() {
		c.raw.Conn.Close()
	}
	return c.Conn.Close()
}

// flushConn flushes a connection that gathers what is written (batchedTLS);
// any other connection sends at once and has nothing to flush.
func flushConn(c net.Conn) error {
	if f, ok := c.(interface{ Flush() error }); ok {
		return f.Flush()
	}
	return nil
}

// readBatcher is the socket under the agent's tls.Conn. tls.Conn asks the
// socket for about one record at a time; once buffered (after the sender
// has been admitted: a connection still in its handshake holds no buffer) a
// read takes whatever has arrived, up to the buffer's size, and TLS is
// served from it.
type readBatcher struct {
	net.Conn
	br *bufio.Reader // nil until buffered
}

func (r *readBatcher) Read(p []byte) (int, error) {
	if r.br == nil {
		return r.Conn.Read(p)
	}
	return r.br.Read(p)
}

// buffer makes the reads go through a buffer of size bytes. It is called by
// the goroutine that reads the connection, between two reads.
func (r *readBatcher) buffer(size int) {
	if r.br == nil {
		r.br = bufio.NewReaderSize(r.Conn, size)
	}
}
