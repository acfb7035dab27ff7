package transfer

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"
)

// A probe asks an agent whether its data channel works for this sender
// before any checkpoint is taken: TCP, the mutual TLS handshake, then a ping
// that the agent answers without opening anything ('Q' with the magic and
// the sender's version; 'O' with the magic and the agent's version).
const (
	msgPing = 'Q'
	msgPong = 'O'
)

// ProbeFault says which part of the data channel failed a probe.
type ProbeFault int

const (
	// FaultUnreachable: no TCP connection (nothing listens, no route, timeout, unknown host).
	FaultUnreachable ProbeFault = iota + 1
	// FaultNotAgent: something answered that does not speak TLS or this protocol.
	FaultNotAgent
	// FaultUntrustedAgent: the agent's certificate is not signed by the CA
	// the sender trusts, or not for the address's name.
	FaultUntrustedAgent
	// FaultRefusedSender: the agent refused the sender's certificate.
	FaultRefusedSender
)

// ProbeError is why a probe failed.
type ProbeError struct {
	Fault   ProbeFault
	Address string
	// Refused is set when the connection was refused: nothing listens there.
	Refused bool
	Err     error
}

func (e *ProbeError) Error() string { return fmt.Sprintf("data channel %s: %v", e.Address, e.Err) }
func (e *ProbeError) Unwrap() error { return e.Err }

// Probe opens the data channel at address like a transfer would and pings
// the agent. It returns the agent's protocol version.
func Probe(ctx context.Context, address string, cfg *tls.Config, timeout time.Duration) (int, error) {
	if cfg == nil {
		return 0, errors.New("probe: no TLS configuration")
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	d := net.Dialer{}
	raw, err := d.DialContext(ctx, "tcp", address)
	if err != nil {
		return 0, &ProbeError{Fault: FaultUnreachable, Address: address, Refused: errors.Is(err, syscall.ECONNREFUSED), Err: err}
	}
	defer raw.Close()
	if dl, ok := ctx.Deadline(); ok {
		raw.SetDeadline(dl)
	}
	c := cfg.Clone()
	c.MinVersion = tls.VersionTLS13
	if c.ServerName == "" {
		if host, _, err := net.SplitHostPort(address); err == nil {
			c.ServerName = host
		}
	}
	conn := tls.Client(raw, c)
	if err := conn.HandshakeContext(ctx); err != nil {
		return 0, &ProbeError{Fault: handshakeFault(err), Address: address, Err: err}
	}
	var e encoder
	e.begin(msgPing)
	e.str(Magic)
	e.u16(Version)
	if _, err := conn.Write(e.finish()); err != nil {
		return 0, &ProbeError{Fault: handshakeFault(err), Address: address, Err: err}
	}
	// In TLS 1.3 the agent checks the sender's certificate after the
	// client's handshake is done: a refusal arrives as an alert here.
	br := bufio.NewReaderSize(conn, 512)
	typ, n, err := readHeader(br)
	if err != nil {
		return 0, &ProbeError{Fault: handshakeFault(err), Address: address, Err: err}
	}
	body, err := readBody(br, nil, n, maxControlLen, "pong")
	if err != nil {
		return 0, &ProbeError{Fault: FaultNotAgent, Address: address, Err: err}
	}
	if typ == msgError {
		_, msg, derr := decodeError(body)
		if derr != nil {
			msg = derr.Error()
		}
		return 0, &ProbeError{Fault: FaultNotAgent, Address: address, Err: fmt.Errorf("the agent answered the ping with an error: %s (an agent older than this proxy?)", msg)}
	}
	if typ != msgPong {
		return 0, &ProbeError{Fault: FaultNotAgent, Address: address, Err: fmt.Errorf("answer %q to a ping, want %q", typ, msgPong)}
	}
	d2 := decoder{b: body}
	if m := d2.str(); d2.err != nil || m != Magic {
		return 0, &ProbeError{Fault: FaultNotAgent, Address: address, Err: fmt.Errorf("pong without the protocol's magic")}
	}
	v := d2.u16()
	if d2.err != nil {
		return 0, &ProbeError{Fault: FaultNotAgent, Address: address, Err: d2.err}
	}
	return int(v), nil
}

// handshakeFault tells an untrusted agent, a refused sender and a peer that
// is no agent apart.
func handshakeFault(err error) ProbeFault {
	var verify *tls.CertificateVerificationError
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	if errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &host) || errors.As(err, &invalid) {
		return FaultUntrustedAgent
	}
	// crypto/tls reports an alert from the peer as a net.OpError with Op
	// "remote error": the agent refused what the sender presented.
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" {
		return FaultRefusedSender
	}
	return FaultNotAgent
}

// pong answers a ping: the magic and this agent's version.
func (c *receiverConn) pong(body []byte) error {
	d := decoder{b: body}
	if m := d.str(); d.err != nil || m != Magic {
		return reject("ping: magic %q, want %q (not a replicator client?)", m, Magic)
	}
	var e encoder
	e.begin(msgPong)
	e.str(Magic)
	e.u16(Version)
	if _, err := c.bw.Write(e.finish()); err != nil {
		return err
	}
	return c.bw.Flush()
}
