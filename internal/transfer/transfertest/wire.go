package transfertest

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/replicator/replicator/internal/digest"
	"github.com/replicator/replicator/internal/transfer"
)

// The data channel's wire format written by hand from the protocol's
// description (internal/transfer/doc.go), for tests that send what the
// product's sender never would: message = type u8, body length u32 big
// endian, body.

// Msg is one message of type typ.
func Msg(typ byte, body []byte) []byte {
	b := append([]byte{typ}, binary.BigEndian.AppendUint32(nil, uint32(len(body)))...)
	return append(b, body...)
}

// AppendStr appends s as the protocol writes strings: length u16, bytes.
func AppendStr(b []byte, s string) []byte {
	return append(binary.BigEndian.AppendUint16(b, uint16(len(s))), s...)
}

// Hello is the body of a Hello 'H': magic "RPLC", version u16, flags u8,
// disk size i64, block size i64, job, VM, disk and checkpoint names, and
// (version 3 on) the session token. Magic and Version are what is sent only
// where OverrideMagic and OverrideVersion say so; otherwise "RPLC" and 3.
type Hello struct {
	Magic                          string
	Version                        uint16
	OverrideMagic, OverrideVersion bool
	Flags                          uint8
	DiskSize, BlockSize            int64
	Job, VM, Disk, Checkpoint      string
	Token                          string
}

// Encode is the whole message.
func (h Hello) Encode() []byte {
	magic, version := "RPLC", uint16(3)
	if h.OverrideMagic {
		magic = h.Magic
	}
	if h.OverrideVersion {
		version = h.Version
	}
	b := append([]byte(magic), binary.BigEndian.AppendUint16(nil, version)...)
	b = append(b, h.Flags)
	b = binary.BigEndian.AppendUint64(b, uint64(h.DiskSize))
	b = binary.BigEndian.AppendUint64(b, uint64(h.BlockSize))
	for _, s := range []string{h.Job, h.VM, h.Disk, h.Checkpoint} {
		b = AppendStr(b, s)
	}
	if version >= 3 {
		b = AppendStr(b, h.Token)
	}
	return Msg('H', b)
}

// Frame is a data frame 'D': offset i64, raw length u32, codec u8, flags u8,
// payload length u32, XXH3-128 of the raw block, payload.
type Frame struct {
	Offset     int64
	RawLen     uint32
	Codec      uint8
	Flags      uint8
	PayloadLen uint32
	Sum        digest.Sum
	Payload    []byte
	BodyLen    uint32 // when not 0, the message length declared instead of the real one
}

// Encode is the whole message.
func (f Frame) Encode() []byte {
	b := binary.BigEndian.AppendUint64(nil, uint64(f.Offset))
	b = binary.BigEndian.AppendUint32(b, f.RawLen)
	b = append(b, f.Codec, f.Flags)
	b = binary.BigEndian.AppendUint32(b, f.PayloadLen)
	b = append(b, f.Sum[:]...)
	b = append(b, f.Payload...)
	m := Msg('D', b)
	if f.BodyLen != 0 {
		binary.BigEndian.PutUint32(m[1:5], f.BodyLen)
	}
	return m
}

// Conn is one hand-written client connection to an agent.
type Conn struct {
	net.Conn
	R *bufio.Reader
}

// Dial connects to the agent at addr with conf.
func Dial(t testing.TB, addr string, conf *tls.Config) *Conn {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, conf)
	if err != nil {
		t.Fatalf("dial the agent: %v", err)
	}
	return &Conn{Conn: conn, R: bufio.NewReader(conn)}
}

// Read reads one message, waiting at most 15 seconds; bodies over 1 MiB are
// refused before they are read.
func (c *Conn) Read() (byte, []byte, error) {
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	var h [5]byte
	if _, err := io.ReadFull(c.R, h[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(h[1:])
	if n > 1<<20 {
		return 0, nil, fmt.Errorf("message %q of %d bytes", h[0], n)
	}
	body := make([]byte, n)
	_, err := io.ReadFull(c.R, body)
	return h[0], body, err
}

// HelloReply reads the agent's 'R' and returns its resume position, or -1
// and the message of an 'E' the agent sent instead.
func (c *Conn) HelloReply(t testing.TB) (resume int64, refusal string) {
	t.Helper()
	typ, body, err := c.Read()
	if err != nil {
		t.Fatalf("no reply to hello: %v", err)
	}
	switch typ {
	case 'R':
		if len(body) < 8 {
			t.Fatalf("hello reply of %d bytes", len(body))
		}
		return int64(binary.BigEndian.Uint64(body)), ""
	case 'E':
		return -1, ErrorText(t, body)
	}
	t.Fatalf("reply to hello is %q", typ)
	return 0, ""
}

// AgentError reads until the agent's 'E' and returns its message; only
// replies, acknowledgements and digests may come before it.
func (c *Conn) AgentError(t testing.TB) string {
	t.Helper()
	for {
		typ, body, err := c.Read()
		if err != nil {
			t.Fatalf("the agent ended the stream without an error message: %v", err)
		}
		if typ == 'E' {
			return ErrorText(t, body)
		}
		if typ != 'R' && typ != 'A' && typ != 'S' {
			t.Fatalf("unexpected message %q before the error", typ)
		}
	}
}

// ErrorText is the message of an error body: flags u8, length u16, text.
func ErrorText(t testing.TB, body []byte) string {
	t.Helper()
	if len(body) < 3 || int(binary.BigEndian.Uint16(body[1:]))+3 != len(body) {
		t.Fatalf("malformed error message %x", body)
	}
	return string(body[3:])
}

// Serve runs recv on ln until the test ends, and fails the test if serving
// ended with an error.
func Serve(t testing.TB, recv *transfer.Receiver, ln net.Listener) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- recv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve the data channel: %v", err)
		}
	})
}
