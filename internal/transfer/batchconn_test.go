package transfer

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"math/rand/v2"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/replicator/replicator/internal/pki"
)

// countingConn counts the socket writes made through it.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// tlsPair dials a batched TLS client to a TLS server over loopback, both
// with mutual TLS as the data channel has it, and returns the client, its
// counted socket and the server's connection.
func tlsPair(t *testing.T) (*batchedTLS, *countingConn, *tls.Conn) {
	t.Helper()
	files, err := pki.EnsureDev(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	serverConf, err := files.ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	clientConf, err := files.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	serverConf.ClientAuth = tls.RequireAndVerifyClientCert
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan *tls.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		s := tls.Server(c, serverConf)
		if s.Handshake() != nil {
			c.Close()
			accepted <- nil
			return
		}
		accepted <- s
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	counted := &countingConn{Conn: raw}
	clientConf.ServerName = "127.0.0.1"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, err := dialBatchedTLS(ctx, counted, clientConf)
	if err != nil {
		t.Fatal(err)
	}
	server := <-accepted
	if server == nil {
		t.Fatal("server handshake failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, counted, server
}

// The records of large writes leave in few socket writes, and the peer
// reads exactly the bytes written, in order, once they are flushed.
func TestBatchedTLSGathersRecords(t *testing.T) {
	client, counted, server := tlsPair(t)
	rng := rand.New(rand.NewPCG(19, 1))
	sizes := []int{1, 100, 20 << 10, 1<<20 + 3, 7, 300 << 10}
	var want []byte
	for _, n := range sizes {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
		want = append(want, p...)
	}
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, len(want))
		n, _ := io.ReadFull(server, b)
		got <- b[:n]
	}()
	before := counted.writes.Load()
	at := 0
	for _, n := range sizes {
		if _, err := client.Write(want[at : at+n]); err != nil {
			t.Fatal(err)
		}
		at += n
	}
	if err := client.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		if !bytes.Equal(b, want) {
			t.Fatalf("the peer read %d bytes that differ from the %d written", len(b), len(want))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the peer did not receive what was flushed")
	}
	records := len(want)/(16<<10) + 6
	writes := counted.writes.Load() - before
	if writes > int64(records/8) {
		t.Fatalf("%d socket writes for %d TLS records: records are not gathered", writes, records)
	}
}

// Closing the connection ends a flush blocked on a peer that reads nothing,
// at once, as closing a tls.Conn ends a Write in flight.
func TestBatchedTLSCloseEndsBlockedFlush(t *testing.T) {
	client, _, _ := tlsPair(t)
	block := make([]byte, 1<<20)
	failed := make(chan error, 1)
	go func() {
		for {
			if _, err := client.Write(block); err != nil {
				failed <- err
				return
			}
			if err := client.Flush(); err != nil {
				failed <- err
				return
			}
		}
	}()
	// Let the socket buffers fill: the writer is then blocked.
	time.Sleep(500 * time.Millisecond)
	select {
	case err := <-failed:
		t.Fatalf("writing failed before the close: %v", err)
	default:
	}
	start := time.Now()
	closed := make(chan struct{})
	go func() { client.Close(); close(closed) }()
	select {
	case <-failed:
	case <-time.After(3 * time.Second):
		t.Fatal("a blocked write was not ended by Close within 3 s")
	}
	select {
	case <-closed:
	case <-time.After(3 * time.Second):
		t.Fatal("Close did not return within 3 s")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Close took %s", d)
	}
}
