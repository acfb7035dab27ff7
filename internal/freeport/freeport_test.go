package freeport

import (
	"net"
	"strconv"
	"testing"
)

// TestPortIsBelowTheEphemeralRangeAndBindable: the port can be bound, and it
// is one the kernel never gives an outgoing connection on its own.
func TestPortIsBelowTheEphemeralRangeAndBindable(t *testing.T) {
	top := ephemeralStart()
	for range 50 {
		port, err := Port("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		if port < lowest || port >= top {
			t.Fatalf("port %d outside [%d, %d)", port, lowest, top)
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			t.Fatalf("port %d was given as free but cannot be bound: %v", port, err)
		}
		ln.Close()
	}
}

// TestOutgoingConnectionsDoNotTakeThePort: a port from Port is not the
// source port of the connections the process then makes (here, 300 of them,
// the kind of burst a starting Temporal server makes).
func TestOutgoingConnectionsDoNotTakeThePort(t *testing.T) {
	srv, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		for {
			c, err := srv.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	top := ephemeralStart()
	for range 300 {
		c, err := net.Dial("tcp", srv.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		p := c.LocalAddr().(*net.TCPAddr).Port
		c.Close()
		if p < top {
			t.Fatalf("an outgoing connection took source port %d, below the ephemeral range start %d that Port relies on", p, top)
		}
	}
}
